-- Verify: are the writers' copies of every replicated table the same? Hashes are computed inside
-- PostgreSQL, per bucket of primary keys, so only bucket digests (and, for buckets that differ, one
-- line per key) ever leave a writer. A bucket is a hash of the key, the same on every writer, so no
-- coordinator has to agree on key ranges first.
--
-- `python -m ops verify` compares writers directly. Each fence agent also runs rounds through the
-- control channel: it publishes its digests, then the keys of buckets that differ from a peer's,
-- and counts the keys that really differ (DivergedRows metric, alarmed on any non-zero value).

CREATE OR REPLACE FUNCTION fraiseql_repl.bucket_of(key jsonb, buckets integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
    -- jsonb's text form is canonical (keys sorted), so every writer puts a key in the same bucket.
    SELECT ((pg_catalog.hashtextextended(key::text, 0) % buckets) + buckets)::integer % buckets
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.pk_expr(tname text, alias text)
RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT 'jsonb_build_object(' || string_agg(format('%L, %I.%I', c, alias, c), ', ') || ')'
    FROM unnest(fraiseql_repl.pk_cols(tname::regclass)) c
$f$;

-- Digest of every bucket of one table, over rows whose version is not newer than the horizon
-- (newer rows may still be on their way to other writers).
CREATE OR REPLACE FUNCTION fraiseql_repl.table_digest(tname text, buckets integer, horizon timestamptz)
RETURNS TABLE (bucket integer, nrows bigint, digest text) LANGUAGE plpgsql STABLE SET TimeZone = 'UTC' AS $f$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT b, count(*)::bigint, md5(string_agg(h, '''' ORDER BY h)) FROM ('
        '  SELECT fraiseql_repl.bucket_of(%1$s, $1) AS b, md5(to_jsonb(t)::text) AS h FROM %2$s t'
        '  WHERE t._repl_ts <= $2) x GROUP BY b',
        fraiseql_repl.pk_expr(tname, 't'), tname::regclass)
    USING buckets, horizon;
END $f$;

-- One line per key in the given buckets: its version and hash, or its tombstone.
CREATE OR REPLACE FUNCTION fraiseql_repl.bucket_keys(tname text, buckets integer, wanted integer[])
RETURNS TABLE (bucket integer, pk jsonb, ts timestamptz, vnode text, digest text, deleted boolean)
LANGUAGE plpgsql STABLE SET TimeZone = 'UTC' AS $f$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT fraiseql_repl.bucket_of(t._fq_key, $1), t._fq_key, t._repl_ts, t._repl_node,'
        '       md5((to_jsonb(t) - ''_fq_key'')::text), false'
        '  FROM (SELECT %1$s AS _fq_key, t.* FROM %2$s t) t WHERE fraiseql_repl.bucket_of(t._fq_key, $1) = ANY ($2)'
        ' UNION ALL '
        'SELECT fraiseql_repl.bucket_of(x.pk, $1), x.pk, x.ts, x.node, NULL, true FROM fraiseql_repl.tombstones x'
        '  WHERE x.table_name = $3 AND fraiseql_repl.bucket_of(x.pk, $1) = ANY ($2)'
        '    AND NOT EXISTS (SELECT 1 FROM %2$s t WHERE %1$s = x.pk)',
        fraiseql_repl.pk_expr(tname, 't'), tname::regclass)
    USING buckets, wanted, tname;
END $f$;

-- Repair helper for counters: send this node's own shards of one key again (delete and insert:
-- deletes are not published, inserts merge at the peers as the owner's latest amount).
CREATE OR REPLACE FUNCTION fraiseql_repl.reemit_shards(tname text, key jsonb)
RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE n integer;
BEGIN
    WITH mine AS (
        -- this node's shards of the live incarnations only: a delete's shards stay deleted
        DELETE FROM fraiseql_repl.shards s WHERE s.table_name = tname AND s.pk = key AND s.node = fraiseql_repl.node_name()
          AND NOT EXISTS (SELECT 1 FROM fraiseql_repl.tombstones x WHERE x.table_name = tname AND x.pk = key
                          AND x.born >= s.born)
        RETURNING *
    )
    INSERT INTO fraiseql_repl.shards SELECT * FROM mine;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $f$;

-- Rounds through the control channel (the fence agents run them). Replicated like heartbeats.
CREATE TABLE IF NOT EXISTS fraiseql_repl.digests (
    node       text NOT NULL,
    round      bigint NOT NULL,
    table_name text NOT NULL,
    bucket     integer NOT NULL,
    nrows      bigint NOT NULL,
    digest     text NOT NULL,
    PRIMARY KEY (node, round, table_name, bucket)
);

CREATE TABLE IF NOT EXISTS fraiseql_repl.digest_keys (
    node       text NOT NULL,
    round      bigint NOT NULL,
    table_name text NOT NULL,
    bucket     integer NOT NULL,
    pk         jsonb NOT NULL,
    ts         timestamptz,
    vnode      text,
    digest     text,
    deleted    boolean NOT NULL,
    PRIMARY KEY (node, round, table_name, bucket, pk)
);

-- Step 1 of a round: this node's bucket digests at the round's horizon.
CREATE OR REPLACE FUNCTION fraiseql_repl.publish_digests(rnd bigint, horizon timestamptz, buckets integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    m record;
    n bigint := 0;
    k bigint;
BEGIN
    FOR m IN SELECT table_name FROM fraiseql_repl.table_meta ORDER BY table_name LOOP
        INSERT INTO fraiseql_repl.digests (node, round, table_name, bucket, nrows, digest)
        SELECT fraiseql_repl.node_name(), rnd, m.table_name, d.bucket, d.nrows, d.digest
        FROM fraiseql_repl.table_digest(m.table_name, buckets, horizon) d
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END LOOP;
    -- an empty table still says "I have nothing", so a peer with rows there differs from it
    INSERT INTO fraiseql_repl.digests (node, round, table_name, bucket, nrows, digest)
    SELECT fraiseql_repl.node_name(), rnd, tm.table_name, -1, 0, '' FROM fraiseql_repl.table_meta tm
    ON CONFLICT DO NOTHING;
    RETURN n;
END $f$;

-- Step 2: for buckets where a peer's digest of that round differs from ours, our keys. Not while a
-- writer (this one, or a peer that published digests this round) has yet to apply something
-- written before the round's horizon (its watermarks say so: applied, peer_applied): its buckets
-- differ for that alone, and a large transaction in flight makes every bucket differ, so the keys
-- would be every key of the table, sent through the heartbeats' link, and every heartbeat would
-- wait behind them at every peer (a 1,000,000-row load fenced every region: the long nemesis of
-- 2026-12-07). A writer with no watermark on record is compared.
CREATE OR REPLACE FUNCTION fraiseql_repl.publish_key_details(rnd bigint, buckets integer, horizon timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    m record;
    wanted integer[];
    n bigint := 0;
    k bigint;
    me text := fraiseql_repl.node_name();
BEGIN
    IF horizon IS NOT NULL AND (
        EXISTS (SELECT 1 FROM fraiseql_repl.applied a
                WHERE a.origin <> me AND a.at < horizon AND a.origin IN (SELECT x.name FROM fraiseql_repl.members x))
        OR EXISTS (SELECT 1 FROM fraiseql_repl.peer_applied p
                   WHERE p.at < horizon AND p.origin <> p.peer AND p.origin IN (SELECT x.name FROM fraiseql_repl.members x)
                     AND p.peer IN (SELECT d.node FROM fraiseql_repl.digests d WHERE d.round = rnd AND d.node <> me))) THEN
        RETURN 0;
    END IF;
    FOR m IN SELECT DISTINCT table_name FROM fraiseql_repl.digests WHERE round = rnd AND node = me LOOP
        SELECT array_agg(DISTINCT b) INTO wanted FROM (
            SELECT coalesce(mine.bucket, theirs.bucket) AS b
            FROM (SELECT * FROM fraiseql_repl.digests WHERE round = rnd AND node = me AND table_name = m.table_name
                    AND bucket >= 0) mine
            FULL JOIN (SELECT * FROM fraiseql_repl.digests d WHERE d.round = rnd AND d.node <> me
                         AND d.table_name = m.table_name AND d.bucket >= 0
                         AND EXISTS (SELECT 1 FROM fraiseql_repl.digests e WHERE e.round = rnd AND e.node = d.node
                                       AND e.table_name = m.table_name AND e.bucket = -1)) theirs
              ON theirs.bucket = mine.bucket
            WHERE mine.digest IS DISTINCT FROM theirs.digest
              -- a peer whose digests have not arrived yet is not compared
              AND (theirs.node IS NOT NULL OR EXISTS (SELECT 1 FROM fraiseql_repl.digests e WHERE e.round = rnd
                     AND e.node <> me AND e.table_name = m.table_name AND e.bucket = -1))
        ) x;
        CONTINUE WHEN wanted IS NULL;
        INSERT INTO fraiseql_repl.digest_keys (node, round, table_name, bucket, pk, ts, vnode, digest, deleted)
        SELECT me, rnd, m.table_name, b.bucket, b.pk, b.ts, b.vnode, b.digest, b.deleted
        FROM fraiseql_repl.bucket_keys(m.table_name, buckets, wanted) b
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
        -- "this bucket is empty here" is an answer too
        INSERT INTO fraiseql_repl.digest_keys (node, round, table_name, bucket, pk, deleted)
        SELECT me, rnd, m.table_name, w, '{"_empty": true}', true FROM unnest(wanted) w
        ON CONFLICT DO NOTHING;
    END LOOP;
    RETURN n;
END $f$;

-- The previous release's agents call it without a horizon: compared as they were.
CREATE OR REPLACE FUNCTION fraiseql_repl.publish_key_details(rnd bigint, buckets integer)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT fraiseql_repl.publish_key_details(rnd, buckets, NULL::timestamptz)
$f$;

-- Step 3: keys whose state here differs from a peer's, once both reported the bucket; keys
-- changed after the horizon are still travelling and are not counted.
CREATE OR REPLACE FUNCTION fraiseql_repl.diverged_keys(rnd bigint, horizon timestamptz)
RETURNS TABLE (table_name text, pk jsonb, peer text) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    WITH me AS (SELECT fraiseql_repl.node_name() AS name),
    reported AS (  -- (node, table, bucket) pairs with details in this round
        SELECT DISTINCT node, table_name, bucket FROM fraiseql_repl.digest_keys WHERE round = rnd
    ),
    pairs AS (
        SELECT r1.table_name, r1.bucket, r2.node AS peer FROM reported r1 JOIN reported r2
          ON r2.table_name = r1.table_name AND r2.bucket = r1.bucket
        WHERE r1.node = (SELECT name FROM me) AND r2.node <> r1.node
    ),
    keys AS (
        SELECT p.table_name, p.bucket, p.peer, k.pk FROM pairs p
        JOIN fraiseql_repl.digest_keys k ON k.round = rnd AND k.table_name = p.table_name AND k.bucket = p.bucket
          AND k.node IN ((SELECT name FROM me), p.peer) AND k.pk <> '{"_empty": true}'
        GROUP BY 1, 2, 3, 4
    )
    SELECT k.table_name, k.pk, k.peer FROM keys k
    LEFT JOIN fraiseql_repl.digest_keys a ON a.round = rnd AND a.node = (SELECT name FROM me)
      AND a.table_name = k.table_name AND a.bucket = k.bucket AND a.pk = k.pk
    LEFT JOIN fraiseql_repl.digest_keys b ON b.round = rnd AND b.node = k.peer
      AND b.table_name = k.table_name AND b.bucket = k.bucket AND b.pk = k.pk
    WHERE (a.deleted IS NOT DISTINCT FROM b.deleted AND a.digest IS NOT DISTINCT FROM b.digest) IS NOT TRUE
      -- absent and deleted are the same state; a version newer than the horizon is in flight
      AND NOT (coalesce(a.deleted, true) AND coalesce(b.deleted, true))
      AND greatest(a.ts, b.ts) <= horizon
$f$;

-- The fence agent's step 3: how many keys differ (DivergedRows). The agent reads no replicated table,
-- so it gets the count, not the keys (red team 14: diverged_keys gave the agent's role every primary
-- key of a table: tests/redteam/test_red14_verify_definer.py).
CREATE OR REPLACE FUNCTION fraiseql_repl.diverged_count(rnd bigint, horizon timestamptz)
RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT count(DISTINCT (d.table_name, d.pk)) FROM fraiseql_repl.diverged_keys(rnd, horizon) d
$f$;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.diverged_keys(bigint, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.diverged_count(bigint, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION fraiseql_repl.purge_digests(keep_rounds integer DEFAULT 5)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    DELETE FROM fraiseql_repl.digests WHERE round < (SELECT max(round) - keep_rounds FROM fraiseql_repl.digests);
    DELETE FROM fraiseql_repl.digest_keys WHERE round < (SELECT max(round) - keep_rounds FROM fraiseql_repl.digest_keys);
$f$;

-- Children whose parent is not here, for every foreign key of a replicated table (merges keep the
-- keys the way PostgreSQL would, so any count but 0 is a bug or a write that bypassed the triggers).
CREATE OR REPLACE FUNCTION fraiseql_repl.orphans()
RETURNS TABLE (table_name text, constraint_name text, orphans bigint) LANGUAGE plpgsql STABLE AS $f$
DECLARE
    fk record;
    n bigint;
BEGIN
    FOR fk IN
        SELECT m.table_name AS child, con.conname::text AS name, con.confrelid::regclass AS parent,
               array_agg(ca.attname::text ORDER BY k.ord) AS cols, array_agg(pa.attname::text ORDER BY k.ord) AS pcols
        FROM fraiseql_repl.table_meta m
        JOIN pg_catalog.pg_constraint con ON con.conrelid = to_regclass(m.table_name) AND con.contype = 'f'
        CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(ca_num, pa_num, ord)
        JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = k.ca_num
        JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.pa_num
        GROUP BY m.table_name, con.oid, con.conname, con.confrelid
    LOOP
        EXECUTE format('SELECT count(*) FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)',
                       fraiseql_repl.quote_table(fk.child::regclass),
                       (SELECT string_agg(format('c.%I IS NOT NULL', x), ' AND ') FROM unnest(fk.cols) x),
                       fraiseql_repl.quote_table(fk.parent),
                       (SELECT string_agg(format('p.%I = c.%I', pc, cc), ' AND ') FROM unnest(fk.pcols, fk.cols) AS z(pc, cc)))
            INTO n;
        table_name := fk.child;
        constraint_name := fk.name;
        orphans := n;
        RETURN NEXT;
    END LOOP;
END $f$;
