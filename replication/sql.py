"""SQL that phase B deploys on every writer, rendered from ``replication.model``.

Every function here is pure and returns a list of SQL statements. Every
statement is idempotent: running the full list again changes nothing and
raises nothing (``IF NOT EXISTS``, ``CREATE OR REPLACE``, DO blocks that look
at the catalogs first). Statements must be run one by one in autocommit mode
(``replication.bootstrap.apply`` does that).

How conflicts are decided (details in ``replication/README.md``):

* Local writes fire the ``fraiseql_repl_local*`` triggers (normal triggers fire
  only when ``session_replication_role`` is ``origin``/``local``); they stamp
  each row with a hybrid version ``(_repl_ts, _repl_node)`` where
  ``_repl_ts = greatest(clock_timestamp(), previous _repl_ts + 1 µs)``, so a
  write that has seen a version is always newer than it even under clock skew.
* The logical replication apply worker runs with
  ``session_replication_role = replica``: only ``ENABLE REPLICA`` / ``ENABLE
  ALWAYS`` triggers fire there. The ``fraiseql_repl_apply*`` triggers are
  ``ENABLE REPLICA`` and decide per strategy whether an incoming change is
  kept, merged or discarded. PostgreSQL 18 itself only logs/counts conflicts
  (``update_origin_differs`` is applied regardless, ``insert_exists`` stops
  the worker until fixed by hand).
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
    "slot_name",
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
AGENT_STATE_TABLE = f"{SCHEMA}.agent_state"
VERSION_COLUMNS = ("_repl_ts", "_repl_node")
APP_COLUMNS = ("_repl_prev_ts", "_repl_prev_node")
# read_only_sql_transaction: drivers and FraiseQL already treat it as "this
# node does not take writes", which is what a fenced region means.
FENCE_SQLSTATE = "25006"

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
    "wal_receiver_timeout": "30s",
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
    "wal_receiver_timeout": ("30000", "immediate"),
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


# -- shared objects -------------------------------------------------------------------

_TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.tombstones (
    table_name text NOT NULL,
    pk         jsonb NOT NULL,
    ts         timestamptz NOT NULL,
    node       text NOT NULL,
    PRIMARY KEY (table_name, pk)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.counter_shards (
    table_name text NOT NULL,
    pk         jsonb NOT NULL,
    col        text NOT NULL,
    node       text NOT NULL,
    amount     numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (table_name, pk, col, node)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.conflicts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    table_name  text NOT NULL,
    pk          jsonb NOT NULL,
    kind        text NOT NULL,
    local_row   jsonb,
    remote_row  jsonb,
    remote_node text,
    resolved_at timestamptz
);
CREATE INDEX IF NOT EXISTS conflicts_open
    ON {SCHEMA}.conflicts (table_name, pk) WHERE resolved_at IS NULL;
CREATE TABLE IF NOT EXISTS {SCHEMA}.resolutions (
    table_name text NOT NULL,
    kind       text NOT NULL,
    n          bigint NOT NULL DEFAULT 0,
    last_at    timestamptz,
    PRIMARY KEY (table_name, kind)
);
"""

_HELPERS = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.newer(a_ts timestamptz, a_node text, b_ts timestamptz, b_node text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
    -- Total order on versions: timestamp, then node name in C collation so
    -- every node breaks ties the same way. A missing version is the oldest.
    SELECT CASE
        WHEN b_ts IS NULL THEN a_ts IS NOT NULL
        WHEN a_ts IS NULL THEN false
        ELSE a_ts > b_ts OR (a_ts = b_ts AND coalesce(a_node, '') COLLATE "C" > coalesce(b_node, '') COLLATE "C")
    END
$f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.next_ts(prev timestamptz)
RETURNS timestamptz LANGUAGE sql VOLATILE AS $f$
    SELECT greatest(pg_catalog.clock_timestamp(), prev + interval '1 microsecond')
$f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.pk_cols(rel regclass)
RETURNS text[] LANGUAGE sql STABLE AS $f$
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
$f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.pk_of(rel regclass, r jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT jsonb_object_agg(c, r -> c) FROM unnest({SCHEMA}.pk_cols(rel)) AS c
$f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.pk_where(rel regclass)
RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT string_agg(format('t.%I = ($1).%I', c, c), ' AND ')
    FROM unnest({SCHEMA}.pk_cols(rel)) AS c
$f$;

-- Columns an overwrite may assign: not the key, not generated, not GENERATED ALWAYS identity.
CREATE OR REPLACE FUNCTION {SCHEMA}.value_cols(rel regclass)
RETURNS text[] LANGUAGE sql STABLE AS $f$
    SELECT array_agg(a.attname::text ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attgenerated = '' AND a.attidentity <> 'a'
      AND a.attname::text <> ALL (coalesce({SCHEMA}.pk_cols(rel), '{{}}'))
$f$;

-- The local row with the same key as r, locked, as jsonb (NULL when absent).
CREATE OR REPLACE FUNCTION {SCHEMA}.current_row(rel regclass, r anyelement)
RETURNS jsonb LANGUAGE plpgsql AS $f$
DECLARE cur jsonb;
BEGIN
    EXECUTE format('SELECT to_jsonb(t) FROM %s t WHERE %s FOR UPDATE', rel, {SCHEMA}.pk_where(rel))
        INTO cur USING r;
    RETURN cur;
END $f$;

-- Replace every value column of the row with r's key by r's values.
CREATE OR REPLACE FUNCTION {SCHEMA}.overwrite(rel regclass, r anyelement)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE cols text[] := {SCHEMA}.value_cols(rel);
BEGIN
    EXECUTE format('UPDATE %s t SET (%s) = ROW(%s) WHERE %s', rel,
        (SELECT string_agg(format('%I', c), ', ') FROM unnest(cols) c),
        (SELECT string_agg(format('($1).%I', c), ', ') FROM unnest(cols) c),
        {SCHEMA}.pk_where(rel)) USING r;
END $f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.note(tname text, kind text)
RETURNS void LANGUAGE sql AS $f$
    INSERT INTO {SCHEMA}.resolutions AS r (table_name, kind, n, last_at)
    VALUES (tname, kind, 1, pg_catalog.clock_timestamp())
    ON CONFLICT (table_name, kind) DO UPDATE SET n = r.n + 1, last_at = excluded.last_at
$f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.tombstone_of(tname text, key jsonb)
RETURNS {SCHEMA}.tombstones LANGUAGE sql STABLE AS $f$
    SELECT * FROM {SCHEMA}.tombstones WHERE table_name = tname AND pk = key
$f$;

-- Tombstones are an LWW register per key: keep the newest (ts, node).
CREATE OR REPLACE FUNCTION {SCHEMA}.put_tombstone(tname text, key jsonb, t timestamptz, n text)
RETURNS void LANGUAGE sql AS $f$
    INSERT INTO {SCHEMA}.tombstones AS x (table_name, pk, ts, node) VALUES (tname, key, t, n)
    ON CONFLICT (table_name, pk) DO UPDATE SET ts = excluded.ts, node = excluded.node
    WHERE {SCHEMA}.newer(excluded.ts, excluded.node, x.ts, x.node)
$f$;
"""

_TRIGGER_FUNCTIONS = f"""
-- LWW/app/counter tables, local INSERT/UPDATE: stamp the hybrid version.
CREATE OR REPLACE FUNCTION {SCHEMA}.stamp_local()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    tname text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    strategy text := TG_ARGV[0];
    tomb {SCHEMA}.tombstones;
    key jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        key := {SCHEMA}.pk_of(TG_RELID, to_jsonb(NEW));
        tomb := {SCHEMA}.tombstone_of(tname, key);
        -- Re-inserting a deleted key: the new row must beat the delete.
        NEW._repl_ts := {SCHEMA}.next_ts(tomb.ts);
        IF strategy = 'counter' AND tomb.ts IS NOT NULL THEN
            DELETE FROM {SCHEMA}.counter_shards WHERE table_name = tname AND pk = key;
        END IF;
    ELSE
        NEW._repl_ts := {SCHEMA}.next_ts(OLD._repl_ts);
    END IF;
    NEW._repl_node := {SCHEMA}.node_name();
    IF strategy = 'app' THEN
        IF TG_OP = 'UPDATE' AND current_setting('fraiseql_repl.resolving', true) = 'on' THEN
            -- An application resolution: newer than every version it was shown.
            NEW._repl_ts := greatest(NEW._repl_ts, (
                SELECT max((remote_row ->> '_repl_ts')::timestamptz) + interval '1 microsecond'
                FROM {SCHEMA}.conflicts
                WHERE table_name = tname AND pk = {SCHEMA}.pk_of(TG_RELID, to_jsonb(NEW))
                  AND resolved_at IS NULL));
            NEW._repl_prev_ts := NULL;
            NEW._repl_prev_node := '*';
            UPDATE {SCHEMA}.conflicts SET resolved_at = clock_timestamp()
            WHERE table_name = tname AND pk = {SCHEMA}.pk_of(TG_RELID, to_jsonb(NEW))
              AND resolved_at IS NULL;
        ELSIF TG_OP = 'UPDATE' THEN
            NEW._repl_prev_ts := OLD._repl_ts;
            NEW._repl_prev_node := OLD._repl_node;
        ELSE
            NEW._repl_prev_ts := NULL;
            NEW._repl_prev_node := NULL;
        END IF;
    END IF;
    RETURN NEW;
END $f$;

-- Counter tables, local INSERT/UPDATE, AFTER the row change: add the delta to
-- this node's shard. AFTER, because with INSERT ... ON CONFLICT DO UPDATE the
-- BEFORE INSERT trigger also fires for the insert that did not happen.
CREATE OR REPLACE FUNCTION {SCHEMA}.counter_local()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    tname text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    key jsonb := {SCHEMA}.pk_of(TG_RELID, to_jsonb(NEW));
    c text;
    delta numeric;
BEGIN
    FOREACH c IN ARRAY TG_ARGV LOOP
        delta := coalesce((to_jsonb(NEW) ->> c)::numeric, 0);
        IF TG_OP = 'UPDATE' THEN
            delta := delta - coalesce((to_jsonb(OLD) ->> c)::numeric, 0);
        END IF;
        IF delta <> 0 THEN
            -- Only this node ever writes its own shard: shards never conflict.
            INSERT INTO {SCHEMA}.counter_shards AS s (table_name, pk, col, node, amount)
            VALUES (tname, key, c, {SCHEMA}.node_name(), delta)
            ON CONFLICT (table_name, pk, col, node) DO UPDATE SET amount = s.amount + excluded.amount;
        END IF;
    END LOOP;
    RETURN NULL;
END $f$;

-- Set tables, local INSERT/UPDATE: an add is tagged with its version; updates are refused.
CREATE OR REPLACE FUNCTION {SCHEMA}.set_local()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE tomb {SCHEMA}.tombstones;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: %I.%I is a replicated set: insert or delete elements, do not update them',
                             TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    tomb := {SCHEMA}.tombstone_of(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, {SCHEMA}.pk_of(TG_RELID, to_jsonb(NEW)));
    NEW._repl_ts := {SCHEMA}.next_ts(tomb.ts);
    NEW._repl_node := {SCHEMA}.node_name();
    RETURN NEW;
END $f$;

-- Local DELETE on any strategy: leave a tombstone (replicated before the delete,
-- same transaction). Sets record the add tag they removed (observed remove);
-- other strategies record a version newer than the deleted row.
CREATE OR REPLACE FUNCTION {SCHEMA}.delete_local()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    tname text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    key jsonb := {SCHEMA}.pk_of(TG_RELID, to_jsonb(OLD));
BEGIN
    IF TG_ARGV[0] = 'set' THEN
        PERFORM {SCHEMA}.put_tombstone(tname, key, OLD._repl_ts, OLD._repl_node);
    ELSE
        PERFORM {SCHEMA}.put_tombstone(tname, key, {SCHEMA}.next_ts(OLD._repl_ts), {SCHEMA}.node_name());
    END IF;
    IF TG_ARGV[0] = 'counter' THEN
        DELETE FROM {SCHEMA}.counter_shards WHERE table_name = tname AND pk = key;
    END IF;
    RETURN OLD;
END $f$;

-- Sum of all nodes' contributions, patched into the row's counter columns.
CREATE OR REPLACE FUNCTION {SCHEMA}.with_counter_sums(r anyelement, tname text, key jsonb, cols text[])
RETURNS anyelement LANGUAGE sql STABLE AS $f$
    SELECT jsonb_populate_record(r, jsonb_object_agg(c, coalesce((
        SELECT sum(s.amount) FROM {SCHEMA}.counter_shards s
        WHERE s.table_name = tname AND s.pk = key AND s.col = c), 0)))
    FROM unnest(cols) AS c
$f$;

-- Apply side (ENABLE REPLICA): LWW, counter and app tables.
CREATE OR REPLACE FUNCTION {SCHEMA}.apply_remote()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    tname text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    strategy text := TG_ARGV[0];
    key jsonb := {SCHEMA}.pk_of(TG_RELID, to_jsonb(NEW));
    tomb {SCHEMA}.tombstones;
    cur jsonb;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF strategy = 'app' THEN
            IF NEW._repl_prev_node = '*' THEN
                IF {SCHEMA}.newer(NEW._repl_ts, NEW._repl_node, OLD._repl_ts, OLD._repl_node) THEN
                    UPDATE {SCHEMA}.conflicts SET resolved_at = clock_timestamp()
                    WHERE table_name = tname AND pk = key AND resolved_at IS NULL;
                    RETURN NEW;
                END IF;
            ELSIF NEW._repl_prev_ts IS NOT DISTINCT FROM OLD._repl_ts
                  AND NEW._repl_prev_node IS NOT DISTINCT FROM OLD._repl_node THEN
                RETURN NEW;  -- fast-forward: the writer had seen our version
            END IF;
            IF (NEW._repl_ts, NEW._repl_node) IS DISTINCT FROM (OLD._repl_ts, OLD._repl_node) THEN
                INSERT INTO {SCHEMA}.conflicts (table_name, pk, kind, local_row, remote_row, remote_node)
                VALUES (tname, key, 'update', to_jsonb(OLD), to_jsonb(NEW), NEW._repl_node);
                PERFORM {SCHEMA}.note(tname, 'app_conflict_logged');
            END IF;
            RETURN NULL;  -- keep the local row until the application resolves
        END IF;
        IF NOT {SCHEMA}.newer(NEW._repl_ts, NEW._repl_node, OLD._repl_ts, OLD._repl_node) THEN
            IF (NEW._repl_ts, NEW._repl_node) IS DISTINCT FROM (OLD._repl_ts, OLD._repl_node) THEN
                PERFORM {SCHEMA}.note(tname, 'lww_kept_local');
            END IF;
            IF strategy <> 'counter' THEN
                RETURN NULL;
            END IF;
            NEW := OLD;  -- counter: keep local plain columns, still refresh the sums
        END IF;
        IF strategy = 'counter' THEN
            NEW := {SCHEMA}.with_counter_sums(NEW, tname, key, TG_ARGV[1:]);
        END IF;
        RETURN NEW;
    END IF;

    -- INSERT
    tomb := {SCHEMA}.tombstone_of(tname, key);
    IF tomb.ts IS NOT NULL AND NOT {SCHEMA}.newer(NEW._repl_ts, NEW._repl_node, tomb.ts, tomb.node) THEN
        PERFORM {SCHEMA}.note(tname, 'insert_after_delete_dropped');
        RETURN NULL;
    END IF;
    -- Two apply workers (one per peer) may insert the same new key at once;
    -- serialise them so the second one merges instead of hitting insert_exists.
    PERFORM pg_advisory_xact_lock(hashtextextended(tname || key::text, 0));
    cur := {SCHEMA}.current_row(TG_RELID, NEW);
    IF cur IS NULL THEN
        IF strategy = 'counter' THEN
            NEW := {SCHEMA}.with_counter_sums(NEW, tname, key, TG_ARGV[1:]);
        END IF;
        RETURN NEW;
    END IF;
    -- insert_exists: merge instead of stopping the apply worker.
    IF strategy = 'app' THEN
        IF (NEW._repl_ts, NEW._repl_node) IS DISTINCT FROM
           ((cur ->> '_repl_ts')::timestamptz, cur ->> '_repl_node') THEN
            INSERT INTO {SCHEMA}.conflicts (table_name, pk, kind, local_row, remote_row, remote_node)
            VALUES (tname, key, 'insert', cur, to_jsonb(NEW), NEW._repl_node);
            PERFORM {SCHEMA}.note(tname, 'app_conflict_logged');
        END IF;
        RETURN NULL;
    END IF;
    IF {SCHEMA}.newer(NEW._repl_ts, NEW._repl_node, (cur ->> '_repl_ts')::timestamptz, cur ->> '_repl_node') THEN
        PERFORM {SCHEMA}.overwrite(TG_RELID, NEW);  -- re-enters this trigger as an UPDATE
        PERFORM {SCHEMA}.note(tname, 'insert_merged_remote_won');
    ELSIF strategy = 'counter' THEN
        PERFORM {SCHEMA}.overwrite(TG_RELID, jsonb_populate_record(NEW, cur));  -- refresh sums
        PERFORM {SCHEMA}.note(tname, 'insert_merged_local_won');
    ELSE
        PERFORM {SCHEMA}.note(tname, 'insert_merged_local_won');
    END IF;
    RETURN NULL;
END $f$;

-- Apply side for sets: union of adds (the newest tag of an element wins),
-- an add survives a remove that did not observe it (tag newer than the tombstone).
CREATE OR REPLACE FUNCTION {SCHEMA}.set_apply()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    tname text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    r record;
    tomb {SCHEMA}.tombstones;
    cur jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    tomb := {SCHEMA}.tombstone_of(tname, {SCHEMA}.pk_of(TG_RELID, to_jsonb(r)));
    IF TG_OP = 'DELETE' THEN
        IF tomb.ts IS NOT NULL AND {SCHEMA}.newer(OLD._repl_ts, OLD._repl_node, tomb.ts, tomb.node) THEN
            PERFORM {SCHEMA}.note(tname, 'set_add_wins_over_remove');
            RETURN NULL;
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RETURN NEW;  -- only our own merge below updates set rows (origins refuse updates)
    END IF;
    IF tomb.ts IS NOT NULL AND NOT {SCHEMA}.newer(NEW._repl_ts, NEW._repl_node, tomb.ts, tomb.node) THEN
        PERFORM {SCHEMA}.note(tname, 'set_add_already_removed');
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(tname || {SCHEMA}.pk_of(TG_RELID, to_jsonb(r))::text, 0));
    cur := {SCHEMA}.current_row(TG_RELID, NEW);
    IF cur IS NULL THEN
        RETURN NEW;
    END IF;
    IF {SCHEMA}.newer(NEW._repl_ts, NEW._repl_node, (cur ->> '_repl_ts')::timestamptz, cur ->> '_repl_node') THEN
        PERFORM {SCHEMA}.overwrite(TG_RELID, NEW);
    END IF;
    PERFORM {SCHEMA}.note(tname, 'set_add_merged');
    RETURN NULL;
END $f$;

-- Apply side for the replicated bookkeeping tables.
CREATE OR REPLACE FUNCTION {SCHEMA}.tombstones_apply()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF {SCHEMA}.newer(NEW.ts, NEW.node, OLD.ts, OLD.node) THEN RETURN NEW; END IF;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM {SCHEMA}.tombstones WHERE table_name = NEW.table_name AND pk = NEW.pk) THEN
        UPDATE {SCHEMA}.tombstones SET ts = NEW.ts, node = NEW.node
        WHERE table_name = NEW.table_name AND pk = NEW.pk;  -- the UPDATE branch keeps the newest
        RETURN NULL;
    END IF;
    RETURN NEW;
END $f$;

-- A shard changed by replication: re-sum the counter row. The shard row is
-- written after the counter row at its origin, so it arrives after it too.
CREATE OR REPLACE FUNCTION {SCHEMA}.shards_refresh()
RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE rel regclass := to_regclass(NEW.table_name);
BEGIN
    IF rel IS NOT NULL THEN
        -- A no-op update: the counter table's apply trigger recomputes the sums.
        EXECUTE format('UPDATE %s t SET %I = t.%I WHERE %s', rel, NEW.col, NEW.col,
            (SELECT string_agg(format('t.%I = (jsonb_populate_record(NULL::%s, $1)).%I', c, rel, c), ' AND ')
             FROM unnest({SCHEMA}.pk_cols(rel)) AS c)) USING NEW.pk;
    END IF;
    RETURN NULL;
END $f$;

CREATE OR REPLACE FUNCTION {SCHEMA}.shards_apply()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    -- A shard is written only by its own node, so its latest value is the truth.
    UPDATE {SCHEMA}.counter_shards SET amount = NEW.amount
    WHERE table_name = NEW.table_name AND pk = NEW.pk AND col = NEW.col AND node = NEW.node;
    IF FOUND THEN RETURN NULL; END IF;
    RETURN NEW;
END $f$;
"""


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


def _bookkeeping_triggers() -> list[str]:
    stmts = []
    for table, trg, fn, events in (
        ("tombstones", "fraiseql_repl_apply", "tombstones_apply", "BEFORE INSERT OR UPDATE"),
        ("counter_shards", "fraiseql_repl_apply", "shards_apply", "BEFORE INSERT"),
        ("counter_shards", "fraiseql_repl_apply_after", "shards_refresh", "AFTER INSERT OR UPDATE"),
    ):
        stmts.append(
            f"DO $do$ BEGIN\n"
            f"  CREATE OR REPLACE TRIGGER {trg} {events} ON {SCHEMA}.{table}\n"
            f"    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.{fn}();\n"
            f"  ALTER TABLE {SCHEMA}.{table} ENABLE REPLICA TRIGGER {trg};\n"
            f"END $do$"
        )
    return stmts


def _table_statements(t: TablePolicy) -> list[str]:
    q = _qtable(t)
    name = t.qualified
    stmts = [
        # Fail early and clearly: conflict handling and the apply worker both
        # need a primary key (the default replica identity).
        f"DO $do$ BEGIN\n"
        f"  IF {SCHEMA}.pk_cols({_lit(q)}::regclass) IS NULL THEN\n"
        f"    RAISE EXCEPTION 'fraiseql_repl: replicated table % needs a primary key', {_lit(name)};\n"
        f"  END IF;\n"
        f"END $do$",
        f"ALTER TABLE {q}"
        f" ADD COLUMN IF NOT EXISTS _repl_ts timestamptz NOT NULL DEFAULT '-infinity',"
        f" ADD COLUMN IF NOT EXISTS _repl_node text NOT NULL DEFAULT ''",
    ]
    if t.strategy == "app":
        stmts.append(
            f"ALTER TABLE {q}"
            f" ADD COLUMN IF NOT EXISTS _repl_prev_ts timestamptz,"
            f" ADD COLUMN IF NOT EXISTS _repl_prev_node text"
        )
    args = ", ".join(_lit(a) for a in (t.strategy, *t.columns))
    local_fn = "set_local()" if t.strategy == "set" else f"stamp_local({args})"
    apply_fn = "set_apply()" if t.strategy == "set" else f"apply_remote({args})"
    delete_arg = _lit(t.strategy)
    triggers = [
        ("fraiseql_repl_fence", "BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE", "STATEMENT",
         "fence_guard()", "ORIGIN"),
        ("fraiseql_repl_local", "BEFORE INSERT OR UPDATE", "ROW", local_fn, "ORIGIN"),
        ("fraiseql_repl_local_del", "BEFORE DELETE", "ROW", f"delete_local({delete_arg})", "ORIGIN"),
        ("fraiseql_repl_apply", "BEFORE INSERT OR UPDATE", "ROW", apply_fn, "REPLICA"),
    ]
    if t.strategy == "set":
        triggers.append(("fraiseql_repl_apply_del", "BEFORE DELETE", "ROW", "set_apply()", "REPLICA"))
    if t.strategy == "counter":
        cols = ", ".join(_lit(c) for c in t.columns)
        triggers.append(("fraiseql_repl_local_after", "AFTER INSERT OR UPDATE", "ROW",
                         f"counter_local({cols})", "ORIGIN"))
    body = []
    for trg, events, level, fn, mode in triggers:
        body.append(
            f"  CREATE OR REPLACE TRIGGER {trg} {events} ON {q}\n"
            f"    FOR EACH {level} EXECUTE FUNCTION {SCHEMA}.{fn};"
        )
        if mode == "REPLICA":
            body.append(f"  ALTER TABLE {q} ENABLE REPLICA TRIGGER {trg};")
    # Constraint triggers have no OR REPLACE: create once. Deferred, so it runs at commit.
    body.append(
        f"  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = 'fraiseql_repl_lease'\n"
        f"                 AND tgrelid = {_lit(q)}::regclass) THEN\n"
        f"    CREATE CONSTRAINT TRIGGER fraiseql_repl_lease AFTER INSERT OR UPDATE OR DELETE ON {q}\n"
        f"      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.lease_at_commit();\n"
        f"  END IF;"
    )
    if t.strategy != "set":
        body.append(f"  DROP TRIGGER IF EXISTS fraiseql_repl_apply_del ON {q};")
    if t.strategy != "counter":
        body.append(f"  DROP TRIGGER IF EXISTS fraiseql_repl_local_after ON {q};")
    stmts.append("DO $do$ BEGIN\n" + "\n".join(body) + "\nEND $do$")
    if t.strategy == "counter":
        # Rows that existed before bootstrap have no shards yet: seed them under
        # a pseudo node so the sum equals the (identical) pre-existing value.
        for col in t.columns:
            stmts.append(
                f"INSERT INTO {SCHEMA}.counter_shards (table_name, pk, col, node, amount)\n"
                f"SELECT {_lit(name)}, {SCHEMA}.pk_of({_lit(q)}::regclass, to_jsonb(t)), {_lit(col)},"
                f" '_seed', t.{_ident(col)}\n"
                f"FROM {q} t\n"
                f"WHERE t.{_ident(col)} IS NOT NULL AND t.{_ident(col)} <> 0 AND NOT EXISTS (\n"
                f"  SELECT 1 FROM {SCHEMA}.counter_shards s WHERE s.table_name = {_lit(name)}\n"
                f"    AND s.col = {_lit(col)}"
                f" AND s.pk = {SCHEMA}.pk_of({_lit(q)}::regclass, to_jsonb(t)))\n"
                f"ON CONFLICT DO NOTHING"
            )
    return stmts


def render_conflict_objects(policy: ConflictPolicy, node: Node) -> list[str]:
    """Schema ``fraiseql_repl``, bookkeeping tables, functions and per-table columns/triggers.

    The tables named in ``policy`` must already exist (the application's own
    migrations create them) and have a primary key.
    """
    stmts = _split(_TABLES)
    stmts.append(_node_function(node))
    stmts += _split(_schema_file("control.sql"))
    stmts += _split(_HELPERS)
    stmts += _split(_TRIGGER_FUNCTIONS)
    stmts += _bookkeeping_triggers()
    for t in policy.all_tables():
        stmts += _table_statements(t)
    return stmts


def render_lease(valid_s: float | None, reason: str, granted_by: str = "") -> list[str]:
    """Grant this node a write lease for ``valid_s`` seconds of its own clock, or revoke it (``None``).

    ``valid_s = inf`` grants a lease that never runs out (tests, or an operator overriding a dead
    agent knowingly). Neither form waits for writers: the guard reads the lease without a lock, and
    a transaction that commits after the lease ran out is refused at commit.
    """
    if valid_s is None:
        until = "'-infinity'::timestamptz"
    elif valid_s == float("inf"):
        until = "'infinity'::timestamptz"
    else:
        until = f"clock_timestamp() + make_interval(secs => {float(valid_s)!r})"
    return [
        f"UPDATE {LEASE_TABLE} SET valid_until = {until}, reason = {_lit(reason)},"
        f" granted_by = {_lit(granted_by)}, changed_at = clock_timestamp() WHERE singleton"
    ]


def _published(policy: ConflictPolicy) -> list[str]:
    tables = [_qtable(t) for t in policy.all_tables()]
    return tables + [f"{SCHEMA}.tombstones", f"{SCHEMA}.counter_shards"]


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
    """The data publication (every replicated table plus the tombstone and shard tables) and the
    control publication (heartbeats only).

    TRUNCATE is not published: a truncate is a local operation in an
    active-active mesh (it cannot be merged with concurrent writes), and the guard refuses it.
    """
    return [
        _publication(PUBLICATION, _published(policy), "insert, update, delete"),
        _publication(CONTROL_PUBLICATION, [HEARTBEAT_TABLE], "insert, update"),
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
        ci = make(peer)
        setting = _lit(f"{SCHEMA}.pw_{peer.user}")
        for sub, publication in (
            (subscription_name(node, peer), PUBLICATION),
            (control_subscription_name(node, peer), CONTROL_PUBLICATION),
        ):
            options = (f"origin = none, copy_data = false, create_slot = false, slot_name = {_lit(sub)}, "
                       "enabled = true, disable_on_error = false")
            out.append(
                "DO $do$ DECLARE\n"
                f"  pw text := nullif(current_setting({setting}, true), '');\n"
                f"  ci text := {_lit(ci)} || CASE WHEN pw IS NULL THEN '' ELSE\n"
                "    ' password=''' || replace(replace(pw, '\\', '\\\\'), '''', '\\''') || '''' END;\n"
                "BEGIN\n"
                "  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s\n"
                "                 JOIN pg_catalog.pg_database d ON d.oid = s.subdbid\n"
                f"                 WHERE s.subname = {_lit(sub)} AND d.datname = current_database()) THEN\n"
                f"    EXECUTE format('CREATE SUBSCRIPTION {sub} CONNECTION %L PUBLICATION {publication} WITH (%s)',\n"
                f"                   ci, {_lit(options)});\n"
                f"  ELSIF (SELECT subconninfo FROM pg_catalog.pg_subscription WHERE subname = {_lit(sub)})\n"
                "        IS DISTINCT FROM ci THEN\n"
                f"    EXECUTE format('ALTER SUBSCRIPTION {sub} CONNECTION %L', ci);\n"
                "  END IF;\n"
                "EXCEPTION WHEN OTHERS THEN\n"
                # Re-raised here, the error's CONTEXT is this line, not the statement with the password.
                f"  RAISE EXCEPTION 'fraiseql_repl: subscription {sub} to %: %', {_lit(peer.name)},\n"
                "    CASE WHEN pw IS NULL THEN SQLERRM ELSE replace(SQLERRM, pw, '[redacted]') END USING ERRCODE = SQLSTATE;\n"
                "END $do$"
            )
            refresh.append(f"ALTER SUBSCRIPTION {sub} REFRESH PUBLICATION WITH (copy_data = false)")
    return out + refresh


def render_local_objects(node: Node, peers: Sequence[Node], policy: ConflictPolicy) -> list[str]:
    """Phase 1 of the bootstrap: everything that needs no peer (objects, publication, slots)."""
    return render_conflict_objects(policy, node) + render_publication(policy) + render_slots(node, peers)


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
