"""SQL that phases B and C deploy on every writer, rendered from ``replication.model``.

Every function here is pure and returns a list of SQL statements. Every statement is idempotent:
running the full list again changes nothing and raises nothing. Statements must be run one by one
in autocommit mode (``replication.bootstrap.apply`` does that).

The fixed SQL lives in ``replication/schema/*.sql``:

* ``objects.sql``: the change log that replicates (full row images, merged by version on every
  peer, so delivery order never matters), tombstones, counter shards, conflicts, parked changes,
  watermarks and the purges they make safe;
* ``control.sql``: the write lease that fences a node (checked at statement start and at commit,
  without locks), the heartbeats of the control channel and the fence agent's state;
* ``install.sql``: ``install_table`` generates, per replicated table, the functions that stamp
  local writes, emit their images, and merge peers' images; ``install_dispatcher`` routes
  incoming changes to them.
* ``ddl.sql``: the migration history, the columns held back while a schema change travels through
  the writers, and the event triggers that refuse DDL which would break replication
  (``python -m ops schema apply``, ``replication.migrate``).

Those files state each object's current shape (a table: one ``CREATE TABLE``). What an earlier
release's writer needs to reach it is in ``schema/upgrades/NNNN_<name>.sql``, each run once, before
the files, and recorded in ``fraiseql_repl.schema_upgrades`` (``render_upgrades``).

Details and the reasoning are in ``replication/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources

from replication.model import ConflictPolicy, Node, TablePolicy, ident_suffix

__all__ = [
    "APP_COLUMNS",
    "FENCE_SQLSTATE",
    "AGENT_STATE_TABLE",
    "CONTROL_PUBLICATION",
    "HEARTBEAT_TABLE",
    "LEASE_TABLE",
    "PUBLICATION",
    "RDS_PARAMETERS",
    "REQUIRED_PARAMETERS",
    "SCHEMA",
    "VERSION_COLUMNS",
    "default_conninfo",
    "render_bootstrap",
    "render_conflict_objects",
    "render_lease",
    "render_local_objects",
    "render_publication",
    "render_slots",
    "render_subscriptions",
    "render_upgrades",
    "slot_name",
    "upgrades",
    "subscription_name",
    "control_subscription_name",
]

SCHEMA = "fraiseql_repl"
PUBLICATION = "fraiseql_repl"
#: Data changes travel on PUBLICATION; heartbeats on their own publication, subscriptions and slots,
#: so a large transaction in the data stream never delays them (see `replication.agent`).
CONTROL_PUBLICATION = "fraiseql_ctl"
#: One row per node, written only by that node's fence agent (see control.sql).
HEARTBEAT_TABLE = f"{SCHEMA}.heartbeats"
LEASE_TABLE = f"{SCHEMA}.lease"
#: ``granted_by`` of a lease a runbook grants during a transition (agents do not revoke it while warming up).
TRANSITION_GRANT = "transition:runbook"
AGENT_STATE_TABLE = f"{SCHEMA}.agent_state"
VERSION_COLUMNS = ("_repl_ts", "_repl_node", "_repl_born")
APP_COLUMNS = ("_repl_prev_ts", "_repl_prev_node")
# read_only_sql_transaction: drivers and FraiseQL already treat it as "this
# node does not take writes", which is what a fenced region means.
FENCE_SQLSTATE = "25006"
# admin_shutdown: what a client sees when a fenced writer's agent ended its unfinished write
# (``fraiseql_repl.end_writes`` terminates the session). Its outcome is unknown to the client: the
# end may have come while its commit was finishing.
ENDED_SQLSTATE = "57P01"

#: Server parameters every phase-B writer needs (PostgreSQL names).
REQUIRED_PARAMETERS: dict[str, str] = {
    "wal_level": "logical",
    # Lets PG18 report update_origin_differs/delete_origin_differs and log the
    # origin + commit time of conflicting rows; our LWW uses its own columns.
    "track_commit_timestamp": "on",
    # Per peer: a data slot and a control slot, both ways; room for 5 writers plus re-seeding.
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_logical_replication_workers": "16",
    "max_worker_processes": "32",
    # A dead peer's slot must not fill the disk: cap retained WAL per slot.
    "max_slot_wal_keep_size": "20GB",
    # Detect a dead link in seconds, not the 60 s default.
    "wal_sender_timeout": "30s",
    # A subscriber that has received nothing for half of this asks its walsender for a reply, which
    # the walsender sends even while it decodes (a large transaction: minutes, and nothing to send
    # until its commit; with the data links' wal_sender_timeout of 0 it sends no keepalive of its
    # own). So a data link whose apply worker is free to read hears its peer at least every 5 s,
    # within the agent's default stale_after (15 s); at 30 s a million-row transaction fenced
    # healthy regions (the long nemesis, 7 and 9 false fences). An apply worker held inside a merge
    # (a lock) asks nothing and stays silent, as the fence needs. Nothing received for 10 s ends the
    # connection (a dead peer), and the worker reconnects.
    "wal_receiver_timeout": "10s",
    # COMMIT PREPARED runs no trigger: a prepared transaction could commit a write after its region
    # was fenced. The lease check refuses every write where this is not 0.
    "max_prepared_transactions": "0",
    # NOTIFY needs no privilege, and a transaction's notifications are written after the lease check
    # without serving interrupts: the queue's size bounds that work (8 MB). The check refuses every
    # write where it is larger (control.sql, guard_problem).
    "max_notify_queue_pages": "1024",
}

#: The same, as RDS DB parameter group entries: name -> (value, apply method).
#: On RDS ``wal_level`` cannot be set directly: ``rds.logical_replication = 1``
#: sets ``wal_level = logical`` (and raises slot/sender limits); sizes in MB/ms.
RDS_PARAMETERS: dict[str, tuple[str, str]] = {
    "rds.logical_replication": ("1", "pending-reboot"),
    "track_commit_timestamp": ("1", "pending-reboot"),
    "max_replication_slots": ("20", "pending-reboot"),
    "max_wal_senders": ("20", "pending-reboot"),
    "max_logical_replication_workers": ("16", "pending-reboot"),
    "max_worker_processes": ("32", "pending-reboot"),
    "max_slot_wal_keep_size": ("20480", "immediate"),
    "wal_sender_timeout": ("30000", "immediate"),
    "wal_receiver_timeout": ("10000", "immediate"),
    "max_prepared_transactions": ("0", "pending-reboot"),
    "max_notify_queue_pages": ("1024", "pending-reboot"),
    # "all" records the statements DO blocks run, the subscriptions' connection strings among them
    # (the bootstrap refuses to subscribe under it).
    "pg_stat_statements.track": ("top", "immediate"),
}

# -- small helpers -------------------------------------------------------------------


def _lit(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qtable(t: TablePolicy) -> str:
    schema, table = t.qualified.split(".", 1)
    return f"{_ident(schema)}.{_ident(table)}"


def subscription_name(subscriber: Node, publisher: Node) -> str:
    """Name of ``subscriber``'s subscription to ``publisher`` (also the slot name on the publisher)."""
    return f"fq_{ident_suffix(subscriber.name)}_from_{ident_suffix(publisher.name)}"


def slot_name(subscriber: Node, publisher: Node) -> str:
    """The logical slot on ``publisher`` that ``subscriber`` streams from."""
    return subscription_name(subscriber, publisher)


def control_subscription_name(subscriber: Node, publisher: Node) -> str:
    """``subscriber``'s heartbeat subscription to ``publisher`` (also its slot name there)."""
    return f"fq_ctl_{ident_suffix(subscriber.name)}_from_{ident_suffix(publisher.name)}"


def _schema_file(name: str) -> str:
    return resources.files("replication").joinpath("schema", name).read_text(encoding="utf-8")


SCHEMA_FILES = ("objects.sql", "control.sql", "install.sql", "verify.sql", "ddl.sql")

_UPGRADE_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def upgrades() -> list[tuple[int, str]]:
    """The versioned upgrades of ``schema/upgrades``: (version, name), in order, numbered 1, 2, ..."""
    found = sorted(
        (int(m.group(1)), m.group(2))
        for f in resources.files("replication").joinpath("schema", "upgrades").iterdir()
        if (m := _UPGRADE_FILE.match(f.name))
    )
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"schema/upgrades must be numbered 0001, 0002, ... without gaps: {found}")
    return found


def _upgrade_file(version: int, name: str) -> str:
    return _schema_file(f"upgrades/{version:04d}_{name}.sql")


def schema_digest() -> str:
    """A digest of the fixed SQL every writer runs. The bootstrap re-runs when it changes, so that a
    release's new objects are on every writer before the new agents (which use them) are deployed."""
    import hashlib

    h = hashlib.sha256()
    names = list(SCHEMA_FILES) + [f"upgrades/{v:04d}_{n}.sql" for v, n in upgrades()]
    for name in names:
        h.update(name.encode() + b"\0" + _schema_file(name).encode() + b"\0")
    return h.hexdigest()


#: Taken (for the transaction) by the statements that decide and record the schema's version, so two
#: bootstraps at once run each upgrade once. The fence agent's loop lock is 'fraiseql_repl.agent'.
_SCHEMA_LOCK = "pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('fraiseql_repl.schema'))"


def render_upgrades() -> list[str]:
    """The schema's version, then every upgrade it lacks; each statement is one transaction.

    The first statement makes ``fraiseql_repl.schema_upgrades`` where it is missing. A writer with
    nothing in ``fraiseql_repl`` yet is a new install: it records every upgrade as ``installed`` (the
    install files make the current shapes) and none runs there. A writer with objects but no record
    is from a release before upgrades were versioned: all of them run. Each upgrade then runs at most
    once, in the transaction that records it (a failure leaves neither; the next bootstrap retries).
    Upgrades are PL/pgSQL statements (``IF`` where they must look first) and run before the install
    files, which define the functions against the shapes the upgrades leave.
    """
    known = upgrades()
    baseline = ", ".join(f"({v}, {_lit(n)}, 'installed')" for v, n in known)
    out = [
        "DO $do$\n"
        "DECLARE\n"
        "  fresh boolean;\n"
        "BEGIN\n"
        f"  PERFORM {_SCHEMA_LOCK};\n"
        f"  IF to_regclass('{SCHEMA}.schema_upgrades') IS NOT NULL THEN\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  fresh := NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"
        f"                       WHERE n.nspname = {_lit(SCHEMA)});\n"
        f"  CREATE TABLE {SCHEMA}.schema_upgrades (\n"
        "    version    integer PRIMARY KEY,\n"
        "    name       text NOT NULL,\n"
        "    how        text NOT NULL CHECK (how IN ('installed', 'upgraded')),\n"
        "    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()\n"
        "  );\n"
        f"  REVOKE ALL ON TABLE {SCHEMA}.schema_upgrades FROM PUBLIC;\n"
        + (f"  IF fresh THEN\n"
           f"    INSERT INTO {SCHEMA}.schema_upgrades (version, name, how) VALUES {baseline};\n"
           "  END IF;\n" if known else "")
        + "END $do$"
    ]
    for v, n in known:
        body = _upgrade_file(v, n).strip()
        if "$do$" in body:
            raise RuntimeError(f"upgrade {v:04d}_{n}.sql: write its statements without a $do$ block")
        out.append(
            f"DO $do$ BEGIN\n"
            f"PERFORM {_SCHEMA_LOCK};\n"
            f"IF EXISTS (SELECT 1 FROM {SCHEMA}.schema_upgrades WHERE version = {v}) THEN\n"
            "  RETURN;\n"
            "END IF;\n"
            f"{body}\n"
            f"INSERT INTO {SCHEMA}.schema_upgrades (version, name, how) VALUES ({v}, {_lit(n)}, 'upgraded');\n"
            "END $do$"
        )
    return out


def _node_function(node: Node) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {SCHEMA}.node_name() RETURNS text "
        f"LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$SELECT {_lit(node.name)}::text$f$"
    )


_DOLLAR = re.compile(r"\$[A-Za-z_]*\$")


def _split(script: str) -> list[str]:
    """Split a script of ``;``-terminated statements, keeping dollar-quoted bodies whole."""
    out: list[str] = []
    buf: list[str] = []
    open_tag: str | None = None
    for line in script.strip().splitlines():
        buf.append(line)
        if open_tag is None and line.lstrip().startswith("--"):
            continue
        for m in _DOLLAR.finditer(line):
            if open_tag is None:
                open_tag = m.group()
            elif m.group() == open_tag:
                open_tag = None
        if open_tag is None and line.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip().rstrip(";").strip()
            if stmt and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf):
                out.append(stmt)
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf).strip())
    return out


def _node_functions(node: Node, policy: ConflictPolicy) -> list[str]:
    if not 1 <= node.index <= policy.sequence_stride:
        raise ValueError(
            f"node {node.name} has index {node.index}; give every writer a distinct index from 1 to "
            f"{policy.sequence_stride} (it decides which identity values the writer hands out)"
        )
    return [
        f"CREATE OR REPLACE FUNCTION {SCHEMA}.{fn}() RETURNS {typ} LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        f"AS $f$SELECT {value}::{typ}$f$"
        for fn, typ, value in (
            ("node_name", "text", _lit(node.name)),
            ("node_index", "integer", str(node.index)),
            ("sequence_stride", "integer", str(policy.sequence_stride)),
        )
    ]


def render_members(nodes: Sequence[Node]) -> list[str]:
    """The current members of the mesh: purges wait for every one of them."""
    names = ", ".join(f"({_lit(n.name)})" for n in nodes)
    keep = ", ".join(_lit(n.name) for n in nodes)
    return [
        f"INSERT INTO {SCHEMA}.members (name) VALUES {names} ON CONFLICT DO NOTHING",
        f"DELETE FROM {SCHEMA}.members WHERE name NOT IN ({keep})",
    ]


def render_install_tables(policy: ConflictPolicy) -> list[str]:
    """Install (or re-install after a schema change) every replicated table, then the dispatcher."""
    out = []
    for t in policy.all_tables():
        cols = "ARRAY[" + ", ".join(_lit(c) for c in t.columns) + "]::text[]" if t.columns else "'{}'::text[]"
        out.append(f"SELECT {SCHEMA}.install_table({_lit(_qtable(t))}::regclass, {_lit(t.strategy)}, {cols})")
    out.append(f"SELECT {SCHEMA}.install_dispatcher()")
    return out


def render_conflict_objects(policy: ConflictPolicy, node: Node, nodes: Sequence[Node] = (), *,
                            transition_lease_s: float | None = None) -> list[str]:
    """Schema ``fraiseql_repl``: the change log, bookkeeping, lease and control objects, and every
    replicated table installed with its generated functions and triggers.

    The tables named in ``policy`` must already exist (the application's own migrations create
    them) and have a primary key.
    """
    stmts = [f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"]
    stmts += render_upgrades()
    stmts += _node_functions(node, policy)
    stmts += _split(_schema_file("objects.sql"))
    stmts += _split(_schema_file("control.sql"))
    if transition_lease_s is not None:
        # A live primary becoming a writer keeps taking writes while the mesh forms: the lease is
        # granted before the first guard exists, and its agent takes it over. Only on the first
        # install (no lease was ever granted here): a re-run never unfences anything.
        stmts += render_lease(transition_lease_s, "transition: a primary becoming a writer", TRANSITION_GRANT,
                              only_if_never_granted=True)
    stmts += _split(_schema_file("install.sql"))
    stmts += _split(_schema_file("verify.sql"))
    stmts += _split(_schema_file("ddl.sql"))
    stmts += render_members(nodes or [node])
    stmts += render_install_tables(policy)
    # Nobody runs the schema's functions but their owner (and, by grant, the fence agent: roles.py).
    # Triggers fire without the privilege; without it, nobody can attach a SECURITY DEFINER trigger
    # function (which writes the change log as its owner) to a table of their own.
    stmts += [f"REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} FROM PUBLIC",
              f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"]
    return stmts


def render_lease(valid_s: float | None, reason: str, granted_by: str = "", *,
                 only_if_never_granted: bool = False) -> list[str]:
    """Grant this node a write lease for ``valid_s`` seconds of its own clock, or revoke it (``None``).

    ``valid_s = inf`` grants a lease that never runs out (tests, or an operator overriding a dead
    agent knowingly). Neither form waits for writers: the guard reads the lease without a lock, and
    a transaction that commits after the lease ran out is refused at commit. With
    ``only_if_never_granted``, nothing happens where a lease was ever granted (a re-run of the first
    install never unfences anything).
    """
    if valid_s is None:
        until = "'-infinity'::timestamptz"
    elif valid_s == float("inf"):
        until = "'infinity'::timestamptz"
    else:
        until = f"clock_timestamp() + make_interval(secs => {float(valid_s)!r})"
    call = f"{SCHEMA}.set_lease({until}, {_lit(reason)}, {_lit(granted_by)})"
    if only_if_never_granted:
        return [f"SELECT {call} FROM {LEASE_TABLE} WHERE singleton AND instance_started_at IS NULL AND granted_by = ''"]
    return [f"SELECT {call}"]


#: What the data publication carries: change images and counter shards. The application's tables
#: themselves are not published: their changes travel as images.
DATA_TABLES = (f"{SCHEMA}.changes", f"{SCHEMA}.shards")
#: The control publication: heartbeats, and the verify rounds' digests.
CONTROL_TABLES = (HEARTBEAT_TABLE, f"{SCHEMA}.digests", f"{SCHEMA}.digest_keys")


def _published(policy: ConflictPolicy) -> list[str]:
    return list(DATA_TABLES)


def _publication(name: str, tables: Sequence[str], publish: str) -> str:
    listing = ", ".join(tables)
    wanted = "ARRAY[" + ", ".join(_lit(t) + "::regclass::oid" for t in tables) + "]"
    return (
        f"DO $do$ BEGIN\n"
        f"  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {_lit(name)}) THEN\n"
        f"    CREATE PUBLICATION {name} FOR TABLE {listing}\n"
        f"      WITH (publish = {_lit(publish)});\n"
        f"  ELSIF (SELECT coalesce(array_agg(pr.prrelid ORDER BY pr.prrelid), '{{}}')\n"
        f"           FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid\n"
        f"          WHERE p.pubname = {_lit(name)})\n"
        f"        IS DISTINCT FROM (SELECT array_agg(x ORDER BY x) FROM unnest({wanted}) x) THEN\n"
        f"    ALTER PUBLICATION {name} SET TABLE {listing};\n"
        f"  END IF;\n"
        f"END $do$"
    )


def render_publication(policy: ConflictPolicy) -> list[str]:
    """The data publication (change images and counter shards) and the control publication
    (heartbeats only).

    Neither publishes DELETE or TRUNCATE: the change log and the shards are purged locally on each
    node, and a TRUNCATE of a replicated table is refused by its guard.
    """
    return [
        _publication(PUBLICATION, _published(policy), "insert, update"),
        _publication(CONTROL_PUBLICATION, list(CONTROL_TABLES), "insert, update"),
    ]


def render_slots(node: Node, peers: Sequence[Node]) -> list[str]:
    """On ``node`` (as publisher): one logical slot per peer that subscribes to it.

    Slots are created here, explicitly, so that ``CREATE SUBSCRIPTION`` can
    run with ``create_slot = false`` inside an idempotent DO block (with
    ``create_slot = true`` it refuses to run in a transaction block).
    """
    out = []
    for peer in _others(node, peers):
        for slot in (slot_name(peer, node), control_subscription_name(peer, node)):
            out.append(
                f"DO $do$ BEGIN\n"
                f"  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = {_lit(slot)}) THEN\n"
                f"    PERFORM pg_catalog.pg_create_logical_replication_slot({_lit(slot)}, 'pgoutput');\n"
                f"  END IF;\n"
                f"END $do$"
            )
    return out


def default_conninfo(
    password: str | None = None, *, sslmode: str | None = "require", connect_timeout: int = 10,
    channel_binding: str | None = None,
) -> Callable[[Node], str]:
    """A ``conninfo(peer)`` function building libpq conninfo strings from the model.

    Leave ``password`` out of anything that becomes SQL text: ``render_subscriptions`` has the
    server add the peer's password from the session setting that ``replication.roles`` binds.
    ``channel_binding=require`` makes SCRAM prove that the server holds the password verifier over
    this very TLS session: server identity where no CA file can be given (a subscription on RDS).
    """

    def conninfo(peer: Node) -> str:
        parts = [
            f"host={peer.host}",
            f"port={peer.port}",
            f"dbname={peer.dbname}",
            f"user={peer.user}",
            f"connect_timeout={connect_timeout}",
        ]
        if sslmode:
            parts.append(f"sslmode={sslmode}")
        if channel_binding:
            parts.append(f"channel_binding={channel_binding}")
        if password is not None:
            parts.append("password='" + password.replace("\\", "\\\\").replace("'", "\\'") + "'")
        return " ".join(parts)

    return conninfo


def _others(node: Node, peers: Sequence[Node]) -> list[Node]:
    return [p for p in peers if p.name != node.name]


#: The control link (heartbeats, verify rounds) streams large transactions while they run
#: (PostgreSQL 14+), so its walsender never replays one at its commit (it touches no control table:
#: there is nothing to apply). The data link does not stream: its apply worker then reads a large
#: transaction message by message as it applies it, so the link keeps receiving (the fence agent
#: takes a silent data link for a stalled one). Streamed, the transaction would be applied at its
#: commit from a spool file, or by a parallel worker the leader waits for, with nothing received
#: meanwhile. (PostgreSQL 18's default is parallel, 16's off: both are set explicitly.)
DATA_STREAMING = "off"
CONTROL_STREAMING = "on"
#: The control link's walsender decodes the same WAL as the data links, including every row of a
#: large transaction that it then discards (no control table in it). With the default 64 MB of
#: decoding memory, a transaction below that size is held back and replayed at its commit, and
#: every heartbeat committed after it waits for the replay: seconds for a few hundred thousand
#: rows, on every link out of the writer that ran it. With 64 kB the walsender streams (and
#: discards) such a transaction in small pieces as it is written, so a heartbeat waits for at
#: most 64 kB of decoding. (A session setting of the walsender, sent in the connection string.)
CONTROL_WALSENDER_OPTIONS = " options='-c logical_decoding_work_mem=64kB'"


def _data_walsender_options(dead_link_ms: int) -> str:
    idle_s = max(1, dead_link_ms // 3000)
    interval_s = max(1, dead_link_ms // 6000)
    return (" options='-c wal_sender_timeout=0"
            f" -c tcp_user_timeout={dead_link_ms}"
            f" -c tcp_keepalives_idle={idle_s} -c tcp_keepalives_interval={interval_s} -c tcp_keepalives_count=4'")


#: The data link's walsender has no ``wal_sender_timeout``. That timeout waits for a reply to a
#: keepalive, and the apply worker sends the reply when it reads the keepalive: behind everything
#: already sent. So a subscriber that merged slowly (a large transaction under load) looked dead,
#: its walsender ended the connection, and the transaction was sent again from its start, again
#: and again. What the timeout was for, a peer that has gone away, is left to TCP, whose
#: acknowledgements do not queue behind data: ``tcp_user_timeout`` ends the connection when sent
#: data stays unacknowledged, or the receive window stays shut, that long, and keepalives do when
#: the link is idle, both within the server's ``wal_sender_timeout`` (30 s). A peer that is merging
#: keeps reading, so its window opens again and its link keeps receiving (``pg_stat_subscription``,
#: what the fence agent reads); one that reads nothing for 30 s with data waiting (a merge held on
#: a lock) is ended as a dead peer is. Session settings of the walsender, sent in the connection
#: string (PostgreSQL 12+).
DATA_WALSENDER_OPTIONS = _data_walsender_options(int(REQUIRED_PARAMETERS["wal_sender_timeout"].removesuffix("s")) * 1000)


def render_subscriptions(
    node: Node, peers: Sequence[Node], conninfo: Callable[[Node], str] | None = None
) -> list[str]:
    """On ``node``: one subscription per peer, ``origin = none, copy_data = false``.

    ``origin = none`` makes each peer send only changes that originated on it,
    so changes do not loop around the mesh. The final ``REFRESH PUBLICATION``
    statements pick up tables added to the publication later (they connect to
    the peer, so every peer must be up and bootstrapped — run the local objects
    on all nodes first, then the subscriptions on all nodes).

    The peer's password is never in these statements: when the session carries one for the peer's
    user (``fraiseql_repl.pw_<user>``, see ``replication.roles``), the server appends it to the
    conninfo itself, and an error is re-raised without it. A changed password (a rotation)
    changes the conninfo, so re-running these statements re-points the subscription.
    """
    make = conninfo or default_conninfo()
    out = []
    refresh = []
    for peer in _others(node, peers):
        setting = _lit(f"{SCHEMA}.pw_{peer.user}")
        for sub, publication, ci, streaming in (
            (subscription_name(node, peer), PUBLICATION, make(peer) + DATA_WALSENDER_OPTIONS, DATA_STREAMING),
            (control_subscription_name(node, peer), CONTROL_PUBLICATION, make(peer) + CONTROL_WALSENDER_OPTIONS,
             CONTROL_STREAMING),
        ):
            # Not connect = false (which would keep the statement off the network): it always warns
            # "subscription was created, but is not connected", and the warning's CONTEXT, in the
            # server log, is the statement, password included.
            options = (f"origin = none, copy_data = false, create_slot = false, slot_name = {_lit(sub)}, "
                       f"enabled = true, disable_on_error = false, streaming = {streaming}")
            if publication == PUBLICATION:  # the data link's merge marker, before its first merge (objects.sql)
                out.append(f"SELECT {SCHEMA}.make_merge_marker({_lit(sub)})")
            out.append(
                "DO $do$ DECLARE\n"
                f"  pw text := nullif(current_setting({setting}, true), '');\n"
                f"  ci text := {_lit(ci)} || CASE WHEN pw IS NULL THEN '' ELSE\n"
                "    ' password=''' || replace(replace(pw, '\\', '\\\\'), '''', '\\''') || '''' END;\n"
                "BEGIN\n"
                # The connection string below goes into the statement's text, and the text of a
                # statement a DO block runs goes into the CONTEXT of any message raised meanwhile. So:
                # no notice or warning reaches the client; a lock wait ends (an error, caught below)
                # before the server would log it as long; a cancel is caught too (OTHERS does not).
                "  PERFORM set_config('client_min_messages', 'error', true);\n"
                "  PERFORM set_config('lock_timeout', greatest(1, (extract(epoch FROM\n"
                "    pg_catalog.current_setting('deadlock_timeout')::interval) * 500)::bigint) || 'ms', true);\n"
                # Refuse where a statistics view or the log would record statements run inside this block.
                "  IF pw IS NOT NULL AND (coalesce(current_setting('pg_stat_statements.track', true), '') = 'all'\n"
                "      OR coalesce(current_setting('auto_explain.log_nested_statements', true), '') = 'on') THEN\n"
                "    RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'pg_stat_statements.track = all (or "
                "auto_explain.log_nested_statements = on) would record the replication password',\n"
                "      HINT = 'Set pg_stat_statements.track to top and auto_explain.log_nested_statements to off "
                "in the parameter group, then run the step again.';\n"
                "  END IF;\n"
                "  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s\n"
                "                 JOIN pg_catalog.pg_database d ON d.oid = s.subdbid\n"
                f"                 WHERE s.subname = {_lit(sub)} AND d.datname = current_database()) THEN\n"
                f"    EXECUTE format('CREATE SUBSCRIPTION {sub} CONNECTION %L PUBLICATION {publication} WITH (%s)',\n"
                f"                   ci, {_lit(options)});\n"
                f"  ELSIF (SELECT subconninfo FROM pg_catalog.pg_subscription WHERE subname = {_lit(sub)})\n"
                "        IS DISTINCT FROM ci THEN\n"
                f"    EXECUTE format('ALTER SUBSCRIPTION {sub} CONNECTION %L', ci);\n"
                "  END IF;\n"
                "EXCEPTION WHEN query_canceled THEN\n"
                f"  RAISE EXCEPTION 'fraiseql_repl: subscription {sub} to %: canceled (statement or lock timeout, or "
                f"the client)', {_lit(peer.name)} USING ERRCODE = '57014';\n"
                "WHEN OTHERS THEN\n"
                # Re-raised here, the error's CONTEXT is this line, not the statement with the password.
                f"  RAISE EXCEPTION 'fraiseql_repl: subscription {sub} to %: %', {_lit(peer.name)},\n"
                "    CASE WHEN pw IS NULL THEN SQLERRM ELSE replace(SQLERRM, pw, '[redacted]') END USING ERRCODE = SQLSTATE;\n"
                "END $do$"
            )
            refresh.append(f"ALTER SUBSCRIPTION {sub} SET (streaming = {streaming})")
            refresh.append(f"ALTER SUBSCRIPTION {sub} REFRESH PUBLICATION WITH (copy_data = false)")
    return out + refresh


def render_local_objects(node: Node, peers: Sequence[Node], policy: ConflictPolicy, *,
                         transition_lease_s: float | None = None) -> list[str]:
    """Phase 1 of the bootstrap: everything that needs no peer (objects, publication, slots)."""
    return (render_conflict_objects(policy, node, peers, transition_lease_s=transition_lease_s)
            + render_publication(policy) + render_slots(node, peers))


def render_bootstrap(
    node: Node,
    peers: Sequence[Node],
    policy: ConflictPolicy,
    conninfo: Callable[[Node], str] | None = None,
) -> list[str]:
    """The full ordered statement list for ``node``: local objects, then subscriptions.

    For a new mesh, run ``render_local_objects`` on every node before the
    subscriptions of any node (``replication.bootstrap.bootstrap_mesh`` does);
    re-running this list on a bootstrapped node is a no-op.
    """
    return render_local_objects(node, peers, policy) + render_subscriptions(node, peers, conninfo)
