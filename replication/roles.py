"""Database roles of a writer, and how their passwords reach PostgreSQL without any SQL text.

Three login roles besides the RDS master user (which only the bootstrap uses):

- ``fraiseql_app`` (the FraiseQL service): DML on the application's tables, nothing it owns, no
  write to the lease, the agent's state or the heartbeats; it cannot disable triggers (it owns no
  table), set ``session_replication_role`` (superuser only) or touch subscriptions.
- ``fraiseql_agent`` (the fence agent): reads its heartbeats and subscription health, renews or
  revokes the lease, records its state, and runs the agent's maintenance functions if they exist.
- ``fraiseql_repl`` (peers' subscriptions): replication and SELECT on what is published.

Secrets travel as connection startup options, which PostgreSQL never logs, and DO blocks read them
with ``current_setting``. So neither ``log_statement`` nor ``log_min_duration_statement`` nor an
error's STATEMENT/CONTEXT lines can carry one: statements that use a secret catch their own errors
and re-raise without it. A role's password reaches the server only as its SCRAM-SHA-256 verifier,
computed here (``fraiseql_repl.verifier_<role>``): the ``CREATE/ALTER ROLE`` that a DO block runs
holds no password, so no statistics view (``pg_stat_statements.track = all`` records statements run
inside DO blocks) can show one. The one cleartext that must reach the server is the replication
role's, for the subscriptions' connection strings (``fraiseql_repl.pw_<role>``); the subscription
statements refuse to run where a statistics view or log would record them
(``replication.sql.render_subscriptions``). Every statement is idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping

from replication.model import ConflictPolicy
from replication.sql import CONTROL_TABLES, HEARTBEAT_TABLE, SCHEMA, _ident, _lit, _published

__all__ = ["AGENT_FUNCTIONS", "AGENT_ROLE", "APP_ROLE", "REPL_ROLE", "render_agent_grants", "render_app_grants",
           "render_login_role", "render_replication_grants", "render_roles", "scram_verifier", "secret_options", "secret_setting",
           "verifier_setting"]

APP_ROLE = "fraiseql_app"
AGENT_ROLE = "fraiseql_agent"
REPL_ROLE = "fraiseql_repl"
#: Functions the agent calls (SECURITY DEFINER: they run with the owner's rights, so the agent needs
#: nothing on the tables they touch); nobody else may run them. Missing ones are skipped.
AGENT_FUNCTIONS = ("set_lease", "lease_valid_until", "end_writes", "replication_lag", "evict_loop_squatters",
                   "evict_bucket_squatters", "emit_watermark", "purge_tombstones", "purge_changes", "retry_parked",
                   "compact_resolutions", "publish_digests", "publish_key_details", "diverged_count", "purge_digests",
                   "guard_problem")
AGENT_TABLES_READ = ("parked",)


def secret_setting(role: str) -> str:
    """The session setting that carries ``role``'s cleartext password (placeholder GUCs need a dotted name)."""
    return f"{SCHEMA}.pw_{role}"


def verifier_setting(role: str) -> str:
    """The session setting that carries ``role``'s SCRAM verifier."""
    return f"{SCHEMA}.verifier_{role}"


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802 and 7677, as ``libpq``'s
    ``PQencryptPasswordConn`` computes it). It lets the server check a password, not log in with one.

    Passwords are ASCII (Secrets Manager generates them so): SASLprep leaves ASCII unchanged, and a
    password outside it is refused rather than normalized differently from the server.
    """
    if not password.isascii():
        raise ValueError("role passwords must be ASCII (SASLprep of other characters is not implemented here)")
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def secret_options(passwords: Mapping[str, str], *, cleartext: Iterable[str] = ()) -> str:
    """libpq ``options`` that bind each role's SCRAM verifier to the session, never to SQL text, and
    the cleartext password of the roles in ``cleartext`` (the replication role, whose password the
    subscriptions' connection strings need)."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(" ", "\\ ")

    plain = set(cleartext)
    out = [f"-c {verifier_setting(role)}={esc(scram_verifier(pw))}" for role, pw in sorted(passwords.items())]
    out += [f"-c {secret_setting(role)}={esc(pw)}" for role, pw in sorted(passwords.items()) if role in plain]
    return " ".join(out)


def render_login_role(role: str, *, replication: bool = False) -> list[str]:
    """Create the login role or reset its password to the one bound in the session."""
    setting = _lit(verifier_setting(role))
    grant_replication = (
        "    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication') THEN\n"
        f"      EXECUTE format('GRANT rds_replication TO %I', {_lit(role)});\n"
        "    ELSE\n"
        f"      EXECUTE format('ALTER ROLE %I REPLICATION', {_lit(role)});\n"
        "    END IF;\n"
    ) if replication else ""
    return [
        "DO $do$ DECLARE pw text := nullif(current_setting(" + setting + ", true), ''); BEGIN\n"
        "  IF pw IS NULL THEN\n"
        f"    RAISE EXCEPTION 'fraiseql_repl: no password verifier bound for role %', {_lit(role)}\n"
        "      USING HINT = 'connect with replication.roles.secret_options(...)';\n"
        "  END IF;\n"
        "  BEGIN\n"
        f"    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {_lit(role)}) THEN\n"
        f"      EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', {_lit(role)}, pw);\n"
        "    ELSE\n"
        f"      EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', {_lit(role)}, pw);\n"
        "    END IF;\n"
        + grant_replication +
        "  EXCEPTION WHEN OTHERS THEN\n"
        # Re-raised from here, the error's CONTEXT is this line, not the statement with the password.
        f"    RAISE EXCEPTION 'fraiseql_repl: could not set up role %: %', {_lit(role)}, replace(SQLERRM, pw, '[redacted]')\n"
        "      USING ERRCODE = SQLSTATE;\n"
        "  END;\n"
        "END $do$"
    ]


def _schemas(policy: ConflictPolicy) -> list[str]:
    """The application's schemas: FraiseQL's own (public) and any a replicated table lives in."""
    return sorted({"public", *(t.qualified.split(".")[0] for t in policy.all_tables())})


def render_replication_grants(policy: ConflictPolicy, role: str = REPL_ROLE) -> list[str]:
    r = _ident(role)
    stmts = [f"GRANT USAGE ON SCHEMA {_ident(s)} TO {r}" for s in sorted({SCHEMA, *_schemas(policy)})]
    stmts += [f"GRANT SELECT ON {table} TO {r}" for table in [*_published(policy), *CONTROL_TABLES]]
    return stmts


def render_app_grants(policy: ConflictPolicy, role: str = APP_ROLE) -> list[str]:
    """DML on the application's schemas (tables made later too), nothing on the control tables."""
    r = _ident(role)
    stmts: list[str] = []
    for s in _schemas(policy):
        q = _ident(s)
        stmts += [
            f"GRANT USAGE ON SCHEMA {q} TO {r}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {q} TO {r}",
            # nextval needs USAGE; UPDATE would also allow setval, which could move a writer onto
            # another writer's identity values (every writer hands out its own residue: install.sql)
            f"REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA {q} FROM {r}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {q} TO {r}",
            # Tables the migrations (run as the master user) create later.
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} REVOKE UPDATE ON SEQUENCES FROM {r}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} GRANT USAGE, SELECT ON SEQUENCES TO {r}",
        ]
    if not policy.all_tables():
        return stmts  # no replication here (phase A): no fraiseql_repl schema
    # The replicated tables' triggers are SECURITY DEFINER: the app needs nothing in the schema
    # but to read the conflicts its app tables leave for it.
    internal = ", ".join(f"{SCHEMA}.{t}" for t in (
        "lease", "lease_until", "writing", "agent_state", "changes", "tombstones", "shards", "parked", "resolutions", "resolution_events",
        "applied", "peer_applied", "table_meta", "members", "digests", "digest_keys", "heartbeats", "apply_failures"))
    stmts += [
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {r}",
        f"REVOKE ALL ON {internal} FROM {r}, PUBLIC",
        f"GRANT SELECT ON {SCHEMA}.conflicts TO {r}",
        # No temporary tables: PostgreSQL empties or drops a session's ON COMMIT temporary tables after
        # the commit check, without serving interrupts, for as long as the session makes it take
        # (thousands of tables and a large temp_buffers: seconds). end_writes cannot end such a commit,
        # and it lands after the revoke (tests/redteam/test_red6_commit_after_check.py). Checked, not
        # assumed: a role the app inherits TEMPORARY from would keep it.
        "DO $do$ BEGIN\n"
        "  EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());\n"
        f"  EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM %I', current_database(), {_lit(role)});\n"
        f"  IF pg_catalog.has_database_privilege({_lit(role)}, current_database(), 'TEMPORARY') THEN\n"
        f"    RAISE EXCEPTION 'fraiseql_repl: role % may still create temporary tables', {_lit(role)}\n"
        "      USING HINT = 'Revoke TEMPORARY on the database from the roles it is a member of: a temporary table '\n"
        "                   'emptied at commit can delay a commit past the fence.';\n"
        "  END IF;\n"
        "END $do$",
    ]
    return stmts


def render_agent_grants(role: str = AGENT_ROLE) -> list[str]:
    """Fence and read heartbeats; run the agent's functions if present (skipped, not an error, if not)."""
    r = _ident(role)
    names = "ARRAY[" + ", ".join(_lit(f) for f in AGENT_FUNCTIONS) + "]"
    tables = "ARRAY[" + ", ".join(_lit(t) for t in AGENT_TABLES_READ) + "]"
    return [
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {r}",
        # The lease moves only through set_lease (SECURITY DEFINER): reading it is all the agent may do.
        f"GRANT SELECT ON {SCHEMA}.lease TO {r}",
        f"GRANT SELECT, UPDATE ON {SCHEMA}.agent_state TO {r}",
        # Its own row, deleted and inserted every beat; no UPDATE, which would let it lock a peer's row
        # and hold back that peer's heartbeats arriving here (red team 17). An earlier grant is taken back.
        f"GRANT SELECT, INSERT, DELETE ON {HEARTBEAT_TABLE} TO {r}",
        f"REVOKE UPDATE ON {HEARTBEAT_TABLE} FROM {r}",
        "DO $do$ DECLARE f regprocedure; t text; BEGIN\n"
        "  FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p\n"
        f"           WHERE p.pronamespace = {_lit(SCHEMA)}::regnamespace AND p.proname = ANY({names}) LOOP\n"
        "    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);\n"
        f"    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, {_lit(role)});\n"
        "  END LOOP;\n"
        # diverged_keys gives every differing key: an earlier release's grant is taken back
        # (diverged_count, the number the agent reports, replaces it).
        "  FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p\n"
        f"           WHERE p.pronamespace = {_lit(SCHEMA)}::regnamespace AND p.proname = 'diverged_keys' LOOP\n"
        f"    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', f, {_lit(role)});\n"
        "  END LOOP;\n"
        f"  FOREACH t IN ARRAY {tables} LOOP\n"
        f"    IF to_regclass(format('%I.%I', {_lit(SCHEMA)}, t)) IS NOT NULL THEN\n"
        f"      EXECUTE format('GRANT SELECT ON %I.%I TO %I', {_lit(SCHEMA)}, t, {_lit(role)});\n"
        "    END IF;\n"
        "  END LOOP;\n"
        "END $do$",
        # No pg_read_all_stats: replication_lag() gives the agent the one thing it needed it for, and it
        # would let the agent read every session's statement text (pg_stat_activity,
        # pg_stat_statements). A grant made by an earlier release is taken back.
        "DO $do$ BEGIN\n"
        f"  IF pg_catalog.pg_has_role({_lit(role)}, 'pg_read_all_stats', 'MEMBER') THEN\n"
        f"    EXECUTE format('REVOKE pg_read_all_stats FROM %I', {_lit(role)});\n"
        "  END IF;\n"
        "EXCEPTION WHEN insufficient_privilege THEN\n"
        "  RAISE WARNING 'fraiseql_repl: cannot revoke pg_read_all_stats from %', "
        f"{_lit(role)};\n"
        "END $do$",
    ]


def render_roles(policy: ConflictPolicy, roles: Iterable[str], repl_role: str = REPL_ROLE) -> list[str]:
    """Every role's password (bound in the session) and grants, for the roles named in ``roles``."""
    wanted = set(roles)
    stmts: list[str] = []
    if repl_role in wanted:
        stmts += render_login_role(repl_role, replication=True) + render_replication_grants(policy, repl_role)
    if APP_ROLE in wanted:
        stmts += render_login_role(APP_ROLE) + render_app_grants(policy)
    if AGENT_ROLE in wanted:
        stmts += render_login_role(AGENT_ROLE) + render_agent_grants()
    return stmts
