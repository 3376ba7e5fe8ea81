-- Upgrade 2: the DDL guard knows the secondary unique keys each table's merge was built for
-- (fraiseql_repl.table_shape.uniques), and refuses a key made or dropped by hand since. A table
-- recorded before takes the keys it has now: the merge installed for it was built from them (a key
-- added by hand in between, which that merge does not settle, is blessed; re-installing the table
-- through schema apply rebuilds the merge). The query is install.sql's unique_keys, which the
-- previous release did not have.
ALTER TABLE IF EXISTS fraiseql_repl.table_shape ADD COLUMN IF NOT EXISTS uniques jsonb;
IF to_regclass('fraiseql_repl.table_shape') IS NOT NULL THEN
    UPDATE fraiseql_repl.table_shape s SET uniques = (
        SELECT coalesce(jsonb_agg(jsonb_build_object('cols', to_jsonb(u.cols), 'nnd', u.nnd) ORDER BY u.name), '[]')
        FROM (SELECT i.indexrelid::regclass::text AS name, i.indnullsnotdistinct AS nnd,
                     array_agg(a.attname::text ORDER BY k.ord) AS cols
              FROM pg_catalog.pg_index i
              CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = s.relid AND i.indisunique AND NOT i.indisprimary AND i.indexprs IS NULL
                AND i.indpred IS NULL AND k.ord <= i.indnkeyatts
              GROUP BY i.indexrelid, i.indnullsnotdistinct) u)
     WHERE s.uniques IS NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = s.relid);
END IF;
