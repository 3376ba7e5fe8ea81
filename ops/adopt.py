"""`python -m ops adopt sync|cutover|status|abort`: move the database a team runs today into a new phase A
stack, with its data, and a write pause of seconds.

The new primary (created empty by `pulumi up` with `database.adopt`, examples/1-adopt.yaml) subscribes
to the existing database with PostgreSQL's logical replication, over the peering the stack adds:

`sync` (as long as it takes; the application keeps writing to the existing database):
1. preflight: both servers answer; the source decodes WAL logically and has room for the slots;
   every table can be replicated (a primary key or a replica identity, logged, no large objects);
   the runbook's user may publish and replicate; the new primary is empty; pg_dump and psql fit.
2. schema: the source's schema (pg_dump --schema-only) is created on the new primary, and the
   application's role (`fraiseql_app`) gets its grants there;
3. publication, slot and subscription (`fraiseql_adopt`): every table, and a marker table of the
   runbook's own (`fraiseql_adopt.fence`);
4. copy: the initial copy of every table; catch-up: a marker written on the source is seen on the
   new primary.

`cutover` (the write pause, measured from the fence to `ready`):
1. preflight: the subscription streams and the marker's round trip is under `--max-lag`;
2. fence: the source database refuses writes (`default_transaction_read_only`, then every other
   client session of it ended: an open transaction is rolled back, never acknowledged);
3. drain: a marker written after the fence is seen on the new primary, so every transaction the
   source acknowledged is there (logical replication applies in commit order);
4. sequences: each sequence takes the source's last value (sequences do not replicate);
5. ready: the application may write to the new primary (the pause ends here); a longer pause than
   `--max-pause` releases the fence and fails instead;
6. verify: every table compared (row count and a checksum of every row) between the fenced source
   and a snapshot of the new primary taken before `ready` (`--verify-first`: before `ready`);
7. detach: the subscription, slot, publication and marker schema are removed. The source stays
   read-only: keep it until you no longer need a way back.

`status` reads both sides and changes nothing; `abort` removes what `sync` created and releases the
fence (refused after `ready` without `--force`: the new primary may have taken writes since).

Every step can be repeated: progress is kept in `--state` (default `./fraiseql-adopt.json`), and a
re-run after exit 1, a crash or Ctrl-C resumes. `--dry-run` runs the preflight and prints every
statement the run would make. Passwords never appear in SQL text or on a command line: the source's
comes from `--source-secret` (Secrets Manager) or the libpq environment, and reaches the subscription
through a session setting.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ops import log
from ops.aws import Runtime
from ops.errors import Refused, StepFailed, UsageError

__all__ = ["AdoptOptions", "run_adopt", "NAME", "MARKER_SCHEMA"]

STEP = "adopt"
#: The publication, slot and subscription the runbook creates, and the schema of its marker table.
NAME = "fraiseql_adopt"
MARKER_SCHEMA = "fraiseql_adopt"
MARKER = f"{MARKER_SCHEMA}.fence"
#: Where the source's password reaches the subscription: a session setting, never SQL text.
PASSWORD_SETTING = "fraiseql_adopt.source_pw"
#: The logical replication table sync workers each need a slot and a WAL sender of their own.
SLOTS_NEEDED = 3
#: Session settings that make a row's text the same on both servers (what the checksum reads).
SAME_TEXT = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, MDY'", "SET IntervalStyle = 'postgres'",
             "SET extra_float_digits = 3", "SET bytea_output = 'hex'")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", MARKER_SCHEMA)


@dataclass(frozen=True)
class AdoptOptions:
    action: str                               # sync | cutover | status | abort
    source: str                               # libpq conninfo of the existing database, no password
    source_secret: Optional[str] = None       # Secrets Manager secret with its username and password
    target_dsn: Optional[str] = None          # the new primary, e.g. through a bastion; default: the outputs
    sslmode: str = "verify-full"
    state_path: str = "fraiseql-adopt.json"
    dry_run: bool = False
    timeout_s: float = 3600.0
    max_lag_s: float = 5.0
    max_pause_s: float = 60.0
    verify_first: bool = False
    force: bool = False
    pg_bin: Optional[str] = None
    app_role: str = "fraiseql_app"
    poll_s: float = 0.05


@dataclass
class Table:
    schema: str
    name: str
    has_key: bool = True
    identity: str = "d"
    logged: bool = True
    owned: bool = True

    @property
    def qualified(self) -> str:
        return f"{_ident(self.schema)}.{_ident(self.name)}"

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Sides:
    """The two connections, and what the run knows of them."""

    source: Any
    target: Any
    source_password: Optional[str]
    source_dbname: str
    tables: list[Table] = field(default_factory=list)
    outputs: Any = None
    #: `--source`, with the secret's user name when it names none: what pg_dump and the subscription use.
    source_conninfo: str = ""


# -- connections -----------------------------------------------------------------------------------


def _source_password(outputs: Any, rt: Runtime, opts: AdoptOptions) -> tuple[Optional[str], Optional[str]]:
    """(username, password) from the source's secret (`--source-secret`). Without one, the runbook's own
    connections use the libpq environment (PGPASSWORD, .pgpass) and the subscription connects without a
    password (a source that trusts the new primary's address, as in the drill)."""
    if opts.source_secret:
        region = getattr(outputs, "primaryRegion", None) or "us-east-1"
        text = rt.client("secretsmanager", region).get_secret_value(SecretId=opts.source_secret)["SecretString"]
        doc = json.loads(text)
        return doc.get("username"), doc.get("password")
    return None, None


def _connect(conninfo: str, what: str, **kw: Any) -> Any:
    import psycopg

    try:
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10, application_name="fraiseql-adopt", **kw)
    except psycopg.OperationalError as e:
        raise StepFailed(f"cannot reach the {what}: {str(e).strip()}; run it again when it answers", step="preflight") from None


def _open(outputs: Any, rt: Runtime, opts: AdoptOptions) -> Sides:
    import psycopg

    if "password" in opts.source.lower():
        raise UsageError("--source must not carry a password (shell history, process lists): use --source-secret, "
                         "PGPASSWORD or a .pgpass file", step=STEP)
    user, password = _source_password(outputs, rt, opts)
    extra: dict[str, Any] = {}
    if user and "user=" not in opts.source:
        extra["user"] = user
    if password:
        extra["password"] = password
    # The subscription reads the source's password from this session setting (see _subscribe).
    options = f"-c {PASSWORD_SETTING}={password.replace(chr(92), chr(92) * 2).replace(' ', chr(92) + ' ')}" if password else ""
    if opts.target_dsn:
        if "password" in opts.target_dsn.lower():
            raise UsageError("--target-dsn must not carry a password: use PGPASSWORD or a .pgpass file", step=STEP)
        target = _connect(opts.target_dsn, "new primary", options=options)
    else:
        arn = getattr(outputs, "dbSecretArn", None)
        if not arn:
            raise UsageError("the stack outputs name no dbSecretArn (the new primary's master secret): pass --target-dsn",
                             step=STEP)
        secret = json.loads(rt.client("secretsmanager", outputs.primaryRegion).get_secret_value(SecretId=arn)["SecretString"])
        try:
            target = psycopg.connect(host=outputs.primaryDbAddress, port=outputs.dbPort or 5432, dbname=outputs.dbName or "fraiseql",
                                     user=secret["username"], password=secret["password"], sslmode=opts.sslmode,
                                     autocommit=True, connect_timeout=10, options=options, application_name="fraiseql-adopt")
        except psycopg.OperationalError as e:
            raise StepFailed(f"cannot reach the new primary: {str(e).strip()}; run it again when it answers",
                             step="preflight") from None
    source = _connect(opts.source, "source database", **extra)
    dbname = source.execute("SELECT current_database()").fetchone()[0]
    conninfo = opts.source + (f" user={user}" if "user" in extra else "")
    return Sides(source, target, password, dbname, source_conninfo=conninfo)


def _one(conn: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


# -- what there is ----------------------------------------------------------------------------------


def _tables(conn: Any) -> list[Table]:
    """The application's tables: every ordinary table outside the system schemas and extensions."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname,
               EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
               c.relreplident::text, c.relpersistence = 'p',
               pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1, 2
        """, (list(SYSTEM_SCHEMAS),)).fetchall()
    return [Table(s, n, bool(k), str(r), bool(logged), bool(owned)) for s, n, k, r, logged, owned in rows]


def _major(conn: Any) -> int:
    return int(_one(conn, "SHOW server_version_num")) // 10000


def _tool(opts: AdoptOptions, name: str) -> Optional[str]:
    if opts.pg_bin:
        path = os.path.join(opts.pg_bin, name)
        return path if os.path.exists(path) else None
    return shutil.which(name)


def _tool_major(path: str) -> int:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    digits = next((w for w in out.split() if w[:1].isdigit()), "0")
    return int(digits.split(".")[0])


def _preflight_sync(sides: Sides, opts: AdoptOptions, rep: log.Reporter) -> list[str]:
    """Problems that make a sync impossible, each with its fix (empty: go)."""
    src, tgt = sides.source, sides.target
    problems: list[str] = []
    s_major, t_major = _major(src), _major(tgt)
    if s_major > t_major:
        problems.append(f"the source runs PostgreSQL {s_major}, newer than the new primary's {t_major}: its schema "
                        "cannot be restored there; adopt into a stack of the same major or newer")
    if s_major < 10:
        problems.append(f"the source runs PostgreSQL {s_major}: logical replication needs 10 or newer; upgrade it first")
    if _one(src, "SHOW wal_level") != "logical":
        problems.append("the source's wal_level is not logical: on RDS set rds.logical_replication = 1 in its parameter "
                        "group and reboot it (a minute without writes), then run this again")
    used = int(_one(src, "SELECT count(*) FROM pg_catalog.pg_replication_slots") or 0)
    has_slot = bool(_one(src, "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (NAME,)))
    free = int(_one(src, "SHOW max_replication_slots")) - used + (1 if has_slot else 0)
    senders = int(_one(src, "SHOW max_wal_senders")) - int(_one(src, "SELECT count(*) FROM pg_catalog.pg_stat_replication") or 0)
    if free < SLOTS_NEEDED or senders < SLOTS_NEEDED:
        problems.append(f"the source has {free} free replication slots and {senders} free WAL senders; the copy needs "
                        f"{SLOTS_NEEDED} of each: raise max_replication_slots and max_wal_senders (parameter group, reboot)")
    can_replicate = _one(src, """SELECT r.rolsuper OR r.rolreplication OR EXISTS (
                                   SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = 'rds_replication'
                                      AND pg_catalog.pg_has_role(current_user, g.oid, 'MEMBER'))
                                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user""")
    if not can_replicate:
        problems.append("the source user may not replicate: GRANT rds_replication TO it (RDS), or ALTER ROLE ... REPLICATION")
    tables = _tables(src)
    sides.tables = tables
    if not tables:
        problems.append("the source database has no table to adopt: check --source's dbname")
    keyless = [t.label for t in tables if not t.has_key and t.identity not in ("f", "i")]
    if keyless:
        problems.append(f"{len(keyless)} table(s) have no primary key, so their updates and deletes would not replicate: "
                        f"{', '.join(keyless[:10])}; add one, or ALTER TABLE ... REPLICA IDENTITY FULL")
    unlogged = [t.label for t in tables if not t.logged]
    if unlogged:
        problems.append(f"unlogged tables do not replicate: {', '.join(unlogged[:10])}; ALTER TABLE ... SET LOGGED")
    foreign = [t.label for t in tables if not t.owned]
    if foreign:
        problems.append(f"the source user does not own {', '.join(foreign[:10])} (a publication needs its owner): "
                        "run as the tables' owner, or GRANT that role to the user")
    if int(_one(src, "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata") or 0):
        problems.append("the source holds large objects, which logical replication does not copy: move them into bytea "
                        "columns first")
    if _one(tgt, "SELECT pg_catalog.pg_is_in_recovery()"):
        problems.append("the new primary is in recovery (a replica): point --target-dsn at the writer")
    subscribed = bool(_one(tgt, "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = %s", (NAME,)))
    if not subscribed:
        present = {t.label for t in _tables(tgt)} & {t.label for t in tables}
        with_rows = [name for name in sorted(present) if _one(tgt, f"SELECT EXISTS (SELECT 1 FROM {_q(name)})")]
        if with_rows:
            problems.append(f"the new primary already holds rows in {', '.join(with_rows[:10])}: adoption copies into an "
                            "empty database; drop them (or the stack's database) first")
    for tool in ("pg_dump", "psql"):
        path = _tool(opts, tool)
        if path is None:
            problems.append(f"{tool} not found{' in ' + opts.pg_bin if opts.pg_bin else ' on PATH'}: install the PostgreSQL "
                            f"{max(s_major, t_major)} client, or pass --pg-bin")
        elif _tool_major(path) < s_major:
            problems.append(f"{path} is older than the source (PostgreSQL {s_major}): use the client of {s_major} or newer")
    for p in problems:
        rep.emit("preflight", log.PROBLEM, p)
    if not problems:
        rep.emit("preflight", log.OK, f"source PostgreSQL {s_major} ({len(tables)} tables, wal_level logical, {free} free "
                 f"slots); new primary PostgreSQL {t_major}", tables=len(tables))
    return problems


def _q(label: str) -> str:
    schema, _, name = label.partition(".")
    return f"{_ident(schema)}.{_ident(name)}"


# -- sync ------------------------------------------------------------------------------------------


def _schema(sides: Sides, opts: AdoptOptions, rep: log.Reporter, env: Mapping[str, str]) -> None:
    src_tables = {t.label for t in sides.tables}
    have = {t.label for t in _tables(sides.target)}
    if src_tables <= have:
        rep.emit("schema", log.SKIP, f"the new primary has the source's {len(src_tables)} tables")
    elif have & src_tables:
        raise Refused(f"the new primary has some of the source's tables but not all ({len(have & src_tables)} of "
                      f"{len(src_tables)}): drop them and run this again", step="schema")
    else:
        dump, psql = _tool(opts, "pg_dump"), _tool(opts, "psql")
        assert dump and psql  # checked by the preflight
        started = time.monotonic()
        ddl = subprocess.run([dump, "--schema-only", "--no-owner", "--no-privileges", "--no-publications",
                              "--no-subscriptions", "--exclude-schema", MARKER_SCHEMA, "-d", sides.source_conninfo],
                             capture_output=True, text=True, env=_pg_env(env, sides.source_password), timeout=opts.timeout_s)
        if ddl.returncode != 0:
            raise StepFailed(f"pg_dump --schema-only failed: {ddl.stderr.strip()[-500:]}", step="schema")
        target_conninfo = _conninfo(sides.target)
        applied = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", target_conninfo],
                                 input=ddl.stdout, capture_output=True, text=True, env=_pg_env(env, _target_password(sides)),
                                 timeout=opts.timeout_s)
        if applied.returncode != 0:
            raise StepFailed(f"the schema did not apply on the new primary (nothing of it stays: one transaction): "
                             f"{applied.stderr.strip()[-500:]}", step="schema")
        rep.emit("schema", log.OK, f"{len(src_tables)} tables, with their indexes, views and functions "
                 f"({time.monotonic() - started:.1f} s)")
    for conn in (sides.source, sides.target):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {MARKER_SCHEMA}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {MARKER} (id int PRIMARY KEY, nonce text NOT NULL, at timestamptz NOT NULL)")
    _grants(sides, opts, rep)


def _grants(sides: Sides, opts: AdoptOptions, rep: log.Reporter) -> None:
    role = opts.app_role
    if not _one(sides.target, "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)):
        rep.emit("grants", log.SKIP, f"no role {role} on the new primary (the stack's bootstrap creates it)")
        return
    schemas = sorted({t.schema for t in sides.tables})
    for s in schemas:
        for stmt in (f"GRANT USAGE ON SCHEMA {_ident(s)} TO {_ident(role)}",
                     f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {_ident(s)} TO {_ident(role)}",
                     f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {_ident(s)} TO {_ident(role)}",
                     f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {_ident(s)} TO {_ident(role)}"):
            sides.target.execute(stmt)
    rep.emit("grants", log.OK, f"{role}: DML and functions in {', '.join(schemas)}")


def _conninfo(conn: Any) -> str:
    """The conninfo a psql can use to reach what `conn` reaches (its password is passed apart)."""
    info = conn.info
    parts = {"host": info.host, "port": info.port, "dbname": info.dbname, "user": info.user}
    params = info.get_parameters()
    if params.get("sslmode"):
        parts["sslmode"] = params["sslmode"]
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


def _target_password(sides: Sides) -> Optional[str]:
    return sides.target.info.password or None


def _pg_env(env: Mapping[str, str], password: Optional[str]) -> dict[str, str]:
    out = {k: v for k, v in env.items()}
    if password:
        out["PGPASSWORD"] = password
    return out


def _publish(sides: Sides, rep: log.Reporter) -> None:
    src = sides.source
    wanted = [t.qualified for t in sides.tables] + [MARKER]
    if _one(src, "SELECT count(*) FROM pg_catalog.pg_publication WHERE pubname = %s", (NAME,)):
        src.execute(f"ALTER PUBLICATION {NAME} SET TABLE {', '.join(wanted)}")
        rep.emit("publish", log.OK, f"publication {NAME}: {len(wanted) - 1} tables and the marker (kept up to date)")
    else:
        src.execute(f"CREATE PUBLICATION {NAME} FOR TABLE {', '.join(wanted)}")
        rep.emit("publish", log.OK, f"publication {NAME}: {len(wanted) - 1} tables and the marker")
    if not _one(src, "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (NAME,)):
        lsn = _one(src, "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput')", (NAME,))
        rep.emit("slot", log.OK, f"slot {NAME} at {lsn}: from here the source keeps every change the new primary needs")
    else:
        rep.emit("slot", log.SKIP, f"slot {NAME} exists")


def _subscribe(sides: Sides, opts: AdoptOptions, rep: log.Reporter) -> None:
    import psycopg

    outputs = sides.outputs
    try:
        _create_subscription(sides, opts, rep)
    except psycopg.OperationalError as e:
        pcx = getattr(outputs, "adoptPeeringConnectionId", None) or "<adoptPeeringConnectionId>"
        cidr = getattr(outputs, "adoptStackCidr", None) or "<adoptStackCidr>"
        raise StepFailed(f"the new primary cannot reach the source ({str(e).strip()[:300]}): in the source's VPC, route "
                         f"{cidr} through {pcx} from the source's subnets, and allow {cidr} on the source's port in its "
                         "security group; then run this again", step="subscribe") from None


def _create_subscription(sides: Sides, opts: AdoptOptions, rep: log.Reporter) -> None:
    tgt = sides.target
    if _one(tgt, "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = %s", (NAME,)):
        rep.emit("subscribe", log.SKIP, f"subscription {NAME} exists")
        return
    # The source's conninfo as the new primary reaches it; its password only through the session
    # setting, added inside the block so no statement text or error carries it.
    base = sides.source_conninfo
    tgt.execute(
        "DO $do$ DECLARE pw text := nullif(current_setting(" + _lit(PASSWORD_SETTING) + ", true), '');\n"
        "  ci text := " + _lit(base) + ";\n"
        "BEGIN\n"
        "  IF pw IS NOT NULL THEN ci := ci || format(' password=%L', pw); END IF;\n"
        f"  EXECUTE format('CREATE SUBSCRIPTION {NAME} CONNECTION %L PUBLICATION {NAME} "
        f"WITH (create_slot = false, slot_name = {NAME}, copy_data = true)', ci);\n"
        "EXCEPTION WHEN OTHERS THEN\n"
        f"  RAISE EXCEPTION 'subscription {NAME}: %', CASE WHEN pw IS NULL THEN SQLERRM ELSE replace(SQLERRM, pw, '[redacted]') END\n"
        "    USING ERRCODE = SQLSTATE;\n"
        "END $do$")
    rep.emit("subscribe", log.OK, f"subscription {NAME} on the new primary: the copy starts")


def _wait_copy(sides: Sides, opts: AdoptOptions, rt: Runtime, rep: log.Reporter) -> None:
    deadline = rt.clock() + opts.timeout_s
    started, last = rt.clock(), -1
    while True:
        rows = sides.target.execute(
            "SELECT r.srsubstate::text, count(*) FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s "
            "ON s.oid = r.srsubid WHERE s.subname = %s GROUP BY 1", (NAME,)).fetchall()
        states = {s: int(n) for s, n in rows}
        total, ready = sum(states.values()), states.get("r", 0)
        if total and ready == total:
            rep.emit("copy", log.OK, f"{total} tables copied ({rt.clock() - started:.1f} s)", tables=total)
            return
        errors = _one(sides.target, "SELECT coalesce(sum(sync_error_count + apply_error_count), 0) FROM "
                                    "pg_catalog.pg_stat_subscription_stats WHERE subname = %s", (NAME,))
        if errors:
            raise StepFailed(f"the copy into the new primary failed {errors} time(s) (pg_stat_subscription_stats; its "
                             "log says why); fix it and run this again", step="copy")
        if ready != last:
            rep.emit("copy", log.INFO, f"{ready} of {total} tables copied")
            last = ready
        if rt.clock() > deadline:
            raise StepFailed(f"the copy is not done after {opts.timeout_s:g} s ({ready} of {total} tables); run this "
                             "again to keep waiting", step="copy")
        rt.sleep(1.0)


def _marker(sides: Sides, opts: AdoptOptions, rt: Runtime, *, timeout_s: float, step: str) -> float:
    """Write a nonce on the source; wait until the new primary has it. Seconds it took."""
    nonce = secrets.token_hex(8)
    sides.source.execute("SET default_transaction_read_only = off")  # the fence is for everyone else
    sides.source.execute(f"INSERT INTO {MARKER} (id, nonce, at) VALUES (1, %s, now()) "
                         "ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce, at = excluded.at", (nonce,))
    started = rt.clock()
    while True:
        if _one(sides.target, f"SELECT nonce FROM {MARKER} WHERE id = 1") == nonce:
            return rt.clock() - started
        if rt.clock() - started > timeout_s:
            raise TimeoutError(f"{step}: the new primary did not apply a write of the source within {timeout_s:g} s")
        rt.sleep(opts.poll_s)


# -- cutover ---------------------------------------------------------------------------------------


def _fence(sides: Sides, rep: log.Reporter) -> int:
    src = sides.source
    src.execute(f"ALTER DATABASE {_ident(sides.source_dbname)} SET default_transaction_read_only = on")
    ended = src.execute(
        "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()[0]
    rep.emit("fence", log.OK, f"the source refuses writes: new sessions are read-only, {ended} session(s) ended "
             "(their open transactions rolled back, never acknowledged)", sessions_ended=int(ended or 0))
    return int(ended or 0)


def _unfence(sides: Sides) -> None:
    sides.source.execute(f"ALTER DATABASE {_ident(sides.source_dbname)} RESET default_transaction_read_only")


def _sequences(sides: Sides, rep: log.Reporter) -> int:
    rows = sides.source.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_catalog.pg_sequences "
        "WHERE schemaname <> ALL(%s) AND last_value IS NOT NULL", (list(SYSTEM_SCHEMAS),)).fetchall()
    for schema, name, value in rows:
        sides.target.execute("SELECT pg_catalog.setval(%s::regclass, %s, true)", (f"{_ident(schema)}.{_ident(name)}", value))
    rep.emit("sequences", log.OK, f"{len(rows)} sequence(s) set to the source's last values", sequences=len(rows))
    return len(rows)


def _checksums(conn: Any, tables: Sequence[Table]) -> dict[str, tuple[int, int]]:
    for stmt in SAME_TEXT:
        conn.execute(stmt)
    out = {}
    for t in tables:
        n, h = conn.execute(f"SELECT count(*), coalesce(sum(pg_catalog.hashtext(x::text)::bigint), 0) FROM {t.qualified} x").fetchone()
        out[t.label] = (int(n), int(h))
    return out


def _verify(source_sums: Mapping[str, tuple[int, int]], target_sums: Mapping[str, tuple[int, int]],
            rep: log.Reporter, *, after_ready: bool = False) -> int:
    differ = sorted(k for k in source_sums if source_sums[k] != target_sums.get(k))
    rows = sum(n for n, _ in source_sums.values())
    if differ:
        detail = "; ".join(f"{k}: source {source_sums[k][0]} rows, new primary {target_sums.get(k, (0, 0))[0]}" for k in differ[:10])
        now = ("the application may already write to the new primary: compare those tables by hand (the source is "
               "fenced and unchanged, the subscription still attached)" if after_ready else
               "the source is still fenced and attached: find why before anything writes to the new primary")
        raise StepFailed(f"{len(differ)} table(s) differ between the source and the new primary (as of `ready`): "
                         f"{detail}. {now}", step="verify")
    rep.emit("verify", log.OK, f"{len(source_sums)} tables, {rows} rows: equal on both sides (row count and a checksum "
             "of every row)", tables=len(source_sums), rows=rows)
    return rows


def _detach(sides: Sides, rep: log.Reporter) -> None:
    tgt, src = sides.target, sides.source
    if _one(tgt, "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = %s", (NAME,)):
        tgt.execute(f"ALTER SUBSCRIPTION {NAME} DISABLE")
        tgt.execute(f"ALTER SUBSCRIPTION {NAME} SET (slot_name = NONE)")
        tgt.execute(f"DROP SUBSCRIPTION {NAME}")
    deadline = time.monotonic() + 30
    while _one(src, "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (NAME,)):
        if time.monotonic() > deadline:
            raise StepFailed(f"slot {NAME} on the source is still in use 30 s after the subscription was dropped; run "
                             "this again", step="detach")
        time.sleep(0.1)
    if _one(src, "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (NAME,)):
        src.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (NAME,))
    src.execute(f"DROP PUBLICATION IF EXISTS {NAME}")
    for conn in (src, tgt):
        conn.execute(f"DROP SCHEMA IF EXISTS {MARKER_SCHEMA} CASCADE")
    rep.emit("detach", log.OK, f"subscription, slot, publication and the {MARKER_SCHEMA} schema removed")


# -- progress ------------------------------------------------------------------------------------


def _read_state(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read the adoption state {path}: {e}; move it away to start over", step=STEP) from None


def _save_state(path: str, record: Mapping[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(record), f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _fingerprint(sides: Sides) -> dict[str, str]:
    s, t = sides.source.info, sides.target.info
    return {"source": f"{s.host}:{s.port}/{s.dbname}", "target": f"{t.host}:{t.port}/{t.dbname}"}


# -- the command ---------------------------------------------------------------------------------


SYNC_PLAN = ("preflight", "schema", "grants", "publish", "slot", "subscribe", "copy", "catch-up")
CUTOVER_PLAN = ("preflight", "fence", "drain", "sequences", "ready", "verify", "detach")


def run_adopt(outputs: Any, rt: Runtime, opts: AdoptOptions) -> int:
    import psycopg

    rep = rt.reporter
    assert rep is not None
    sides = _open(outputs, rt, opts)
    sides.outputs = outputs
    try:
        return _run(sides, rt, rep, opts)
    except psycopg.Error as e:
        # A statement either side refused (a permission, a lock, a connection lost): say which, resume later.
        raise StepFailed(f"{type(e).__name__}: {str(e).strip()[:500]}; fix it and run the same command again (it "
                         "resumes)", step=STEP) from None
    finally:
        for conn in (sides.source, sides.target):
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _run(sides: Sides, rt: Runtime, rep: log.Reporter, opts: AdoptOptions) -> int:
    state = _read_state(opts.state_path)
    fingerprint = _fingerprint(sides)
    if state and state.get("sides") != fingerprint:
        raise Refused(f"{opts.state_path} belongs to another adoption ({state.get('sides')}): finish it, or move the "
                      "file away if it is abandoned", step=STEP)
    record: dict[str, Any] = state or {"sides": fingerprint, "synced": False, "ready": False}
    if opts.action == "status":
        return _status(sides, opts, rt, rep, record)
    if opts.action == "abort":
        return _abort(sides, opts, rep, record)
    if opts.action == "sync":
        return _sync(sides, opts, rt, rep, record)
    if opts.action == "cutover":
        return _cutover(sides, opts, rt, rep, record)
    raise UsageError(f"unknown adopt action {opts.action}; use sync, cutover, status or abort", step=STEP)


def _sync(sides: Sides, opts: AdoptOptions, rt: Runtime, rep: log.Reporter, record: dict[str, Any]) -> int:
    problems = _preflight_sync(sides, opts, rep)
    if problems:
        raise Refused(f"{len(problems)} problem(s) before the sync; each line above says what to do", step="preflight")
    if opts.dry_run:
        for step in SYNC_PLAN[1:]:
            rep.emit(step, log.WOULD, _would(step, sides))
        rep.emit("result", log.DONE, "dry run: nothing changed")
        return 0
    _schema(sides, opts, rep, rt.environ)
    _publish(sides, rep)
    _subscribe(sides, opts, rep)
    _save_state(opts.state_path, record)
    _wait_copy(sides, opts, rt, rep)
    try:
        took = _marker(sides, opts, rt, timeout_s=opts.timeout_s, step="catch-up")
    except TimeoutError as e:
        raise StepFailed(f"{e}; run this again to keep waiting", step="catch-up") from None
    rep.emit("catch-up", log.OK, f"in sync: a write on the source reached the new primary in {took:.2f} s", delay_s=round(took, 3))
    record["synced"] = True
    _save_state(opts.state_path, record)
    rep.emit("result", log.DONE, "the new primary follows the source; the application still writes to the source. "
             "When ready for a pause of seconds: python -m ops adopt cutover (same options)", delay_s=round(took, 3))
    return 0


def _would(step: str, sides: Sides) -> str:
    tables = ", ".join(t.label for t in sides.tables[:5]) + (" ..." if len(sides.tables) > 5 else "")
    return {
        "schema": "pg_dump --schema-only --no-owner --no-privileges (source) | psql --single-transaction (new primary); "
                  f"CREATE SCHEMA {MARKER_SCHEMA} and TABLE {MARKER} on both",
        "grants": "GRANT DML, sequences and functions of each copied schema to the application's role",
        "publish": f"CREATE PUBLICATION {NAME} FOR TABLE {tables}, {MARKER} (source)",
        "slot": f"SELECT pg_create_logical_replication_slot('{NAME}', 'pgoutput') (source)",
        "subscribe": f"CREATE SUBSCRIPTION {NAME} CONNECTION '<--source, password from the session>' PUBLICATION {NAME} "
                     f"WITH (create_slot = false, slot_name = {NAME}, copy_data = true) (new primary)",
        "copy": "wait until pg_subscription_rel has every table ready",
        "catch-up": f"write a nonce into {MARKER} on the source, wait until the new primary has it",
        "fence": f"ALTER DATABASE {_ident(sides.source_dbname)} SET default_transaction_read_only = on; "
                 "pg_terminate_backend(every other client session of it) (source)",
        "drain": f"write a nonce into {MARKER} on the source, wait until the new primary has it",
        "sequences": "setval() every sequence of the new primary to the source's last_value",
        "ready": "the application may write to the new primary: the pause ends",
        "verify": "count and checksum every row of every table on both sides",
        "detach": f"DROP SUBSCRIPTION {NAME} (new primary); pg_drop_replication_slot, DROP PUBLICATION (source); "
                  f"DROP SCHEMA {MARKER_SCHEMA} (both)",
    }[step]


def _subscription_live(sides: Sides) -> tuple[bool, int, int]:
    row = sides.target.execute(
        "SELECT s.subenabled, (SELECT count(*) FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid), "
        "(SELECT count(*) FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid AND r.srsubstate = 'r') "
        "FROM pg_catalog.pg_subscription s WHERE s.subname = %s", (NAME,)).fetchone()
    if row is None:
        return False, 0, 0
    return bool(row[0]), int(row[1]), int(row[2])


def _cutover(sides: Sides, opts: AdoptOptions, rt: Runtime, rep: log.Reporter, record: dict[str, Any]) -> int:
    if record.get("ready"):
        # After `ready` the application may write to the new primary: only the rest of the cutover remains.
        sides.tables = _tables(sides.source)
        rep.emit("ready", log.SKIP, f"reached before ({record.get('pause_s')} s pause); finishing the cutover")
        saved = record.get("target_sums")
        if not record.get("verified") and saved:
            record["rows_compared"] = _verify(_checksums(sides.source, sides.tables),
                                              {k: (int(v[0]), int(v[1])) for k, v in saved.items()}, rep, after_ready=True)
        elif not record.get("verified"):
            rep.emit("verify", log.WARN, "the run stopped after `ready` before the new primary's snapshot was read, and it "
                     "has taken writes since: compare the tables by hand (the source is fenced and unchanged)")
        _detach(sides, rep)
        return _done(rep, record, opts)
    enabled, total, ready = _subscription_live(sides)
    if not enabled or not total or ready != total:
        raise Refused(f"the new primary is not following the source (subscription {NAME}: "
                      f"{'enabled' if enabled else 'missing or disabled'}, {ready} of {total} tables ready): run "
                      "`python -m ops adopt sync` first", step="preflight")
    sides.tables = _tables(sides.source)
    fenced_before = bool(record.get("fenced"))
    if not fenced_before:
        try:
            lag = _marker(sides, opts, rt, timeout_s=opts.max_lag_s, step="preflight")
        except TimeoutError:
            raise Refused(f"the new primary is more than --max-lag {opts.max_lag_s:g} s behind the source: the pause would "
                          "be as long; wait (python -m ops adopt status) and run this again", step="preflight") from None
        rep.emit("preflight", log.OK, f"subscription streaming, {total} tables, a write reaches the new primary in "
                 f"{lag:.2f} s", delay_s=round(lag, 3))
    if opts.dry_run:
        for step in CUTOVER_PLAN[1:]:
            rep.emit(step, log.WOULD, _would(step, sides))
        rep.emit("result", log.DONE, "dry run: nothing changed")
        return 0
    t_fence = rt.clock()
    _fence(sides, rep)
    record["fenced"] = True
    _save_state(opts.state_path, record)
    budget = max(0.0, opts.max_pause_s - (rt.clock() - t_fence))
    try:
        took = _marker(sides, opts, rt, timeout_s=budget, step="drain")
    except TimeoutError:
        _unfence(sides)
        record["fenced"] = False
        _save_state(opts.state_path, record)
        raise StepFailed(f"the new primary did not catch up within --max-pause {opts.max_pause_s:g} s: the fence is "
                         "released and the source takes writes again; run the cutover again later", step="drain") from None
    rep.emit("drain", log.OK, f"every write the source acknowledged is on the new primary ({took:.2f} s)")
    _sequences(sides, rep)
    snapshot = None
    if opts.verify_first:
        rows = _verify(_checksums(sides.source, sides.tables), _checksums(sides.target, sides.tables), rep)
        record["verified"] = True
        record["rows_compared"] = rows
    else:
        # What the new primary holds at `ready`, kept for the comparison while the application writes.
        import psycopg

        snapshot = psycopg.connect(_conninfo(sides.target), password=_target_password(sides), autocommit=False,
                                   connect_timeout=10, application_name="fraiseql-adopt-verify")
        snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT 1").fetchone()
    pause = rt.clock() - t_fence
    record.update(ready=True, pause_s=round(pause, 3))
    _save_state(opts.state_path, record)
    rep.emit("ready", log.OK, f"the new primary has every acknowledged write and takes writes: point the application at it "
             f"now. Write pause {pause:.2f} s (fence to ready)", pause_s=round(pause, 3))
    try:
        if snapshot is not None:
            target_sums = _checksums(snapshot, sides.tables)
            record["target_sums"] = target_sums
            _save_state(opts.state_path, record)
            record["rows_compared"] = _verify(_checksums(sides.source, sides.tables), target_sums, rep, after_ready=True)
            record["verified"] = True
            _save_state(opts.state_path, record)
    finally:
        if snapshot is not None:
            snapshot.close()
    _detach(sides, rep)
    return _done(rep, record, opts)


def _done(rep: log.Reporter, record: Mapping[str, Any], opts: AdoptOptions) -> int:
    if os.path.exists(opts.state_path):
        os.remove(opts.state_path)
    rep.emit("result", log.DONE, f"adopted: write pause {record.get('pause_s')} s, {record.get('rows_compared')} rows "
             "compared. The source stays read-only (ALTER DATABASE ... RESET default_transaction_read_only releases "
             "it); remove database.adopt and `pulumi up` (examples/2-phase-a.yaml)",
             pause_s=record.get("pause_s"), rows_compared=record.get("rows_compared"))
    return 0


def _status(sides: Sides, opts: AdoptOptions, rt: Runtime, rep: log.Reporter, record: Mapping[str, Any]) -> int:
    enabled, total, ready = _subscription_live(sides)
    read_only = _one(sides.source, "SELECT setconfig::text FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d "
                                   "ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0")
    fenced = bool(read_only and "default_transaction_read_only=on" in read_only)
    rep.emit("source", log.WARN if fenced else log.OK, "fenced (new sessions read-only)" if fenced else "takes writes",
             fenced=fenced)
    if not total:
        rep.emit("subscription", log.INFO, f"no subscription {NAME} on the new primary (sync not started, or detached)")
    else:
        lag = None
        if enabled and ready == total and not fenced:
            try:
                lag = _marker(sides, opts, rt, timeout_s=30, step="status")
            except TimeoutError:
                lag = None
        rep.emit("subscription", log.OK if enabled and ready == total else log.WARN,
                 f"{NAME}: {'enabled' if enabled else 'disabled'}, {ready} of {total} tables copied"
                 + (f", a write reaches the new primary in {lag:.2f} s" if lag is not None else ""),
                 enabled=enabled, tables=total, ready=ready, delay_s=lag)
    rep.emit("status", log.DONE, f"state: {'ready' if record.get('ready') else 'synced' if record.get('synced') else 'not synced'}")
    return 0


def _abort(sides: Sides, opts: AdoptOptions, rep: log.Reporter, record: Mapping[str, Any]) -> int:
    if record.get("ready") and not opts.force:
        raise Refused("the cutover reached `ready`: the new primary may have taken writes since, which the source does "
                      "not have; abort with --force only if nothing wrote to it", step="abort")
    if opts.dry_run:
        rep.emit("abort", log.WOULD, _would("detach", sides) + "; ALTER DATABASE ... RESET default_transaction_read_only (source)")
        return 0
    _detach(sides, rep)
    _unfence(sides)
    rep.emit("abort", log.OK, "the source takes writes again; the new primary keeps what it copied (drop it before a new sync)")
    if os.path.exists(opts.state_path):
        os.remove(opts.state_path)
    return 0

