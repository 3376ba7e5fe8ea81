-- Schema changes across the mesh: the migration history, the columns held back while a migration
-- travels through the writers, the shape of every replicated table as its merge function knows it,
-- and the event triggers that refuse DDL which would break replication.
-- Every statement is idempotent; run them one by one in autocommit mode.
--
-- `python -m ops schema apply` adds columns and tables on every writer first, with the new columns
-- held back (stripped from this writer's change images, and local writes that set them refused),
-- then re-installs the merge functions everywhere, then releases the columns: no writer ever sends
-- a column that a peer cannot merge yet.

-- One row per migration this writer has run. completed_at: every writer had it, the conflict
-- objects were re-installed and its columns released.
CREATE TABLE IF NOT EXISTS fraiseql_repl.migrations (
    name         text PRIMARY KEY,
    checksum     text NOT NULL,
    statements   integer NOT NULL DEFAULT 0,
    applied_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by   text NOT NULL DEFAULT session_user,
    completed_at timestamptz
);

-- Columns (col = '': a whole new table) a migration has added here but the mesh cannot merge yet.
-- accepted: the values local writes may carry meanwhile (a default), so a write that uses the new
-- column early fails instead of being silently kept from the peers.
CREATE TABLE IF NOT EXISTS fraiseql_repl.held (
    table_name text NOT NULL,
    col        text NOT NULL,
    migration  text NOT NULL,
    accepted   jsonb,
    held_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (table_name, col)
);

-- What install_table saw last: the columns, key and secondary unique keys (fraiseql_repl.unique_keys:
-- [{"cols": [...], "nnd": bool}]) the generated merge function was built for, the replication
-- triggers it made, and the rules its columns had (CHECK, NOT NULL, generated, identity).
CREATE TABLE IF NOT EXISTS fraiseql_repl.table_shape (
    table_name  text PRIMARY KEY,
    relid       oid NOT NULL,
    pk          text[] NOT NULL,
    columns     jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the secondary unique keys the merge was built for (unique_keys_json)
    uniques     jsonb,
    -- the replication triggers as made: name -> definition (trigger_defs); NULL while an install
    -- makes them again
    triggers    jsonb,
    -- the rules of the columns (column_rules: their definitions)
    rules       jsonb
);

-- The triggers every replicated table carries (install_triggers makes them).
CREATE OR REPLACE FUNCTION fraiseql_repl.replication_triggers()
RETURNS text[] LANGUAGE sql IMMUTABLE AS $f$
    SELECT ARRAY['fraiseql_repl_fence', 'fraiseql_repl_local', 'fraiseql_repl_emit', 'fraiseql_repl_emit_upd',
                 'fraiseql_repl_emit_del', 'fraiseql_repl_emit_row']
$f$;

-- A trigger's definition, spelled the same whatever the caller's search_path.
CREATE OR REPLACE FUNCTION fraiseql_repl.trigger_def(tg oid)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT pg_catalog.pg_get_triggerdef(tg)
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.trigger_defs(rel oid)
RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT coalesce(jsonb_object_agg(g.tgname, fraiseql_repl.trigger_def(g.oid)), '{}')
    FROM pg_catalog.pg_trigger g WHERE g.tgrelid = rel AND g.tgname::text = ANY (fraiseql_repl.replication_triggers())
$f$;

-- The columns the install adds to a replicated table (add_version_columns).
CREATE OR REPLACE FUNCTION fraiseql_repl.version_column(col text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $f$
    SELECT col IN ('_repl_ts', '_repl_node', '_repl_born', '_repl_prev_ts', '_repl_prev_node')
$f$;

-- The rules a table's columns carry, the version columns' aside: CHECK constraints, NOT NULL,
-- generation expressions and identities. Each definition (spelled the same whatever the caller's
-- search_path), its kind, the columns it names, and the columns it reads (through generated columns
-- to what they read).
CREATE OR REPLACE FUNCTION fraiseql_repl.column_rules(rel oid)
RETURNS TABLE (def text, kind text, own text[], cols text[]) LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    WITH r AS (
        SELECT pg_catalog.pg_get_constraintdef(con.oid) AS def, 'check' AS kind, con.conkey::int2[] AS nums
        FROM pg_catalog.pg_constraint con WHERE con.conrelid = rel AND con.contype = 'c'
        UNION ALL
        SELECT 'NOT NULL ' || quote_ident(a.attname), 'not null', ARRAY[a.attnum] FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull
           AND NOT fraiseql_repl.version_column(a.attname)
        UNION ALL
        SELECT format('GENERATED %I AS (%s)', a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid)), 'generated', ARRAY[a.attnum]
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
        UNION ALL
        SELECT format('IDENTITY %I %s', a.attname, CASE a.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END),
               'identity', ARRAY[a.attnum]
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> ''
    )
    SELECT r.def, r.kind,
           ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND a.attnum = ANY (r.nums)),
           ARRAY(
        SELECT DISTINCT a.attname::text FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = rel AND (a.attnum = ANY (r.nums) OR a.attnum IN (
                 SELECT dp.refobjsubid FROM pg_catalog.pg_depend dp
                  WHERE dp.classid = 'pg_catalog.pg_class'::regclass AND dp.objid = rel AND dp.objsubid = ANY (r.nums)
                    AND dp.refclassid = 'pg_catalog.pg_class'::regclass AND dp.refobjid = rel AND dp.refobjsubid > 0)))
    FROM r
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.unique_keys_json(rel oid)
RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT coalesce(jsonb_agg(jsonb_build_object('cols', to_jsonb(u.cols), 'nnd', u.nnd) ORDER BY u.name), '[]')
    FROM fraiseql_repl.unique_keys(rel) u
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.record_shape(tname text)
RETURNS void LANGUAGE sql AS $f$
    INSERT INTO fraiseql_repl.table_shape AS s (table_name, relid, pk, columns, uniques, triggers, rules)
    SELECT tname, c.oid, coalesce(fraiseql_repl.pk_cols(c.oid), '{}'),
           (SELECT jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod)) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
           fraiseql_repl.unique_keys_json(c.oid), fraiseql_repl.trigger_defs(c.oid),
           (SELECT coalesce(jsonb_agg(k.def ORDER BY k.def), '[]') FROM fraiseql_repl.column_rules(c.oid) k)
    FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(tname)
    ON CONFLICT (table_name) DO UPDATE SET relid = excluded.relid, pk = excluded.pk, columns = excluded.columns,
        uniques = excluded.uniques, triggers = excluded.triggers, rules = excluded.rules, recorded_at = clock_timestamp()
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.shape_installed()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM fraiseql_repl.record_shape(NEW.table_name);
    RETURN NULL;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_shape AFTER INSERT OR UPDATE ON fraiseql_repl.table_meta
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.shape_installed();
  PERFORM fraiseql_repl.record_shape(m.table_name) FROM fraiseql_repl.table_meta m
    WHERE NOT EXISTS (SELECT 1 FROM fraiseql_repl.table_shape s WHERE s.table_name = m.table_name);
END $do$;

-- How replicated tables differ from what their merge functions were built for. kind: renamed (the
-- table), dropped (a column: dropped or renamed), type, pk, trigger (a replication trigger missing,
-- not firing for local writes, or made again otherwise), unique (an index the merge cannot settle
-- clashes on), exclusion (a constraint the merge cannot settle), counter (a counter column's shape
-- that a legal sum can break: fraiseql_repl.counter_column_problems), inheritance (a partition,
-- parent or child), constraint (a CHECK or NOT NULL made since the install on columns peers already
-- send, or a generation or identity made or undone), merge veto (a BEFORE trigger, a constraint
-- trigger or a rule of the application that fires on merges), and
-- what a re-install settles (fraiseql_repl.settled_by_install): added (a column the merge does not
-- know yet), unique new / unique gone (a unique key the merge does not know / still settles).
CREATE OR REPLACE FUNCTION fraiseql_repl.shape_drift(rels oid[] DEFAULT NULL)
RETURNS TABLE (table_name text, kind text, col text, detail text) LANGUAGE sql STABLE AS $f$
    -- The table by its name; by its recorded oid only when that name is gone and the oid still carries
    -- the replication triggers (renamed or moved). A restored copy has new oids: its names still match.
    WITH s0 AS (
        SELECT x.table_name, x.pk, x.columns, x.uniques, x.triggers, x.rules,
               coalesce(to_regclass(x.table_name)::oid,
                        (SELECT g.tgrelid FROM pg_catalog.pg_trigger g
                          WHERE g.tgrelid = x.relid AND g.tgname = 'fraiseql_repl_emit')) AS relid
        FROM fraiseql_repl.table_shape x
    ), s AS (
        SELECT * FROM s0 WHERE s0.relid IS NOT NULL AND (rels IS NULL OR s0.relid = ANY (rels))
    ), cur AS (
        SELECT s.table_name, a.attname::text AS col, format_type(a.atttypid, a.atttypmod) AS typ
        FROM s JOIN pg_catalog.pg_attribute a ON a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped
    )
    SELECT s.table_name, 'renamed', NULL::text, fraiseql_repl.table_name(s.relid) FROM s
     WHERE fraiseql_repl.table_name(s.relid) <> s.table_name
    UNION ALL
    SELECT s.table_name, 'dropped', e.key, e.value #>> '{}' FROM s CROSS JOIN LATERAL jsonb_each(s.columns) e
     WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.table_name = s.table_name AND cur.col = e.key)
    UNION ALL
    SELECT s.table_name, 'type', e.key, format('%s -> %s', e.value #>> '{}', cur.typ)
      FROM s CROSS JOIN LATERAL jsonb_each(s.columns) e JOIN cur ON cur.table_name = s.table_name AND cur.col = e.key
     WHERE cur.typ <> e.value #>> '{}'
    UNION ALL
    SELECT s.table_name, 'pk', NULL, format('(%s) -> (%s)', array_to_string(s.pk, ', '),
                                           array_to_string(coalesce(fraiseql_repl.pk_cols(s.relid), '{}'), ', '))
      FROM s WHERE coalesce(fraiseql_repl.pk_cols(s.relid), '{}') IS DISTINCT FROM s.pk
    UNION ALL
    -- (Its definition is compared once recorded: an install clears the record while it makes them.)
    SELECT s.table_name, 'trigger', t.name, 'missing, not enabled for local writes, or not the one the install made' FROM s
     CROSS JOIN unnest(fraiseql_repl.replication_triggers()) t(name)
     WHERE s.triggers IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = s.relid AND g.tgname = t.name AND g.tgenabled = 'O'
                         AND coalesce(fraiseql_repl.trigger_def(g.oid) = s.triggers ->> t.name, true))
    UNION ALL
    -- A unique index the merge cannot settle clashes on (install refuses it on a table it installs).
    SELECT s.table_name, 'unique', i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid) FROM s
      JOIN pg_catalog.pg_index i ON i.indrelid = s.relid AND i.indisunique AND NOT i.indisprimary
                                AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
    UNION ALL
    SELECT s.table_name, 'exclusion', con.conname::text, pg_catalog.pg_get_constraintdef(con.oid) FROM s
      JOIN pg_catalog.pg_constraint con ON con.conrelid = s.relid AND con.contype = 'x'
    UNION ALL
    -- A unique key the merge has no clash block for (unique_keys as the install read them), and one
    -- it still settles that is gone. Only a re-install (schema apply) brings the merge up to date.
    SELECT s.table_name, 'unique new', u.name, pg_catalog.pg_get_indexdef(u.idx) FROM s
     CROSS JOIN LATERAL fraiseql_repl.unique_keys(s.relid) u
     WHERE s.uniques IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM jsonb_array_elements(s.uniques) e WHERE e = jsonb_build_object('cols', to_jsonb(u.cols), 'nnd', u.nnd))
    UNION ALL
    SELECT s.table_name, 'unique gone', NULL, format('(%s)%s', (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(e -> 'cols') x),
                                                     CASE WHEN (e ->> 'nnd')::boolean THEN ' NULLS NOT DISTINCT' ELSE '' END)
      FROM s CROSS JOIN LATERAL jsonb_array_elements(s.uniques) e
     WHERE s.uniques IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM fraiseql_repl.unique_keys(s.relid) u WHERE jsonb_build_object('cols', to_jsonb(u.cols), 'nnd', u.nnd) = e)
    UNION ALL
    SELECT s.table_name, 'counter', c.col, p.message FROM s
      JOIN fraiseql_repl.table_meta m ON m.table_name = s.table_name AND m.strategy = 'counter'
     CROSS JOIN LATERAL unnest(m.counter_cols) c(col)
     CROSS JOIN LATERAL fraiseql_repl.counter_column_problems(s.relid::regclass, s.table_name, c.col) p
    UNION ALL
    -- A CHECK or NOT NULL made since the install that reads a column peers already send (directly,
    -- or through a generated column): a row a peer wrote before it had it breaks it here and is
    -- parked for good. (One on columns that schema apply adds in the same migration holds everywhere
    -- before any row carries them.) A generation or identity given to a column peers already send,
    -- or taken from one: this writer would compute it otherwise (merges never write a generated
    -- column), or refuse every merge (an identity ALWAYS).
    SELECT s.table_name, 'constraint', k.def, array_to_string(k.cols, ', ') FROM s
     CROSS JOIN LATERAL fraiseql_repl.column_rules(s.relid) k
     WHERE s.rules IS NOT NULL AND NOT s.rules ? k.def
       AND EXISTS (SELECT 1 FROM unnest(CASE WHEN k.kind IN ('check', 'not null') THEN k.cols ELSE k.own END) c
                   WHERE s.columns ? c)
    UNION ALL
    SELECT s.table_name, 'constraint', e.def, 'undone' FROM s CROSS JOIN LATERAL jsonb_array_elements_text(s.rules) e(def)
     WHERE s.rules IS NOT NULL AND (e.def LIKE 'GENERATED %' OR e.def LIKE 'IDENTITY %')
       AND NOT EXISTS (SELECT 1 FROM fraiseql_repl.column_rules(s.relid) k WHERE k.def = e.def)
    UNION ALL
    -- What fires on merges and can drop or rewrite one: a BEFORE trigger or a rule of the application
    -- enabled ALWAYS or REPLICA; or refuse one outside the merge's own error handling, so that the
    -- link stalls: a constraint trigger (deferred, it fires at the apply's commit). (An AFTER
    -- trigger, such as one that keeps a tv_* projection, may fire on merges.)
    SELECT s.table_name, 'merge veto', g.tgname::text, pg_catalog.pg_get_triggerdef(g.oid) FROM s
      JOIN pg_catalog.pg_trigger g ON g.tgrelid = s.relid AND NOT g.tgisinternal AND g.tgenabled IN ('A', 'R')
                                  AND (g.tgtype & 2 <> 0 OR g.tgconstraint <> 0)
                                  AND g.tgname::text <> ALL (fraiseql_repl.replication_triggers())
    UNION ALL
    SELECT s.table_name, 'merge veto', r.rulename::text, pg_catalog.pg_get_ruledef(r.oid) FROM s
      JOIN pg_catalog.pg_rewrite r ON r.ev_class = s.relid AND r.rulename <> '_RETURN' AND r.ev_enabled IN ('A', 'R')
    UNION ALL
    SELECT s.table_name, 'inheritance', NULL, fraiseql_repl.table_name(h.other::regclass) FROM s
     CROSS JOIN LATERAL (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = s.relid
                         UNION ALL SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = s.relid) h(other)
    UNION ALL
    SELECT cur.table_name, 'added', cur.col, cur.typ FROM cur JOIN s ON s.table_name = cur.table_name
     WHERE NOT s.columns ? cur.col AND NOT fraiseql_repl.version_column(cur.col)
    UNION ALL
    -- The commit check of every write (control.sql), one trigger for all the tables.
    SELECT 'fraiseql_repl.writing', 'commit check', 'fraiseql_repl_lease', 'missing or not enabled'
     WHERE to_regclass('fraiseql_repl.writing') IS NOT NULL
       AND (rels IS NULL OR to_regclass('fraiseql_repl.writing')::oid = ANY (rels))
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = to_regclass('fraiseql_repl.writing')
                       AND g.tgname = 'fraiseql_repl_lease' AND g.tgenabled = 'O')
$f$;

-- The refusal for one kind of drift: why, and what to do instead.
CREATE OR REPLACE FUNCTION fraiseql_repl.refuse_drift(tname text, kind text, col text, detail text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'FQ003',
        MESSAGE = CASE kind
            WHEN 'renamed' THEN format('fraiseql_repl: replicated table %s cannot be renamed or moved (to %s): peers still send its changes under its name', tname, detail)
            WHEN 'dropped' THEN format('fraiseql_repl: column %s.%s is replicated and cannot be dropped or renamed: peers still send it, and this writer would park their changes', tname, col)
            WHEN 'type' THEN format('fraiseql_repl: the type of replicated column %s.%s cannot change (%s): peers still send values of the old type', tname, col, detail)
            WHEN 'pk' THEN format('fraiseql_repl: the primary key of replicated table %s cannot change %s: peers identify its rows by it', tname, detail)
            WHEN 'trigger' THEN format('fraiseql_repl: replication trigger %s on %s is %s: this writer''s changes would stop replicating', col, tname, detail)
            WHEN 'commit check' THEN format('fraiseql_repl: trigger %s on %s is %s: writes to replicated tables would commit without their lease check', col, tname, detail)
            WHEN 'unique' THEN format('fraiseql_repl: replicated table %s would have unique index %s on an expression or with a WHERE clause (%s): two regions can insert rows that clash on it, and the merge could not tell which to keep', tname, col, detail)
            WHEN 'unique new' THEN format('fraiseql_repl: unique index %s on replicated table %s was made outside schema apply (%s): the merge functions were generated without it, so rows two regions insert with the same value would be parked for good', col, tname, detail)
            WHEN 'unique gone' THEN format('fraiseql_repl: unique key %s of replicated table %s was dropped outside schema apply: the merge functions still settle clashes on it, so a row that shares the value would be parked on every peer for good', detail, tname)
            WHEN 'exclusion' THEN format('fraiseql_repl: replicated table %s would have exclusion constraint %s (%s): two regions can write rows that exclude each other, and the merge cannot choose between them', tname, col, detail)
            WHEN 'counter' THEN detail
            WHEN 'inheritance' THEN format('fraiseql_repl: replicated table %s would be a partition, parent or child (of %s): writes through the other table skip its change capture, and the merge functions do not follow them', tname, detail)
            WHEN 'meaning' THEN format('fraiseql_repl: %s changes %s, which replicated table %s uses, on this writer only: writers that have not got the change hold or check its values otherwise, and their rows are parked for good', detail, col, tname)
            WHEN 'constraint' THEN format('fraiseql_repl: column rule %s of replicated table %s (%s) was made or undone after the install: peers already send these columns, so a row a peer wrote breaks it here (parked for good) or this writer computes the column otherwise', col, tname, detail)
            WHEN 'merge veto' THEN format('fraiseql_repl: %s on replicated table %s fires on merges and can drop or rewrite one, or refuse it where the merge cannot park it (%s): this writer would keep a row every other writer changed or deleted, or stall the link', col, tname, detail)
            ELSE format('fraiseql_repl: column %s.%s was added to a replicated table by hand: peers would park this writer''s changes until they had it too', tname, col)
        END,
        HINT = CASE kind
            WHEN 'renamed' THEN 'Keep the name; a view with the new name can point at the table.'
            WHEN 'dropped' THEN 'Keep the column and stop using it (ALTER COLUMN ... DROP NOT NULL if the application no longer fills it).'
            WHEN 'type' THEN 'Add a column with the new type, backfill it once on one writer, switch the application to it, and keep the old column.'
            WHEN 'pk' THEN 'Create a new table with the new key, copy the rows on one writer, and switch the application to it.'
            WHEN 'trigger' THEN 'Re-run the bootstrap (or python -m ops schema apply) to re-install the table.'
            WHEN 'commit check' THEN 'Re-run the bootstrap: it makes the trigger again.'
            WHEN 'unique' THEN format('DROP INDEX %s if it is still there (a refused CREATE INDEX CONCURRENTLY leaves it behind, invalid but enforced). Use a unique index on plain columns (through python -m ops schema apply), or check the rule in the application.', col)
            WHEN 'unique new' THEN format('Add it with python -m ops schema apply: it re-installs the merge functions on every writer. DROP INDEX %s if it is still there (a refused CREATE INDEX CONCURRENTLY leaves it behind, invalid but enforced).', col)
            WHEN 'unique gone' THEN 'Drop it with python -m ops schema apply: it re-installs the merge functions on every writer.'
            WHEN 'exclusion' THEN 'Check the rule in the application, or use a unique constraint on plain columns (through python -m ops schema apply).'
            WHEN 'counter' THEN 'The install refuses the same shape, so schema apply cannot add it either. '
                || coalesce((SELECT p.hint FROM fraiseql_repl.counter_column_problems(to_regclass(tname), tname, col) p
                              WHERE p.message = detail LIMIT 1), '')
                || ' A refused CREATE INDEX CONCURRENTLY leaves its index behind: drop it.'
            WHEN 'inheritance' THEN 'Replicate plain tables; a view can combine them.'
            WHEN 'meaning' THEN 'Add an enum value with python -m ops schema apply (every writer has it before any writer uses it), and never rename one; for a domain or a function a column uses, add a column with the new one through schema apply.'
            WHEN 'constraint' THEN 'Check the rule in the application, or put it only on columns a schema apply migration adds; keep generated and identity columns as the install found them.'
            WHEN 'merge veto' THEN 'Let it fire for local writes only (ALTER TABLE ... ENABLE TRIGGER or ENABLE RULE); a plain AFTER trigger may fire on merges (ENABLE ALWAYS), e.g. one that keeps a tv_* projection.'
            ELSE 'Run the migration with python -m ops schema apply: it adds the column on every writer before any writer sends it.'
        END;
END $f$;

-- What schema apply settles by re-installing the merge functions (its install step), so the DDL guard
-- lets it through inside schema apply and nowhere else.
CREATE OR REPLACE FUNCTION fraiseql_repl.settled_by_install(kind text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $f$
    SELECT kind IN ('added', 'unique new', 'unique gone')
$f$;

-- Whether type t is target, or holds it: an array of it, a domain over it (at any depth).
CREATE OR REPLACE FUNCTION fraiseql_repl.type_uses(t oid, target oid)
RETURNS boolean LANGUAGE sql STABLE AS $f$
    WITH RECURSIVE u(id) AS (
        SELECT t
        UNION
        SELECT x.id FROM u JOIN pg_catalog.pg_type y ON y.oid = u.id
         CROSS JOIN LATERAL (VALUES (nullif(y.typbasetype, 0)), (CASE WHEN y.typcategory = 'A' THEN nullif(y.typelem, 0) END)) x(id)
         WHERE x.id IS NOT NULL
    )
    SELECT EXISTS (SELECT 1 FROM u WHERE u.id = target)
$f$;

-- The replicated tables whose columns' values an ALTER DOMAIN, ALTER TYPE or CREATE OR REPLACE /
-- ALTER FUNCTION just changed the meaning of: a column of the type (or an array of it, or a domain
-- over it), or a CHECK, default or generation expression that calls the function. What changed.
CREATE OR REPLACE FUNCTION fraiseql_repl.tables_using(obj_type text, obj oid)
RETURNS TABLE (table_name text, what text) LANGUAGE sql STABLE AS $f$
    SELECT s.table_name, format('%s %s', obj_type, pg_catalog.format_type(obj, NULL))
      FROM fraiseql_repl.table_shape s
     WHERE obj_type IN ('type', 'domain') AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = to_regclass(s.table_name) AND a.attnum > 0 AND NOT a.attisdropped
              AND fraiseql_repl.type_uses(a.atttypid, obj))
    UNION
    SELECT s.table_name, format('function %s', obj::regprocedure)
      FROM fraiseql_repl.table_shape s
     WHERE obj_type = 'function' AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_depend dp
             LEFT JOIN pg_catalog.pg_constraint con ON dp.classid = 'pg_catalog.pg_constraint'::regclass AND con.oid = dp.objid
             LEFT JOIN pg_catalog.pg_attrdef ad ON dp.classid = 'pg_catalog.pg_attrdef'::regclass AND ad.oid = dp.objid
            WHERE dp.refclassid = 'pg_catalog.pg_proc'::regclass AND dp.refobjid = obj
              AND coalesce(con.conrelid, ad.adrelid) = to_regclass(s.table_name))
$f$;

-- ddl_command_end: a command changed a replicated table. Additions (columns, unique keys; dropped
-- unique keys) are allowed only inside `python -m ops schema apply` (it sets
-- fraiseql_repl.schema_apply); the rest never.
CREATE OR REPLACE FUNCTION fraiseql_repl.ddl_guard()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    rels oid[];
    d record;
    applying boolean := coalesce(current_setting('fraiseql_repl.schema_apply', true), '') = 'on';
BEGIN
    IF to_regclass('fraiseql_repl.table_shape') IS NULL THEN
        RETURN;
    END IF;
    IF tg_tag IN ('ALTER DOMAIN', 'ALTER TYPE', 'CREATE FUNCTION', 'ALTER FUNCTION') THEN
        -- What a replicated column holds or checks changed meaning on this writer only. Inside
        -- schema apply only ALTER TYPE passes (an enum value added on every writer first).
        FOR d IN SELECT DISTINCT u.table_name, u.what FROM pg_catalog.pg_event_trigger_ddl_commands() c
                 CROSS JOIN LATERAL fraiseql_repl.tables_using(c.object_type, c.objid) u LOOP
            CONTINUE WHEN applying AND tg_tag = 'ALTER TYPE';
            PERFORM fraiseql_repl.refuse_drift(d.table_name, 'meaning', d.what, tg_tag);
        END LOOP;
        RETURN;
    END IF;
    IF tg_tag IN ('CREATE TABLE', 'CREATE FOREIGN TABLE') THEN
        -- A new table is not replicated yet; made a partition or child of one, that one drifts.
        SELECT array_agg(DISTINCT i.inhparent) INTO rels
        FROM pg_catalog.pg_event_trigger_ddl_commands() c JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.objid;
        IF rels IS NULL THEN
            RETURN;
        END IF;
    ELSIF tg_tag <> 'ALTER SCHEMA' THEN
        SELECT array_agg(DISTINCT r) INTO rels FROM (
            SELECT CASE WHEN c.object_type IN ('table', 'table column') THEN c.objid
                        WHEN c.object_type = 'index' THEN (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = c.objid)
                        WHEN c.object_type = 'trigger' THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = c.objid)
                        WHEN c.object_type = 'rule' THEN (SELECT w.ev_class FROM pg_catalog.pg_rewrite w WHERE w.oid = c.objid)
                   END AS r
            FROM pg_catalog.pg_event_trigger_ddl_commands() c) x WHERE r IS NOT NULL;
        IF rels IS NULL THEN
            RETURN;
        END IF;
        -- ALTER TABLE parent ATTACH PARTITION / INHERIT: the other end of the link too.
        rels := rels || ARRAY(SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = ANY (rels))
                     || ARRAY(SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = ANY (rels));
    END IF;
    -- What no re-install settles first: its refusal says what to do instead.
    FOR d IN SELECT * FROM fraiseql_repl.shape_drift(rels) x ORDER BY fraiseql_repl.settled_by_install(x.kind) LOOP
        CONTINUE WHEN applying AND fraiseql_repl.settled_by_install(d.kind);
        PERFORM fraiseql_repl.refuse_drift(d.table_name, d.kind, d.col, d.detail);
    END LOOP;
END $f$;

-- sql_drop: a replicated table, one of its columns or one of its replication triggers is dropped, or
-- (outside schema apply) a unique index the merge functions settle clashes on.
CREATE OR REPLACE FUNCTION fraiseql_repl.ddl_guard_drop()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    o record;
    applying boolean := coalesce(current_setting('fraiseql_repl.schema_apply', true), '') = 'on';
BEGIN
    IF to_regclass('fraiseql_repl.table_shape') IS NULL THEN
        RETURN;
    END IF;
    FOR o IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() x
             WHERE x.object_type IN ('table', 'trigger') AND x.address_names[1:2] = ARRAY['fraiseql_repl', 'writing']
               AND (x.object_type = 'table' OR x.address_names[3] = 'fraiseql_repl_lease') LOOP
        PERFORM fraiseql_repl.refuse_drift('fraiseql_repl.writing', 'commit check', 'fraiseql_repl_lease', 'dropped');
    END LOOP;
    FOR o IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() x
             WHERE x.object_type IN ('table', 'table column', 'trigger') AND cardinality(x.address_names) >= 2
               AND EXISTS (SELECT 1 FROM fraiseql_repl.table_shape s
                           WHERE s.table_name = x.address_names[1] || '.' || x.address_names[2]) LOOP
        IF o.object_type = 'table' THEN
            RAISE EXCEPTION USING ERRCODE = 'FQ003',
                MESSAGE = format('fraiseql_repl: replicated table %s.%s cannot be dropped: peers still send its changes', o.address_names[1], o.address_names[2]),
                HINT = 'Stop writing it everywhere and keep it; taking a table out of replication is not done by schema apply.';
        ELSIF o.object_type = 'table column' THEN
            PERFORM fraiseql_repl.refuse_drift(o.address_names[1] || '.' || o.address_names[2], 'dropped', o.address_names[3], '');
        ELSIF o.address_names[3] = ANY (fraiseql_repl.replication_triggers()) THEN
            PERFORM fraiseql_repl.refuse_drift(o.address_names[1] || '.' || o.address_names[2], 'trigger', o.address_names[3], 'dropped');
        END IF;
    END LOOP;
    -- DROP INDEX names no table: look at every replicated table's unique keys.
    IF NOT applying AND EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() x WHERE x.object_type = 'index') THEN
        FOR o IN SELECT * FROM fraiseql_repl.shape_drift() d WHERE d.kind = 'unique gone' LOOP
            PERFORM fraiseql_repl.refuse_drift(o.table_name, o.kind, o.col, o.detail);
        END LOOP;
    END IF;
END $f$;

-- table_rewrite: ALTER TABLE (a type change with USING, even to the same type) or ALTER TYPE would
-- rewrite every row of a replicated table on this writer only. A rewrite fires no trigger, so
-- nothing of it is captured: refused always.
CREATE OR REPLACE FUNCTION fraiseql_repl.ddl_guard_rewrite()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    rel oid := pg_catalog.pg_event_trigger_table_rewrite_oid();
    tname text;
    d record;
BEGIN
    IF to_regclass('fraiseql_repl.table_shape') IS NULL THEN
        RETURN;
    END IF;
    SELECT s.table_name INTO tname FROM fraiseql_repl.table_shape s
     WHERE s.relid = rel OR s.table_name = fraiseql_repl.table_name(rel::regclass);
    IF tname IS NOT NULL THEN
        -- The catalog already has the change: say what it is where the guard knows it (a type change).
        FOR d IN SELECT * FROM fraiseql_repl.shape_drift(ARRAY[rel]) x WHERE NOT fraiseql_repl.settled_by_install(x.kind) LOOP
            PERFORM fraiseql_repl.refuse_drift(d.table_name, d.kind, d.col, d.detail);
        END LOOP;
        RAISE EXCEPTION USING ERRCODE = 'FQ003',
            MESSAGE = format('fraiseql_repl: this command would rewrite every row of replicated table %s on this writer only: '
                             'a rewrite fires no trigger, so nothing of it replicates', tname),
            HINT = 'Change values with UPDATE on one writer (it replicates). A column added through python -m ops schema apply '
                   'with a constant default, or none, needs no rewrite.';
    END IF;
END $f$;

-- Creating event triggers needs a superuser (on RDS: the master user, a member of rds_superuser).
-- Without that right the guard is skipped with a warning; `python -m ops schema status` reports it.
DO $do$ BEGIN
  -- An event trigger's tags cannot be altered: one that guards other commands is made again.
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard'
             AND evttags IS DISTINCT FROM ARRAY['ALTER TABLE', 'ALTER SCHEMA', 'CREATE INDEX', 'CREATE TABLE', 'CREATE FOREIGN TABLE',
                                                         'CREATE TRIGGER', 'ALTER TRIGGER', 'CREATE RULE', 'ALTER DOMAIN',
                                                         'ALTER TYPE', 'CREATE FUNCTION', 'ALTER FUNCTION']) THEN
    DROP EVENT TRIGGER fraiseql_repl_ddl_guard;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard') THEN
    CREATE EVENT TRIGGER fraiseql_repl_ddl_guard ON ddl_command_end
      WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA', 'CREATE INDEX', 'CREATE TABLE', 'CREATE FOREIGN TABLE', 'CREATE TRIGGER',
                   'ALTER TRIGGER', 'CREATE RULE', 'ALTER DOMAIN', 'ALTER TYPE', 'CREATE FUNCTION', 'ALTER FUNCTION')
      EXECUTE FUNCTION fraiseql_repl.ddl_guard();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard_drop') THEN
    CREATE EVENT TRIGGER fraiseql_repl_ddl_guard_drop ON sql_drop EXECUTE FUNCTION fraiseql_repl.ddl_guard_drop();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard_rewrite') THEN
    CREATE EVENT TRIGGER fraiseql_repl_ddl_guard_rewrite ON table_rewrite EXECUTE FUNCTION fraiseql_repl.ddl_guard_rewrite();
  END IF;
  -- Switched off to break glass: the bootstrap switches them on again.
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard' AND evtenabled <> 'O') THEN
    ALTER EVENT TRIGGER fraiseql_repl_ddl_guard ENABLE;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard_drop' AND evtenabled <> 'O') THEN
    ALTER EVENT TRIGGER fraiseql_repl_ddl_guard_drop ENABLE;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'fraiseql_repl_ddl_guard_rewrite' AND evtenabled <> 'O') THEN
    ALTER EVENT TRIGGER fraiseql_repl_ddl_guard_rewrite ENABLE;
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE WARNING 'fraiseql_repl: cannot create the DDL guard (event triggers need a superuser; on RDS the master user): %', SQLERRM;
END $do$;

-- Hold back: strip held columns from this writer's change images, refuse writes that set them, and
-- refuse any write to a held (new) table. Called for every image this writer puts in the change log
-- (the tables' emit functions, install.sql, once per statement when the table has anything held;
-- reemit); the apply worker's merges never call it.
CREATE OR REPLACE FUNCTION fraiseql_repl.hold_back_image(tname text, op "char", image jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    h record;
    strip text[] := '{}';
BEGIN
    FOR h IN SELECT x.col, x.accepted, x.migration FROM fraiseql_repl.held x WHERE x.table_name = tname LOOP
        IF h.col = '' THEN
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = format('fraiseql_repl: table %s is being added to every writer (migration %s) and takes writes once that is done', tname, h.migration),
                HINT = 'Retry in a few seconds: python -m ops schema apply reports when it has finished.';
        END IF;
        IF h.accepted IS NOT NULL AND op = 'u'
           AND NOT h.accepted @> jsonb_build_array(coalesce(image -> h.col, 'null'::jsonb)) THEN
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = format('fraiseql_repl: column %s.%s is being added to every writer (migration %s); writes that set it are refused until that is done', tname, h.col, h.migration),
                HINT = 'Retry in a few seconds: python -m ops schema apply reports when it has finished.';
        END IF;
        strip := strip || h.col;
    END LOOP;
    IF cardinality(strip) > 0 AND image IS NOT NULL THEN
        RETURN image - strip;
    END IF;
    RETURN image;
END $f$;

-- Hold the columns that replicated tables have here but their merge functions do not know yet.
-- Returns them. A stored generated column is stripped but never checked (each writer computes it).
CREATE OR REPLACE FUNCTION fraiseql_repl.hold_new_columns(migration text)
RETURNS TABLE (table_name text, col text) LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    ok jsonb;
    v jsonb;
BEGIN
    FOR r IN
        SELECT m.table_name AS tname, a.attname::text AS cname, format_type(a.atttypid, a.atttypmod) AS typ,
               a.attgenerated <> '' AS generated, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def,
               a.atthasmissing, a.attmissingval::text AS missing
        FROM fraiseql_repl.table_meta m
        JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(m.table_name) AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE NOT a.attname = ANY (m.columns)
    LOOP
        ok := NULL;
        IF NOT r.generated THEN
            ok := '[null]';
            IF r.def IS NOT NULL AND r.def !~ 'nextval\(' THEN
                EXECUTE format('SELECT to_jsonb((%s)::%s)', r.def, r.typ) INTO v;
                ok := ok || jsonb_build_array(v);
            END IF;
            IF r.atthasmissing AND r.missing IS NOT NULL THEN
                EXECUTE format('SELECT to_jsonb((%L::%s[])[1])', r.missing, r.typ) INTO v;
                ok := ok || jsonb_build_array(v);
            END IF;
        END IF;
        INSERT INTO fraiseql_repl.held (table_name, col, migration, accepted)
        VALUES (r.tname, r.cname, migration, ok) ON CONFLICT DO NOTHING;
        table_name := r.tname;
        col := r.cname;
        RETURN NEXT;
    END LOOP;
END $f$;

-- Install a table that is new on this writer, held until every writer has it.
CREATE OR REPLACE FUNCTION fraiseql_repl.install_new_table(rel regclass, strategy text, counter_cols text[], migration text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM fraiseql_repl.install_table(rel, strategy, counter_cols);
    INSERT INTO fraiseql_repl.held (table_name, col, migration) VALUES (fraiseql_repl.table_name(rel), '', migration)
    ON CONFLICT DO NOTHING;
END $f$;

-- Every writer merges the migration's columns and tables now: send them.
CREATE OR REPLACE FUNCTION fraiseql_repl.release_held(migration text)
RETURNS bigint LANGUAGE plpgsql AS $f$
DECLARE n bigint;
BEGIN
    DELETE FROM fraiseql_repl.held h WHERE h.migration = release_held.migration;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $f$;
