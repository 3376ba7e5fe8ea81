-- Upgrade 3: the DDL guard knows the replication triggers each install made and the rules each
-- table's columns had (fraiseql_repl.table_shape.triggers, .rules: CHECK, NOT NULL, generated,
-- identity), and refuses a trigger made again otherwise (CREATE OR REPLACE TRIGGER) and a rule made
-- or undone by hand since. A table recorded before takes what it has now (as upgrade 2 did for
-- unique keys). The queries are ddl.sql's trigger_defs and column_rules (their definitions only),
-- which the previous release did not have.
ALTER TABLE IF EXISTS fraiseql_repl.table_shape ADD COLUMN IF NOT EXISTS triggers jsonb;
ALTER TABLE IF EXISTS fraiseql_repl.table_shape ADD COLUMN IF NOT EXISTS rules jsonb;
IF to_regclass('fraiseql_repl.table_shape') IS NOT NULL THEN
    -- Definitions spelled as ddl.sql's functions spell them (with this search_path), then the
    -- caller's back.
    DECLARE was text := pg_catalog.current_setting('search_path'); BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    UPDATE fraiseql_repl.table_shape s SET
        triggers = (SELECT coalesce(jsonb_object_agg(g.tgname, pg_catalog.pg_get_triggerdef(g.oid)), '{}')
                    FROM pg_catalog.pg_trigger g
                    WHERE g.tgrelid = s.relid AND g.tgname::text IN ('fraiseql_repl_fence', 'fraiseql_repl_local',
                          'fraiseql_repl_emit', 'fraiseql_repl_emit_upd', 'fraiseql_repl_emit_del', 'fraiseql_repl_emit_row')),
        rules = (SELECT coalesce(jsonb_agg(k.def ORDER BY k.def), '[]') FROM (
                    SELECT pg_catalog.pg_get_constraintdef(con.oid) AS def FROM pg_catalog.pg_constraint con
                    WHERE con.conrelid = s.relid AND con.contype = 'c'
                    UNION ALL
                    SELECT 'NOT NULL ' || quote_ident(a.attname) FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull
                      AND a.attname NOT IN ('_repl_ts', '_repl_node', '_repl_born', '_repl_prev_ts', '_repl_prev_node')
                    UNION ALL
                    SELECT format('GENERATED %I AS (%s)', a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid))
                    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                    WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
                    UNION ALL
                    SELECT format('IDENTITY %I %s', a.attname, CASE a.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END)
                    FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> '') k)
     WHERE s.triggers IS NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = s.relid);
    PERFORM pg_catalog.set_config('search_path', was, true);
    END;
END IF;
