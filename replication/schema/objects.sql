-- The data path of the multi-master mesh: what replicates, and the bookkeeping around it.
-- Every statement is idempotent; run them one by one in autocommit mode.
--
-- Local writes to a replicated table stamp a version and emit a full row image (or a delete) into
-- fraiseql_repl.changes, the only replicated data table. Peers merge each image into their copy
-- of the table with the table's generated merge function (install.sql). Images are states, not
-- operations: a newer image wins whatever order they arrive in, so an UPDATE that overtakes its
-- INSERT is simply the newer state (there is no update_missing), and two peers inserting the same
-- key merge (there is no insert_exists).

CREATE SCHEMA IF NOT EXISTS fraiseql_repl;

CREATE SEQUENCE IF NOT EXISTS fraiseql_repl.changes_id;

-- op: u = upsert image, d = delete, w = watermark (what this origin has applied, for safe purges).
-- born: the version at which this incarnation of the key was inserted; a delete removes
-- incarnations up to the one it saw, so a concurrent update cannot resurrect the row while a
-- later re-insert (a new incarnation) survives.
CREATE TABLE IF NOT EXISTS fraiseql_repl.changes (
    origin    text NOT NULL,
    id        bigint NOT NULL DEFAULT nextval('fraiseql_repl.changes_id'),
    tbl       text NOT NULL,
    op        "char" NOT NULL CHECK (op IN ('u', 'd', 'w')),
    pk        jsonb NOT NULL DEFAULT '{}',
    ts        timestamptz NOT NULL,
    node      text NOT NULL,
    born      timestamptz NOT NULL,
    row_image jsonb,
    origin_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- No index: the log is only appended to (peers read it from the WAL, their copy keeps nothing) and
-- purged whole by age, and its index entry was about a sixth of the WAL a change wrote.
-- (origin, id) stays unique by construction: each writer numbers its own changes from its sequence.
-- A change must be sendable: the walsender writes an image as text, and a text over 1 GB fails
-- every attempt to send it, which stalled the link for good (red team 14:
-- tests/redteam/test_red14_unsendable_row.py). Text is at most six times the jsonb (a control
-- character becomes \u0001), so an image over 170 MB is refused where it is written.
DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'fraiseql_repl.changes'::regclass AND conname = 'changes_image_sendable') THEN
        ALTER TABLE fraiseql_repl.changes ADD CONSTRAINT changes_image_sendable
            CHECK (pg_catalog.pg_column_size(row_image) <= 170000000) NOT VALID;
    END IF;
END $do$;
-- And readable: a peer's apply worker parses each image from text, recursively, before any trigger
-- runs, and a value nested deeper than its stack allows failed every attempt, so the link stalled
-- for good with nothing parked; a jsonb value can be built deeper than that without being parsed
-- (red team 14: tests/redteam/test_red14_deep_jsonb.py, 16,000 levels where the peer parsed 16,338).
-- A column's value nested 1,000 levels deep (999 is written) is refused where it is written: the
-- parser needs about 0.13 kB of stack a level, and max_stack_depth is 2 MB by default (6 MB on RDS).
DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'fraiseql_repl.changes'::regclass AND conname = 'changes_image_nested_under_1000_levels') THEN
        ALTER TABLE fraiseql_repl.changes ADD CONSTRAINT changes_image_nested_under_1000_levels
            CHECK (NOT pg_catalog.jsonb_path_exists(row_image, 'strict $.**{1000}')) NOT VALID;
    END IF;
END $do$;

-- Local memory of deletes (never replicated: every node writes its own from the 'd' images, always
-- whole: put_tombstone). born: the latest incarnation a delete of the key removed; origin and
-- origin_at: the delete that removed it (purges wait until every member has applied it).
CREATE TABLE IF NOT EXISTS fraiseql_repl.tombstones (
    table_name text NOT NULL,
    pk         jsonb NOT NULL,
    ts         timestamptz NOT NULL,
    node       text NOT NULL,
    born       timestamptz NOT NULL,
    origin     text NOT NULL,
    origin_at  timestamptz NOT NULL,
    PRIMARY KEY (table_name, pk)
);

-- Counter contributions: one row per (row, column, node, incarnation), written only by its node,
-- replicated directly (a single writer per row never conflicts). ts: when its node last changed it
-- (shard_stamp), its version for verify: a counter's row changes with every increment anywhere,
-- its shards only with their own node's.
CREATE TABLE IF NOT EXISTS fraiseql_repl.shards (
    table_name text NOT NULL,
    pk         jsonb NOT NULL,
    col        text NOT NULL,
    node       text NOT NULL,
    born       timestamptz NOT NULL,
    amount     numeric NOT NULL DEFAULT 0,
    ts         timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (table_name, pk, col, node, born)
);

CREATE TABLE IF NOT EXISTS fraiseql_repl.conflicts (
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

CREATE INDEX IF NOT EXISTS conflicts_open ON fraiseql_repl.conflicts (table_name, pk) WHERE resolved_at IS NULL;

-- How conflicts were decided, per table and kind: an insert-only log (two apply workers never wait
-- for each other on a counter row, and a large transaction never rewrites one row many times),
-- compacted into totals by the agent; read `resolution_counts`.
CREATE TABLE IF NOT EXISTS fraiseql_repl.resolutions (
    table_name text NOT NULL,
    kind       text NOT NULL,
    n          bigint NOT NULL DEFAULT 0,
    last_at    timestamptz,
    PRIMARY KEY (table_name, kind)
);

CREATE TABLE IF NOT EXISTS fraiseql_repl.resolution_events (
    table_name text NOT NULL,
    kind       text NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE VIEW fraiseql_repl.resolution_counts AS
    SELECT table_name, kind, sum(n)::bigint AS n, max(last_at) AS last_at FROM (
        SELECT table_name, kind, n, last_at FROM fraiseql_repl.resolutions
        UNION ALL SELECT table_name, kind, 1, at FROM fraiseql_repl.resolution_events
    ) x GROUP BY table_name, kind;

CREATE OR REPLACE FUNCTION fraiseql_repl.compact_resolutions()
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE n bigint;
BEGIN
    WITH moved AS (DELETE FROM fraiseql_repl.resolution_events RETURNING table_name, kind, at),
    totals AS (SELECT table_name, kind, count(*) AS n, max(at) AS last_at FROM moved GROUP BY 1, 2)
    INSERT INTO fraiseql_repl.resolutions AS r (table_name, kind, n, last_at)
    SELECT * FROM totals
    ON CONFLICT (table_name, kind) DO UPDATE SET n = r.n + excluded.n, last_at = greatest(r.last_at, excluded.last_at);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $f$;

-- Changes that could not be merged (a column this node does not have yet, a unique index whose
-- clash needs a retry, a table not installed here yet...). The link keeps flowing; the agent
-- retries them, and an alarm counts them.
-- The columns of the change log first, in its order (retry_parked makes a change of a row).
CREATE TABLE IF NOT EXISTS fraiseql_repl.parked (
    origin    text NOT NULL,
    id        bigint NOT NULL DEFAULT nextval('fraiseql_repl.changes_id'),
    tbl       text NOT NULL,
    op        "char" NOT NULL,
    pk        jsonb NOT NULL DEFAULT '{}',
    ts        timestamptz NOT NULL,
    node      text NOT NULL,
    born      timestamptz NOT NULL,
    row_image jsonb,
    origin_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sqlstate  text NOT NULL,
    error     text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts  integer NOT NULL DEFAULT 1,
    PRIMARY KEY (origin, id)
);
-- the merge of a new key looks here for a newer version of it that waits (install.sql)
CREATE INDEX IF NOT EXISTS parked_key ON fraiseql_repl.parked (tbl, pk);

-- What this node has applied from each origin: the time of the origin's latest watermark merged here
-- (everything the origin committed before it has been merged here too: one origin, one ordered stream).
CREATE TABLE IF NOT EXISTS fraiseql_repl.applied (
    origin text PRIMARY KEY,
    at     timestamptz NOT NULL
);

-- What each peer had applied, per origin, as its own watermark said; received in the peer's data
-- stream, so this node already holds every change the peer made before that watermark.
CREATE TABLE IF NOT EXISTS fraiseql_repl.peer_applied (
    peer   text NOT NULL,
    origin text NOT NULL,
    at     timestamptz NOT NULL,
    PRIMARY KEY (peer, origin)
);

-- The replicated tables and how they are merged; filled by install_table.
CREATE TABLE IF NOT EXISTS fraiseql_repl.table_meta (
    table_name   text PRIMARY KEY,
    strategy     text NOT NULL,
    counter_cols text[] NOT NULL DEFAULT '{}',
    columns      text[] NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Current members of the mesh (rendered by the bootstrap); purges wait for every one of them.
CREATE TABLE IF NOT EXISTS fraiseql_repl.members (
    name text PRIMARY KEY
);

CREATE OR REPLACE FUNCTION fraiseql_repl.newer(a_ts timestamptz, a_node text, b_ts timestamptz, b_node text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
    -- Total order on versions: timestamp, then node name in C collation so every node breaks ties
    -- the same way. A missing version is the oldest.
    SELECT CASE
        WHEN b_ts IS NULL THEN a_ts IS NOT NULL
        WHEN a_ts IS NULL THEN false
        ELSE a_ts > b_ts OR (a_ts = b_ts AND coalesce(a_node, '') COLLATE "C" > coalesce(b_node, '') COLLATE "C")
    END
$f$;

-- Rows compare by incarnation first: a state of a later incarnation (a re-insert made after seeing
-- a delete) beats any state of an earlier one, whatever the clocks say; within an incarnation,
-- the newer version wins.
CREATE OR REPLACE FUNCTION fraiseql_repl.newer_row(a_born timestamptz, a_ts timestamptz, a_node text,
                                                   b_born timestamptz, b_ts timestamptz, b_node text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
    SELECT CASE
        WHEN b_ts IS NULL THEN a_ts IS NOT NULL
        WHEN a_born IS DISTINCT FROM b_born THEN coalesce(a_born > b_born, a_born IS NOT NULL)
        ELSE fraiseql_repl.newer(a_ts, a_node, b_ts, b_node)
    END
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.next_ts(prev timestamptz)
RETURNS timestamptz LANGUAGE sql VOLATILE AS $f$
    SELECT greatest(pg_catalog.clock_timestamp(), prev + interval '1 microsecond')
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.pk_cols(rel regclass)
RETURNS text[] LANGUAGE sql STABLE AS $f$
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.note(tname text, kind text)
RETURNS void LANGUAGE sql AS $f$
    INSERT INTO fraiseql_repl.resolution_events (table_name, kind) VALUES (tname, kind)
$f$;

-- The primary key of a row image of a replicated table, as the change log spells it.
CREATE OR REPLACE FUNCTION fraiseql_repl.row_key(tname text, image jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT jsonb_object_agg(c, image -> c) FROM unnest(fraiseql_repl.pk_cols(tname::regclass)) c
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.tombstone_of(tname text, key jsonb)
RETURNS fraiseql_repl.tombstones LANGUAGE sql STABLE AS $f$
    SELECT * FROM fraiseql_repl.tombstones WHERE table_name = tname AND pk = key
$f$;

-- A tombstone is a join of every delete of its key, whatever order they arrive in: the latest
-- incarnation any of them removed (born: the greatest), the newest delete's version (ts, node), and
-- the origin of the delete that removed the latest incarnation (purges wait until every member has
-- applied that one).
CREATE OR REPLACE FUNCTION fraiseql_repl.put_tombstone(tname text, key jsonb, t timestamptz, n text,
                                                       b timestamptz, o text, o_at timestamptz)
RETURNS void LANGUAGE sql AS $f$
    INSERT INTO fraiseql_repl.tombstones AS x (table_name, pk, ts, node, born, origin, origin_at)
    VALUES (tname, key, t, n, b, o, o_at)
    ON CONFLICT (table_name, pk) DO UPDATE SET
        ts = CASE WHEN fraiseql_repl.newer(excluded.ts, excluded.node, x.ts, x.node) THEN excluded.ts ELSE x.ts END,
        node = CASE WHEN fraiseql_repl.newer(excluded.ts, excluded.node, x.ts, x.node) THEN excluded.node ELSE x.node END,
        born = greatest(x.born, excluded.born),
        origin = CASE WHEN excluded.born > x.born OR (excluded.born = x.born AND excluded.origin_at > x.origin_at)
                      THEN excluded.origin ELSE x.origin END,
        origin_at = CASE WHEN excluded.born > x.born OR (excluded.born = x.born AND excluded.origin_at > x.origin_at)
                         THEN excluded.origin_at ELSE x.origin_at END
$f$;

-- The lock where an insert of a key and a delete of it merged here meet, so that neither misses
-- the other's uncommitted work (a merged delete's DELETE does not see a row whose insert has not
-- committed; the insert's tombstone check does not see an uncommitted tombstone). Every insert of a
-- key no row holds (local, or merged) takes it shared before it reads the key's tombstone; a merged
-- delete that found no row to remove takes it exclusive, then deletes again. Whichever comes second
-- waits for the first to commit and sees its work. Shared: inserts never wait for one another, only
-- for such a delete. An advisory lock (no row written, nothing in the WAL) on one of 256 buckets of
-- (table, key): held until commit, so a transaction of a million new keys holds 256 locks at most,
-- where one lock per key would exhaust the lock table. Two keys sharing a bucket only make such a
-- delete wait for an unrelated insert's commit. Every wait is a lock wait that the deadlock
-- detector sees; an apply worker that loses one retries the change, then parks it.
-- The key's hash is jsonb's own, consistent with jsonb equality (the tombstones' and the merges'):
-- a numeric key written 1.0 on one writer and 1.00 on another is one key, in one bucket.
CREATE OR REPLACE FUNCTION fraiseql_repl.key_bucket(tname text, key jsonb)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
    SELECT (pg_catalog.hashtext(tname) # pg_catalog.jsonb_hash(key)) & 255
$f$;

-- (the first key of the two-key advisory lock: 'fqky', apart from every other advisory lock)
CREATE OR REPLACE FUNCTION fraiseql_repl.lock_bucket_shared(bucket integer)
RETURNS void LANGUAGE sql AS $f$
    SELECT pg_catalog.pg_advisory_xact_lock_shared(1718709113, bucket)
$f$;

-- Exclusive, for a merged delete: it waits at most 200 ms (lock_not_available, which receive_change
-- retries, then parks: the agent merges it again later). An open transaction that inserted a key of
-- the bucket (an idle session, a bulk load) would otherwise hold the link until it ends. The
-- setting is local to the merge's subtransaction, and undone with it.
CREATE OR REPLACE FUNCTION fraiseql_repl.lock_bucket(bucket integer)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    before text := pg_catalog.current_setting('lock_timeout');
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', '200ms', true);
    PERFORM pg_catalog.pg_advisory_xact_lock(1718709113, bucket);
    PERFORM pg_catalog.set_config('lock_timeout', before, true);
END $f$;

-- A REPEATABLE READ or SERIALIZABLE transaction reads the tombstones as of its snapshot, which may
-- be older than its keys' locks: a delete merged in between would not be seen. Taking each key's
-- place in the tombstones is refused (40001) where a tombstone is there that the snapshot does not
-- see; a place that was free is given back at once (never visible to anyone else).
CREATE OR REPLACE FUNCTION fraiseql_repl.refuse_unseen_deletes(tname text, keys jsonb[])
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    placed jsonb[];
BEGIN
    WITH p AS (
        INSERT INTO fraiseql_repl.tombstones (table_name, pk, ts, node, born, origin, origin_at)
        SELECT DISTINCT tname, k, '-infinity'::timestamptz, '', '-infinity'::timestamptz, '', '-infinity'::timestamptz
        FROM unnest(keys) k
        ON CONFLICT (table_name, pk) DO NOTHING
        RETURNING pk)
    SELECT array_agg(p.pk) INTO placed FROM p;
    DELETE FROM fraiseql_repl.tombstones x WHERE x.table_name = tname AND x.pk = ANY (placed);
EXCEPTION WHEN serialization_failure THEN
    RAISE EXCEPTION USING ERRCODE = '40001',
        MESSAGE = format('fraiseql_repl: a key of %s was deleted in another region after this transaction''s snapshot', tname),
        HINT = 'Retry the transaction.';
END $f$;

-- How far each table's tombstones have been purged on this writer: the newest delete purged. A key
-- inserted with no tombstone left is born after it, so it is never taken for an incarnation that
-- was deleted, by a writer that still holds the tombstone (writers purge at different times).
CREATE TABLE IF NOT EXISTS fraiseql_repl.purged (
    table_name text PRIMARY KEY,
    upto       timestamptz NOT NULL
);

-- The incarnation a local insert of a key starts: after the key's last delete, and after every
-- delete of the table this writer has forgotten.
CREATE OR REPLACE FUNCTION fraiseql_repl.birth_after(tname text, tomb_ts timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $f$
    SELECT greatest(coalesce(tomb_ts, '-infinity'),
                    coalesce((SELECT upto FROM fraiseql_repl.purged WHERE table_name = tname), '-infinity'))
$f$;

-- The apply errors each subscription's worker had counted when it last committed a transaction that
-- merged carefully (merge_carefully): a different count now means a transaction failed since.
CREATE TABLE IF NOT EXISTS fraiseql_repl.apply_failures (
    subid         oid PRIMARY KEY,
    errors        bigint NOT NULL,
    counted_since timestamptz  -- the counts' last reset, which can bring the count back to the recorded one
);

-- Whether the apply worker merges this change of its transaction in a subtransaction of its own
-- (receive_change), which can roll one change back and park it. Each subtransaction keeps about
-- 8 kB until the transaction ends (the capture trigger's transition state lives in its context:
-- tests/replication/test_apply_memory.py), 8 GB for a million-row transaction. So the first 1,000
-- changes of a transaction are merged carefully, and the rest without: an error there aborts the
-- whole apply transaction, PostgreSQL counts it (pg_stat_subscription_stats.apply_error_count) and
-- the worker receives the transaction again. The count is read once per transaction, with the time
-- the counts were last reset (a reset can bring the count back to the recorded one:
-- tests/redteam/test_red11_stats_reset.py), and compared with the one recorded by the last
-- transaction the worker committed. A count that differs is any failed attempt: a merge that failed
-- in the fast part, and also a dropped connection or a restart. They are told apart by the link's
-- merge marker (merge_marker, made by the bootstrap with the subscription), a sequence, which no
-- rollback undoes: the fast part moves it to odd before each merge and back to even after, so an
-- attempt that ended inside a merge left it odd, and it carries the count the fast part began
-- under (mark_fast_part), so an attempt stopped inside a merge (a terminated worker, a fast
-- shutdown: no error counted) is told from one whose merge failed (the count moved since:
-- tests/redteam/test_red13_marker_reset_then_kill.py). A failed merge's transaction is merged
-- carefully (the marker stays odd under the old count, so a careful attempt that fails too is
-- followed by another, until the next transaction starts with no failure and settles it even);
-- any other is merged as usual. A link without a marker (bootstrapped by an earlier release)
-- merges the whole transaction carefully after any failure. A reset of the counts since the last
-- commit leaves stopped and failed alike (both merged carefully). A crash discards the counts, which
-- reads as "nothing failed" where none was recorded, and may leave the marker either way: a wrong
-- guess costs one more attempt, or a careful one, never a change. The decision is cached in a setting keyed by the transaction id ("xid mode
-- changes marker errors"), so no preset value can stand for it.
CREATE OR REPLACE FUNCTION fraiseql_repl.merge_marker(subname text)
RETURNS regclass LANGUAGE sql STABLE AS $f$
    SELECT pg_catalog.to_regclass(pg_catalog.format('fraiseql_repl.%I', 'merging:' || subname))
$f$;

-- The bootstrap makes each data link's marker (owned by it, as the change log is; nobody else may
-- use it: an application that moved it could keep a failing merge from ever being parked).
CREATE OR REPLACE FUNCTION fraiseql_repl.make_merge_marker(subname text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    IF fraiseql_repl.merge_marker(subname) IS NULL THEN
        EXECUTE pg_catalog.format('CREATE SEQUENCE fraiseql_repl.%I AS bigint MINVALUE 0 START WITH 0 NO CYCLE',
                                  'merging:' || subname);
        EXECUTE pg_catalog.format('REVOKE ALL ON SEQUENCE fraiseql_repl.%I FROM PUBLIC', 'merging:' || subname);
    END IF;
END $f$;

-- Even, and called once (a sequence's first nextval returns its start and moves nothing).
CREATE OR REPLACE FUNCTION fraiseql_repl.settle_merge_marker(marker regclass)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    v bigint;
    called boolean;
BEGIN
    FOR i IN 1 .. 3 LOOP
        EXECUTE pg_catalog.format('SELECT last_value, is_called FROM %s', marker) INTO v, called;
        EXIT WHEN called AND v % 2 = 0;
        PERFORM pg_catalog.nextval(marker);
    END LOOP;
END $f$;

-- The fast part of a transaction begins (merge_carefully): the marker goes even and carries, from
-- bit 40 up (modulo 2^22), the apply errors counted when the transaction began; below bit 40 it
-- goes on counting (from 0 again past 2^39). An attempt that ends inside a merge leaves it odd
-- either way; only one whose merge failed leaves a count that has moved since.
CREATE OR REPLACE FUNCTION fraiseql_repl.mark_fast_part(marker regclass, errors bigint)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    v bigint;
    called boolean;
    pos bigint := 0;
BEGIN
    EXECUTE pg_catalog.format('SELECT last_value, is_called FROM %s', marker) INTO v, called;
    IF called THEN
        pos := v & 1099511627775;
        pos := CASE WHEN pos >= 549755813888 THEN 0 ELSE pos + pos % 2 END;
    END IF;
    PERFORM pg_catalog.setval(marker, (errors % 4194304) * 1099511627776 + pos, true);
END $f$;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.make_merge_marker(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.settle_merge_marker(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.mark_fast_part(regclass, bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION fraiseql_repl.merge_carefully()
RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE
    xid text := pg_catalog.pg_current_xact_id()::text;
    cached text[] := pg_catalog.string_to_array(coalesce(pg_catalog.current_setting('fraiseql_repl.merging', true), ''), ' ');
    n bigint;
    sub oid;
    subname text;
    errors bigint;
    since timestamptz;
    marker regclass;
    failed boolean;
    rec_errors bigint;
    rec_since timestamptz;
BEGIN
    IF cached[1] = xid THEN
        IF cached[2] = 'fast' THEN
            RETURN false;
        ELSIF cached[2] = 'careful' THEN
            RETURN true;
        END IF;
        n := cached[3]::bigint + 1;
        IF n > 1000 THEN
            IF cached[4] <> '' THEN
                PERFORM fraiseql_repl.mark_fast_part(cached[4]::oid::regclass, cached[5]::bigint);
            END IF;
            PERFORM pg_catalog.set_config('fraiseql_repl.merging', pg_catalog.concat_ws(' ', xid, 'fast', n, cached[4]), true);
            RETURN false;
        END IF;
        PERFORM pg_catalog.set_config('fraiseql_repl.merging', pg_catalog.concat_ws(' ', xid, 'counting', n, cached[4], cached[5]), true);
        RETURN true;
    END IF;
    -- The transaction's first change: did the last attempt fail, and inside a merge?
    SELECT w.subid, w.subname, coalesce(s.apply_error_count, 0), s.stats_reset INTO sub, subname, errors, since
    FROM pg_catalog.pg_stat_subscription w
    LEFT JOIN pg_catalog.pg_stat_subscription_stats s ON s.subid = w.subid
    WHERE w.pid = pg_catalog.pg_backend_pid() LIMIT 1;
    marker := CASE WHEN sub IS NOT NULL THEN fraiseql_repl.merge_marker(subname) END;
    SELECT a.errors, a.counted_since INTO rec_errors, rec_since FROM fraiseql_repl.apply_failures a WHERE a.subid = sub;
    failed := sub IS NULL OR (rec_errors, rec_since) IS DISTINCT FROM (errors, since);
    IF failed AND sub IS NOT NULL THEN
        IF marker IS NOT NULL THEN
            -- Odd, under a count that has moved since: the attempt failed inside a merge. Odd under
            -- the count still current: it was stopped there (a terminated worker, a fast shutdown),
            -- which PostgreSQL does not count as an error. After a reset of the counts the two cannot
            -- be told apart (an error before the reset leaves no trace): read as failed.
            -- A count below the recorded one, with no reset, was discarded by a crash: the marker's
            -- count is then compared with the recorded one (a checkpoint may have kept the marker
            -- odd: tests/redteam/test_red14_marker_checkpoint_crash.py).
            EXECUTE pg_catalog.format('SELECT is_called AND last_value %% 2 = 1 AND ((last_value >> 40) <> $1 OR $2) '
                                      'FROM %s', marker)
                INTO failed
                USING CASE WHEN errors < rec_errors AND since IS NOT DISTINCT FROM rec_since THEN rec_errors ELSE errors END
                          % 4194304,
                      since IS DISTINCT FROM rec_since;
        END IF;
        INSERT INTO fraiseql_repl.apply_failures AS a (subid, errors, counted_since) VALUES (sub, errors, since)
            ON CONFLICT (subid) DO UPDATE SET errors = excluded.errors, counted_since = excluded.counted_since;
    END IF;
    IF failed THEN
        PERFORM pg_catalog.set_config('fraiseql_repl.merging', xid || ' careful', true);
    ELSE
        IF marker IS NOT NULL THEN
            PERFORM fraiseql_repl.settle_merge_marker(marker);  -- odd from an attempt that failed and was retried
        END IF;
        PERFORM pg_catalog.set_config('fraiseql_repl.merging',
                                      pg_catalog.concat_ws(' ', xid, 'counting', 1, coalesce(marker::oid::text, ''), errors), true);
    END IF;
    RETURN true;
END $f$;

-- The apply worker inserts every peer change here; merge it and store nothing. A change that
-- cannot be merged is parked, so one bad change never stalls the link (where it is merged without
-- a subtransaction, merge_carefully, its error fails the transaction, which is merged again
-- carefully).
CREATE OR REPLACE FUNCTION fraiseql_repl.receive_change()
RETURNS trigger LANGUAGE plpgsql SET TimeZone = 'UTC' AS $f$
DECLARE
    kind text;
    attempt int := 0;
    lost boolean := false;
    state text;
    msg text;
    marker regclass;  -- the link's merge marker, in the fast part (merge_carefully)
BEGIN
    IF NOT fraiseql_repl.merge_carefully() THEN
        marker := nullif(pg_catalog.split_part(pg_catalog.current_setting('fraiseql_repl.merging'), ' ', 4), '')::oid;
        IF marker IS NOT NULL THEN
            PERFORM pg_catalog.nextval(marker);  -- odd: a merge is under way
        END IF;
        kind := fraiseql_repl.merge_change(NEW);
        IF kind IS DISTINCT FROM 'unique_incoming_lost' THEN
            IF kind IS NOT NULL AND kind NOT IN ('inserted', 'updated', 'duplicate', 'delete_applied',
                                                 'delete_nothing_to_remove') THEN
                PERFORM fraiseql_repl.note(NEW.tbl, kind);
            END IF;
            IF marker IS NOT NULL THEN
                PERFORM pg_catalog.nextval(marker);  -- even: it ended
            END IF;
            RETURN NULL;
        END IF;
        lost := true;
        state := 'FQ004';
        msg := 'loses a unique clash; merged again when the value is free';
    END IF;
    LOOP
        EXIT WHEN lost;  -- the merge above lost a unique clash: park it
        attempt := attempt + 1;
        BEGIN
            kind := fraiseql_repl.merge_change(NEW);
            IF kind = 'unique_incoming_lost' THEN
                -- Kept, not dropped: it comes back when the row holding its unique value lets go.
                state := 'FQ004';
                msg := 'loses a unique clash; merged again when the value is free';
                EXIT;
            END IF;
            -- Count decisions, not routine merges (a large transaction would log every row).
            IF kind IS NOT NULL AND kind NOT IN ('inserted', 'updated', 'duplicate', 'delete_applied',
                                                 'delete_nothing_to_remove') THEN
                PERFORM fraiseql_repl.note(NEW.tbl, kind);
            END IF;
            RETURN NULL;
        EXCEPTION
            WHEN deadlock_detected OR serialization_failure OR lock_not_available OR unique_violation THEN
                -- Two apply workers (or a merge and a local write) met on the same rows; ours was
                -- rolled back: try again. A unique value another transaction committed while our
                -- insert waited on it is visible to the retry's clash check, which settles it.
                state := SQLSTATE;
                msg := SQLERRM;
                EXIT WHEN attempt >= 5;
                PERFORM pg_catalog.pg_sleep(0.01 * attempt);
            WHEN OTHERS THEN
                state := SQLSTATE;
                msg := SQLERRM;
                EXIT;
        END;
    END LOOP;
    INSERT INTO fraiseql_repl.parked (origin, id, tbl, op, pk, ts, node, born, row_image, origin_at, sqlstate, error)
    VALUES (NEW.origin, NEW.id, NEW.tbl, NEW.op, NEW.pk, NEW.ts, NEW.node, NEW.born, NEW.row_image,
            NEW.origin_at, state, left(msg, 500))
    ON CONFLICT (origin, id) DO UPDATE SET attempts = fraiseql_repl.parked.attempts + 1,
        sqlstate = excluded.sqlstate, error = excluded.error;
    PERFORM fraiseql_repl.note(NEW.tbl, CASE WHEN state = 'FQ004' THEN 'unique_incoming_lost' ELSE 'parked' END);
    IF marker IS NOT NULL THEN
        PERFORM pg_catalog.nextval(marker);  -- even: the fast part's unique clash is parked
    END IF;
    RETURN NULL;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_receive BEFORE INSERT ON fraiseql_repl.changes
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.receive_change();
  ALTER TABLE fraiseql_repl.changes ENABLE REPLICA TRIGGER fraiseql_repl_receive;
END $do$;

-- Watermarks: merged into the bookkeeping, nothing else.
CREATE OR REPLACE FUNCTION fraiseql_repl.merge_watermark(c fraiseql_repl.changes)
RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO fraiseql_repl.applied AS a (origin, at) VALUES (c.origin, c.origin_at)
        ON CONFLICT (origin) DO UPDATE SET at = greatest(a.at, excluded.at);
    INSERT INTO fraiseql_repl.peer_applied AS p (peer, origin, at)
        SELECT c.origin, e.key, (e.value #>> '{}')::timestamptz
        FROM jsonb_each(coalesce(c.row_image -> 'applied', '{}')) e
        UNION ALL SELECT c.origin, c.origin, c.origin_at
        ON CONFLICT (peer, origin) DO UPDATE SET at = greatest(p.at, excluded.at);
    RETURN NULL;
END $f$;

-- This node's watermark: what it has applied from every origin, into its own ordered stream.
-- A change's origin_at is when its statement ran, not when its transaction committed: a watermark
-- written meanwhile, by a shorter transaction, may commit first. So a watermark claims no later
-- than the start of the oldest transaction still open here that has written anything: what a
-- peer has applied up to it, it has applied for every change made before then.
CREATE OR REPLACE FUNCTION fraiseql_repl.emit_watermark()
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    INSERT INTO fraiseql_repl.changes (origin, tbl, op, ts, node, born, row_image, origin_at)
    SELECT fraiseql_repl.node_name(), '', 'w', clock_timestamp(), fraiseql_repl.node_name(), '-infinity',
           jsonb_build_object('applied', coalesce(jsonb_object_agg(origin, at), '{}')),
           least(clock_timestamp(), (SELECT min(a.xact_start) FROM pg_catalog.pg_stat_activity a
                                     WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()))
    FROM fraiseql_repl.applied
$f$;

-- Tombstones (and dead counter shards) that no change still in flight can need: every other member
-- has applied the delete's origin past the delete, and this node holds everything that member
-- wrote before it did. A member that is partitioned away holds every purge back.
CREATE OR REPLACE FUNCTION fraiseql_repl.purge_tombstones(margin interval DEFAULT interval '1 second')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $f$
DECLARE n bigint;
BEGIN
    margin := greatest(margin, interval '0');  -- "purge before it is applied everywhere" is not a margin
    WITH safe AS (
        SELECT t.table_name, t.pk, t.born, t.ts FROM fraiseql_repl.tombstones t
        WHERE NOT EXISTS (
            SELECT 1 FROM fraiseql_repl.members m
            WHERE m.name <> fraiseql_repl.node_name() AND m.name <> t.origin
              AND coalesce((SELECT p.at FROM fraiseql_repl.peer_applied p
                            WHERE p.peer = m.name AND p.origin = t.origin), '-infinity') < t.origin_at + margin)
          AND t.origin_at > '-infinity'
          -- a parked change of the key may still be merged: it needs the tombstone to know it is dead
          AND NOT EXISTS (SELECT 1 FROM fraiseql_repl.parked p WHERE p.tbl = t.table_name AND p.pk = t.pk)
    ), shards_gone AS (
        DELETE FROM fraiseql_repl.shards s USING safe
        WHERE s.table_name = safe.table_name AND s.pk = safe.pk AND s.born <= safe.born
    ), gone AS (
        DELETE FROM fraiseql_repl.tombstones t USING safe
        WHERE t.table_name = safe.table_name AND t.pk = safe.pk
        RETURNING t.table_name, t.ts
    ), horizon AS (
        INSERT INTO fraiseql_repl.purged AS p (table_name, upto)
        SELECT table_name, max(ts) FROM gone GROUP BY table_name
        ON CONFLICT (table_name) DO UPDATE SET upto = greatest(p.upto, excluded.upto)
    )
    SELECT count(*) INTO n FROM gone;
    RETURN n;
END $f$;

-- Local rows of the change log are only needed until logical decoding has read their WAL, which
-- has happened once they are committed; keep a few minutes for people reading them. At most 20,000
-- rows a call: the agent calls it every run under a statement timeout, and one DELETE of a million-row
-- transaction's changes timed out on every run, so nothing was ever purged.
CREATE OR REPLACE FUNCTION fraiseql_repl.purge_changes(keep interval DEFAULT interval '5 minutes')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE n bigint;
BEGIN
    DELETE FROM fraiseql_repl.changes c WHERE c.ctid = ANY (ARRAY(
        SELECT x.ctid FROM fraiseql_repl.changes x WHERE x.origin_at < clock_timestamp() - keep LIMIT 20000));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $f$;

-- Merge parked changes again (after a schema change, or a clash that a retry resolves).
CREATE OR REPLACE FUNCTION fraiseql_repl.retry_parked()
RETURNS TABLE (merged bigint, still_parked bigint) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC' AS $f$
DECLARE
    p fraiseql_repl.parked;
    c fraiseql_repl.changes;
    kind text;
    ok bigint := 0;
    state text;
    msg text;
    role_before text := current_setting('session_replication_role');
BEGIN
    -- Merged as the apply worker merges them: the table's local triggers do not fire, so a parked
    -- change keeps its own version and is not sent out again as this writer's (nor needs the lease).
    PERFORM set_config('session_replication_role', 'replica', true);
    FOR p IN SELECT * FROM fraiseql_repl.parked ORDER BY parked_at, origin, id LOOP
        -- The loop reads the parked changes once, at its start; another retry (an overlapping agent
        -- run, an operator) may have merged this one since and let its tombstone be purged, and a
        -- second merge would insert a deleted row again (red team 20). Take it, or skip it if gone.
        PERFORM 1 FROM fraiseql_repl.parked x WHERE x.origin = p.origin AND x.id = p.id FOR UPDATE;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        c := ROW(p.origin, p.id, p.tbl, p.op, p.pk, p.ts, p.node, p.born, p.row_image, p.origin_at);
        BEGIN
            kind := fraiseql_repl.merge_change(c);
            IF kind = 'unique_incoming_lost' THEN
                -- still the loser of its unique clash: stays until the value is free
                UPDATE fraiseql_repl.parked x SET attempts = x.attempts + 1 WHERE x.origin = p.origin AND x.id = p.id;
                CONTINUE;
            END IF;
            DELETE FROM fraiseql_repl.parked WHERE origin = p.origin AND id = p.id;
            PERFORM fraiseql_repl.note(p.tbl, coalesce(kind, 'merged') || '_after_retry');
            ok := ok + 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            UPDATE fraiseql_repl.parked x SET attempts = x.attempts + 1, sqlstate = state, error = left(msg, 500)
            WHERE x.origin = p.origin AND x.id = p.id;
        END;
    END LOOP;
    PERFORM set_config('session_replication_role', role_before, true);
    -- Losers of unique clashes are not stuck: they are waiting for their value (and counted as conflicts).
    RETURN QUERY SELECT ok, (SELECT count(*) FROM fraiseql_repl.parked WHERE sqlstate <> 'FQ004');
END $f$;

-- Repair: send this node's current state of one key to every peer again, with its own version,
-- through the normal change stream (peers merge it like any change; it replicates and is counted).
-- With `restamp`, the row is written again through the table's own triggers, which gives it a new
-- version: needed only when writers hold different contents under the same version (a write that
-- bypassed the change log), where a plain re-send would look like a duplicate to them.
CREATE OR REPLACE FUNCTION fraiseql_repl.reemit(tname text, key jsonb, restamp boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql SET TimeZone = 'UTC' AS $f$
DECLARE
    img jsonb;
    tomb fraiseql_repl.tombstones;
BEGIN
    IF restamp THEN
        EXECUTE format('UPDATE %s t SET _repl_node = t._repl_node WHERE %s', tname,
                       (SELECT string_agg(format('t.%I = (jsonb_populate_record(NULL::%s, $1)).%I', c, tname, c), ' AND ')
                        FROM unnest(fraiseql_repl.pk_cols(tname::regclass)) c))
            USING key;
        PERFORM fraiseql_repl.note(tname, 'repair_restamped');
        RETURN 'restamped';
    END IF;
    EXECUTE format('SELECT to_jsonb(t) FROM %s t WHERE %s', tname,
                   (SELECT string_agg(format('t.%I = (jsonb_populate_record(NULL::%s, $1)).%I', c, tname, c), ' AND ')
                    FROM unnest(fraiseql_repl.pk_cols(tname::regclass)) c))
        INTO img USING key;
    IF img IS NOT NULL THEN
        INSERT INTO fraiseql_repl.changes (origin, tbl, op, pk, ts, node, born, row_image)
        VALUES (fraiseql_repl.node_name(), tname, 'u', key, (img ->> '_repl_ts')::timestamptz, img ->> '_repl_node',
                (img ->> '_repl_born')::timestamptz, fraiseql_repl.hold_back_image(tname, 'u', img));
        PERFORM fraiseql_repl.note(tname, 'repair_reemitted');
        RETURN 'row';
    END IF;
    tomb := fraiseql_repl.tombstone_of(tname, key);
    IF tomb.ts IS NOT NULL THEN
        PERFORM fraiseql_repl.hold_back_image(tname, 'd', NULL);
        INSERT INTO fraiseql_repl.changes (origin, tbl, op, pk, ts, node, born, origin_at)
        VALUES (fraiseql_repl.node_name(), tname, 'd', key, tomb.ts, tomb.node, tomb.born, tomb.origin_at);
        PERFORM fraiseql_repl.note(tname, 'repair_reemitted');
        RETURN 'tombstone';
    END IF;
    RETURN NULL;
END $f$;

