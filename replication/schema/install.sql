-- Per-table installation: the functions and triggers that make one table replicate by change images.
-- install_table(rel, strategy, counter_cols) reads the table's columns, keys and unique indexes from
-- the catalog and generates static-SQL functions for it (plans are cached, no catalog lookups per
-- row). Re-run it after a schema change (the schema-apply command does) or to change the strategy.
-- install_dispatcher() regenerates the one function the apply side calls for every change.

CREATE OR REPLACE FUNCTION fraiseql_repl.quote_table(rel regclass)
RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.table_name(rel regclass)
RETURNS text LANGUAGE sql STABLE AS $f$
    SELECT format('%s.%s', n.nspname, c.relname)
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel
$f$;

-- Give every identity or serial column of the table values no other writer can produce: this
-- node's values are congruent to its index modulo the stride, and start above anything in use.
CREATE OR REPLACE FUNCTION fraiseql_repl.stride_sequences(rel regclass)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    col text;
    seq text;
    idx int := fraiseql_repl.node_index();
    stride int := fraiseql_repl.sequence_stride();
    cur_inc bigint;
    cur_last bigint;
    top bigint;
    nxt bigint;
BEGIN
    FOR col IN
        SELECT a.attname::text FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        seq := pg_catalog.pg_get_serial_sequence(fraiseql_repl.quote_table(rel), col);
        CONTINUE WHEN seq IS NULL;
        SELECT s.increment_by, s.last_value INTO cur_inc, cur_last
        FROM pg_catalog.pg_sequences s WHERE format('%I.%I', s.schemaname, s.sequencename) = seq;
        EXECUTE format('SELECT max(%I)::bigint FROM %s', col, fraiseql_repl.quote_table(rel)) INTO top;
        top := greatest(coalesce(top, 0), coalesce(cur_last, 0));
        IF cur_inc = stride AND cur_last IS NOT NULL AND ((cur_last - idx) % stride + stride) % stride = 0
           AND cur_last >= top THEN
            CONTINUE;  -- already ours and ahead of every value in the table
        END IF;
        nxt := top + 1;
        nxt := nxt + ((idx - nxt) % stride + stride) % stride;
        EXECUTE format('ALTER SEQUENCE %s INCREMENT BY %s', seq, stride);
        PERFORM pg_catalog.setval(seq, nxt, false);
    END LOOP;
END $f$;

-- Why a counter column's sum of legal contributions could fail to merge (a peer's merge would raise
-- and stall the link) or show differently on the writer that wrote it: one row per reason, none when
-- the shape is fine. The install refuses the first (check_counter_column); the DDL guard (ddl.sql)
-- refuses a statement after which there is one.
CREATE OR REPLACE FUNCTION fraiseql_repl.counter_column_problems(rel regclass, tname text, col text)
RETURNS TABLE (message text, hint text) LANGUAGE plpgsql STABLE AS $f$
DECLARE
    a record;
    dep text;
BEGIN
    SELECT x.attnum, x.atttypid, x.atttypmod, x.attnotnull, x.attgenerated, format_type(x.atttypid, x.atttypmod) AS typ INTO a
    FROM pg_catalog.pg_attribute x WHERE x.attrelid = rel AND x.attname = col AND NOT x.attisdropped;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF a.attgenerated <> '' OR NOT (a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                                    OR (a.atttypid = 'numeric'::regtype AND a.atttypmod = -1)) THEN
        message := format('fraiseql_repl: counter column %s.%s is %s: regions add to it where each write was legal, '
                          'and their sum may not fit it', tname, col, a.typ || CASE WHEN a.attgenerated <> '' THEN ' (generated)' ELSE '' END);
        hint := 'Make it smallint, integer or bigint (a sum past the range shows clamped) or numeric without a precision.';
        RETURN NEXT;
    END IF;
    IF NOT a.attnotnull THEN
        message := format('fraiseql_repl: counter column %s.%s allows NULL: a NULL written on one writer would show as 0 on the others', tname, col);
        hint := format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT 0, ALTER COLUMN %I SET NOT NULL (after UPDATE ... SET %I = 0 WHERE %I IS NULL).', tname, col, col, col, col);
        RETURN NEXT;
    END IF;
    -- What reads the column (or the whole row: a function over the row may read it): pg_depend.
    SELECT string_agg(d, ', ') INTO dep FROM (
        SELECT format('CHECK constraint %s', con.conname) AS d FROM pg_catalog.pg_constraint con
         WHERE con.conrelid = rel AND con.contype = 'c'
           AND (a.attnum = ANY (con.conkey)
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend dp
                            WHERE dp.classid = 'pg_constraint'::regclass AND dp.objid = con.oid
                              AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = rel
                              AND dp.refobjsubid IN (0, a.attnum)))
        UNION ALL
        -- a generated column's expression (pg_attrdef) depends on the columns it reads
        SELECT format('generated column %s', g.attname) FROM pg_catalog.pg_attribute g
          JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = rel AND ad.adnum = g.attnum
          JOIN pg_catalog.pg_depend dp ON dp.classid = 'pg_attrdef'::regclass AND dp.objid = ad.oid
                                      AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = rel
                                      AND dp.refobjsubid IN (0, a.attnum)
         WHERE g.attrelid = rel AND g.attgenerated <> '' AND g.attnum > 0 AND NOT g.attisdropped
        UNION ALL
        -- an index over it that a sum can break: unique (two rows' sums meet), or on an expression or
        -- with a WHERE clause (evaluated on the sum: 1 / c, say)
        SELECT format('index %s', i.indexrelid::regclass) FROM pg_catalog.pg_index i
         WHERE i.indrelid = rel AND NOT i.indisprimary
           AND (i.indisunique OR i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
           AND (a.attnum = ANY (i.indkey::int2[])  -- a key column, or read by its expressions or predicate
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend dp
                            WHERE dp.classid = 'pg_class'::regclass AND dp.objid = i.indexrelid
                              AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = rel
                              AND dp.refobjsubid IN (0, a.attnum)))
        UNION ALL
        -- the application's own triggers that fire on merges too (ENABLE ALWAYS or REPLICA): one may
        -- refuse a sum
        SELECT format('trigger %s (fires on merges)', t.tgname) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = rel AND NOT t.tgisinternal AND t.tgenabled IN ('A', 'R')
           AND t.tgname NOT LIKE 'fraiseql\_repl\_%') x;
    IF dep IS NOT NULL THEN
        message := format('fraiseql_repl: counter column %s.%s has %s: two regions may each take the last unit, '
                          'and the sum would break it on every writer', tname, col, dep);
        hint := 'Check the rule in the application (it sees the whole sum only after the merge), or keep the table out of counter replication.';
        RETURN NEXT;
    END IF;
END $f$;

-- Refuses a counter column with a problem above (the first).
CREATE OR REPLACE FUNCTION fraiseql_repl.check_counter_column(rel regclass, tname text, col text)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE p record;
BEGIN
    FOR p IN SELECT * FROM fraiseql_repl.counter_column_problems(rel, tname, col) LIMIT 1 LOOP
        RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = p.message, HINT = p.hint;
    END LOOP;
END $f$;

-- The secondary unique keys the merge settles clashes on (install_table generates one clash block
-- per key; the DDL guard, ddl.sql, refuses a key made or dropped by hand since). Key columns only (an
-- INCLUDE column is no part of the rule); indexes on expressions or with a WHERE clause are refused.
CREATE OR REPLACE FUNCTION fraiseql_repl.unique_keys(rel regclass)
RETURNS TABLE (idx oid, name text, nnd boolean, cols text[]) LANGUAGE sql STABLE AS $f$
    SELECT i.indexrelid, i.indexrelid::regclass::text, i.indnullsnotdistinct, array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisunique AND NOT i.indisprimary AND i.indexprs IS NULL AND i.indpred IS NULL
      AND k.ord <= i.indnkeyatts
    GROUP BY i.indexrelid, i.indnullsnotdistinct
    ORDER BY 2
$f$;

-- install_table's generated code is written as templates with named parts, {{name}}, filled from a
-- jsonb of parts (fraiseql_repl.fill, one pass: a part's own text is never filled again).
CREATE OR REPLACE FUNCTION fraiseql_repl.fill(template text, parts jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE
    texts text[] := regexp_split_to_array(template, '\{\{[a-z_]+\}\}');
    names text[] := ARRAY(SELECT m[1] FROM regexp_matches(template, '\{\{([a-z_]+)\}\}', 'g') WITH ORDINALITY AS x(m, i)
                          ORDER BY i);
    out text := texts[1];
BEGIN
    FOR i IN 1 .. coalesce(cardinality(names), 0) LOOP
        IF NOT parts ? names[i] THEN
            RAISE EXCEPTION 'fraiseql_repl.fill: no part named %', names[i];
        END IF;
        out := out || coalesce(parts ->> names[i], '') || texts[i + 1];
    END LOOP;
    RETURN out;
END $f$;

-- format(fmt, x, x) for every name, joined by sep ('t.%I = _fq_r.%I', ' AND ').
CREATE OR REPLACE FUNCTION fraiseql_repl.each(names text[], fmt text, sep text)
RETURNS text LANGUAGE sql IMMUTABLE AS $f$
    SELECT string_agg(format(fmt, x, x), sep) FROM unnest(names) x
$f$;

-- What install_table refuses: a table whose writes in two regions the merge could not settle.
CREATE OR REPLACE FUNCTION fraiseql_repl.refuse_unmergeable(rel regclass, strategy text)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    tname text := fraiseql_repl.table_name(rel);
    bad record;
BEGIN
    IF strategy NOT IN ('lww', 'counter', 'set', 'app') THEN
        RAISE EXCEPTION 'fraiseql_repl: unknown strategy % for %', strategy, tname;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = rel AND (c.relkind = 'p' OR c.relispartition))
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = rel OR i.inhparent = rel) THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: replicated table %s is partitioned, a partition, or in an inheritance tree', tname),
            HINT = 'A write straight to a partition or child table would skip the parent''s fence and change capture. '
                   'Replicate plain tables only.';
    END IF;
    IF fraiseql_repl.pk_cols(rel) IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: replicated table %s has no primary key', tname),
            HINT = 'Every replicated table needs a primary key (FraiseQL write tables: pk_<entity>). Add one, then run the bootstrap or the schema apply again.';
    END IF;
    -- Keys travel as jsonb, and tombstones, key locks and merges find a key by jsonb equality: a key
    -- column whose own equality ignores a difference of spelling that jsonb keeps ('Key-1' and
    -- 'KEY-1' in citext or under a nondeterministic collation) would be two keys to the mesh and one
    -- to the table (two writers keep different rows for good, a deleted row comes back: round 9).
    FOR bad IN
        SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS typ
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype
        LEFT JOIN pg_catalog.pg_collation k ON k.oid = a.attcollation
        WHERE a.attrelid = rel AND a.attname::text = ANY (fraiseql_repl.pk_cols(rel))
          AND (coalesce(b.typname, t.typname) = 'citext' OR NOT coalesce(k.collisdeterministic, true))
    LOOP
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: primary key column %s.%s (%s) compares values that are spelled differently '
                             'as equal: the mesh tells keys apart by their spelling', tname, bad.name, bad.typ),
            HINT = 'Key the table by a column with plain equality (text with a deterministic collation, an integer, '
                   'a uuid), and keep the case-insensitive value in a unique column beside it, or store it lower-cased.';
    END LOOP;
    FOR bad IN
        SELECT c.conname::text AS name FROM pg_catalog.pg_constraint c WHERE c.conrelid = rel AND c.contype = 'x'
    LOOP
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: replicated table %s has exclusion constraint %s', tname, bad.name),
            HINT = 'Two regions can write rows that exclude each other and the merge cannot choose between them. '
                   'Keep the table out of replication, or check the rule in the application.';
    END LOOP;
    FOR bad IN
        SELECT i.indexrelid::regclass::text AS name FROM pg_catalog.pg_index i
        WHERE i.indrelid = rel AND i.indisunique AND NOT i.indisprimary AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
    LOOP
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: replicated table %s has unique index %s on an expression or with a WHERE clause', tname, bad.name),
            HINT = 'Two regions can insert rows that clash on it and the merge could not tell which to keep. Use a unique constraint on plain columns, or keep the table out of replication.';
    END LOOP;
END $f$;

-- The version columns a replicated table carries (and an app table's previous version). Only where
-- a column is missing: an ALTER TABLE of an installed table runs the DDL guard (ddl.sql), which would
-- find the triggers of this release missing until install_table makes them.
CREATE OR REPLACE FUNCTION fraiseql_repl.add_version_columns(rel regclass, strategy text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND NOT a.attisdropped
          AND a.attname IN ('_repl_ts', '_repl_node', '_repl_born')) < 3 THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS _repl_ts timestamptz NOT NULL DEFAULT ''-infinity'', '
                       'ADD COLUMN IF NOT EXISTS _repl_node text NOT NULL DEFAULT '''', '
                       'ADD COLUMN IF NOT EXISTS _repl_born timestamptz NOT NULL DEFAULT ''-infinity''',
                       fraiseql_repl.quote_table(rel));
    END IF;
    IF strategy = 'app' AND (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND NOT a.attisdropped
                               AND a.attname IN ('_repl_prev_ts', '_repl_prev_node')) < 2 THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS _repl_prev_ts timestamptz, '
                       'ADD COLUMN IF NOT EXISTS _repl_prev_node text', fraiseql_repl.quote_table(rel));
    END IF;
END $f$;

-- The parts every generator shares: the table's names, its columns and key as the generated code
-- spells them, and its generated functions' names.
CREATE OR REPLACE FUNCTION fraiseql_repl.table_parts(rel regclass, strategy text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $f$
DECLARE
    tname text := fraiseql_repl.table_name(rel);
    pk text[] := fraiseql_repl.pk_cols(rel);
    cols text[];  -- every column
    ins text[];   -- what a merge inserts: not generated
    upd text[];   -- what a merge updates: not generated, not an identity ALWAYS, not the key
BEGIN
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO cols
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO ins
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO upd
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      AND a.attidentity <> 'a' AND a.attname::text <> ALL (pk);
    RETURN jsonb_build_object(
        'tname', tname, 'qt', fraiseql_repl.quote_table(rel), 'lit', quote_literal(tname),
        'strategy', strategy, 'strategy_lit', quote_literal(strategy),
        'pk', to_jsonb(pk), 'cols', to_jsonb(cols), 'upd', to_jsonb(upd),
        'cols_lit', quote_literal(cols::text), 'ncols', cardinality(cols),
        'stamp_fn', format('fraiseql_repl.%I', 'stamp:' || tname),
        'emit_fn', format('fraiseql_repl.%I', 'emit:' || tname),
        'emit_row_fn', format('fraiseql_repl.%I', 'emit_row:' || tname),
        'merge_fn', format('fraiseql_repl.%I', 'merge:' || tname),
        'refresh_fn', format('fraiseql_repl.%I', 'refresh:' || tname),
        -- the key as jsonb_build_object arguments, of each row variable
        'pk_json_new', fraiseql_repl.each(pk, '%L, NEW.%I', ', '),
        'pk_json_old', fraiseql_repl.each(pk, '%L, OLD.%I', ', '),
        'pk_json_n', fraiseql_repl.each(pk, '%L, _fq_n.%I', ', '),
        'pk_json_o', fraiseql_repl.each(pk, '%L, _fq_o.%I', ', '),
        'pk_json_t', fraiseql_repl.each(pk, '%L, t.%I', ', '),
        -- the key of table row t matched against a row variable
        'pk_match_r', fraiseql_repl.each(pk, 't.%I = _fq_r.%I', ' AND '),
        'pk_match_k', fraiseql_repl.each(pk, 't.%I = _fq_k.%I', ' AND '),
        'pk_match_clash', fraiseql_repl.each(pk, 't.%I = _fq_clash.%I', ' AND '),
        'pk_conflict', fraiseql_repl.each(pk, '%I', ', '),
        'ins_list', fraiseql_repl.each(ins, '%I', ', '),
        'ins_values', fraiseql_repl.each(ins, '_fq_r.%I', ', '),
        'upd_list', fraiseql_repl.each(upd, '%I', ', '),
        'upd_values', fraiseql_repl.each(upd, '_fq_r.%I', ', '),
        'upd_excluded', fraiseql_repl.each(upd, 'EXCLUDED.%I', ', '),
        'overriding', CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel
                                           AND a.attidentity = 'a' AND NOT a.attisdropped)
                           THEN ' OVERRIDING SYSTEM VALUE' ELSE '' END);
END $f$;

-- Local writes: stamp the version (and the incarnation on insert or key change).
CREATE OR REPLACE FUNCTION fraiseql_repl.stamp_function(t jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $gen$
    SELECT fraiseql_repl.fill($b$
CREATE OR REPLACE FUNCTION {{stamp_fn}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC' AS $f$
DECLARE
    _fq_born timestamptz;
BEGIN
    IF TG_OP = 'UPDATE' AND {{strategy_lit}} = 'set' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: %s is a replicated set: insert or delete elements, do not update them', {{lit}});
    END IF;
    -- An update that changes the key is a delete of the old key and an insert of the new one.
    IF TG_OP = 'INSERT' OR jsonb_build_object({{pk_json_new}}) IS DISTINCT FROM jsonb_build_object({{pk_json_old}}) THEN
        -- A re-insert of a deleted key is a new incarnation, newer than the delete. The incarnation
        -- is named after the delete it follows, so regions that create the same key concurrently
        -- share it (their counters sum) while a set element's incarnation is its own add. Where the
        -- key's tombstone has been purged here, it is born after every purged delete of the table:
        -- a writer that still holds the tombstone must not take it for the deleted incarnation.
        -- (fraiseql_repl.birth_after(tname, tombstone_of(tname, key).ts), in one query.)
        SELECT greatest(coalesce((SELECT x.ts FROM fraiseql_repl.tombstones x
                                   WHERE x.table_name = {{lit}} AND x.pk = jsonb_build_object({{pk_json_new}})), '-infinity'),
                        coalesce((SELECT p.upto FROM fraiseql_repl.purged p WHERE p.table_name = {{lit}}), '-infinity'))
          INTO _fq_born;
        NEW._repl_ts := fraiseql_repl.next_ts(_fq_born);
        NEW._repl_born := CASE WHEN {{strategy_lit}} = 'set' THEN NEW._repl_ts ELSE _fq_born END;
    ELSE
        NEW._repl_ts := fraiseql_repl.next_ts(OLD._repl_ts);
        NEW._repl_born := OLD._repl_born;
    END IF;
    NEW._repl_node := fraiseql_repl.node_name();
    {{app_stamp}}
    RETURN NEW;
END $f$$b$, t || jsonb_build_object('app_stamp', CASE WHEN t ->> 'strategy' = 'app'
        THEN fraiseql_repl.fill($a$
    IF TG_OP = 'UPDATE' AND current_setting('fraiseql_repl.resolving', true) = 'on' THEN
        -- The application resolves a conflict: newer than every version it was shown.
        NEW._repl_ts := greatest(NEW._repl_ts, (
            SELECT max((remote_row ->> '_repl_ts')::timestamptz) + interval '1 microsecond'
            FROM fraiseql_repl.conflicts WHERE table_name = {{lit}} AND pk = jsonb_build_object({{pk_json_new}}) AND resolved_at IS NULL));
        NEW._repl_prev_ts := NULL;
        NEW._repl_prev_node := '*';
        UPDATE fraiseql_repl.conflicts SET resolved_at = clock_timestamp()
        WHERE table_name = {{lit}} AND pk = jsonb_build_object({{pk_json_new}}) AND resolved_at IS NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        NEW._repl_prev_ts := OLD._repl_ts;
        NEW._repl_prev_node := OLD._repl_node;
    ELSE
        NEW._repl_prev_ts := NULL;
        NEW._repl_prev_node := NULL;
    END IF;$a$, t) ELSE '' END))
$gen$;

-- Counter contributions of this node, per incarnation: the parts the emit functions and the merge
-- use (shard_sql, shard_ins_sql, counter_set). Refuses a counter column no sum of legal writes fits.
CREATE OR REPLACE FUNCTION fraiseql_repl.counter_parts(rel regclass, t jsonb, counter_cols text[])
RETURNS jsonb LANGUAGE plpgsql AS $gen$
DECLARE
    c text;
    p jsonb;
    typ regtype;
    shard_sql text := '';
    shard_ins_sql text;
    counter_set text := '';
BEGIN
    IF t ->> 'strategy' <> 'counter' THEN
        RETURN jsonb_build_object('shard_sql', '', 'shard_ins_sql', '', 'counter_set', '');
    END IF;
    FOREACH c IN ARRAY counter_cols LOOP
        IF NOT t -> 'cols' ? c THEN
            RAISE EXCEPTION 'fraiseql_repl: counter column %.% does not exist', t ->> 'tname', c;
        END IF;
        -- A counter shows the sum of every region's contributions, made where each was legal: only
        -- a shape every such sum fits (clamped to an integer type's range) merges on every writer.
        -- Anything narrower would fail the merge on a peer and stall its link for good.
        PERFORM fraiseql_repl.check_counter_column(rel, t ->> 'tname', c);
        SELECT a.atttypid INTO typ FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND a.attname = c;
        p := t || jsonb_build_object('col_ident', quote_ident(c), 'col_lit', quote_literal(c),
            'col_type', (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = rel AND a.attname = c),
            'clamp_open', CASE WHEN typ IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) THEN 'least(greatest(' ELSE '' END,
            'clamp_close', CASE typ WHEN 'int2'::regtype THEN ', -32768), 32767)'
                                    WHEN 'int4'::regtype THEN ', -2147483648), 2147483647)'
                                    WHEN 'int8'::regtype THEN ', -9223372036854775808), 9223372036854775807)' ELSE '' END);
        shard_sql := shard_sql || fraiseql_repl.fill($s$
        _fq_delta := coalesce(NEW.{{col_ident}}, 0)::numeric - CASE WHEN _fq_moved THEN 0 ELSE coalesce(OLD.{{col_ident}}, 0)::numeric END;
        IF _fq_delta <> 0 THEN
            INSERT INTO fraiseql_repl.shards AS s (table_name, pk, col, node, born, amount)
            VALUES ({{lit}}, jsonb_build_object({{pk_json_new}}), {{col_lit}}, fraiseql_repl.node_name(), NEW._repl_born, _fq_delta)
            ON CONFLICT (table_name, pk, col, node, born) DO UPDATE SET amount = s.amount + excluded.amount;
        END IF;$s$, p);
        -- An insert's contribution is its value (one statement, one row per key).
        shard_ins_sql := coalesce(shard_ins_sql, '') || fraiseql_repl.fill($s$
        INSERT INTO fraiseql_repl.shards AS s (table_name, pk, col, node, born, amount)
        SELECT {{lit}}, jsonb_build_object({{pk_json_n}}), {{col_lit}}, fraiseql_repl.node_name(), _fq_n._repl_born, coalesce(_fq_n.{{col_ident}}, 0)::numeric
        FROM _fq_new _fq_n WHERE coalesce(_fq_n.{{col_ident}}, 0)::numeric <> 0
        ON CONFLICT (table_name, pk, col, node, born) DO UPDATE SET amount = s.amount + excluded.amount;$s$, p);
        -- The sum over every incarnation the key's deletes have not removed: regions that create
        -- the same key concurrently add up, whether or not they named the incarnation alike.
        -- An integer column shows the sum clamped to its type's range: shards written legally on
        -- two writers may add up past it, and a merge that failed on that would stall the link
        -- (the shard's apply runs outside receive_change's exception block) on every writer.
        -- The shards keep the true sum (numeric); every writer clamps it alike.
        counter_set := counter_set || fraiseql_repl.fill(
            ', {{col_ident}} = {{clamp_open}}(SELECT coalesce(sum(s.amount), 0) FROM fraiseql_repl.shards s '
            'WHERE s.table_name = {{lit}} AND s.pk = _fq_key AND s.col = {{col_lit}} AND NOT EXISTS (SELECT 1 '
            'FROM fraiseql_repl.tombstones x WHERE x.table_name = {{lit}} AND x.pk = _fq_key AND x.born >= s.born)){{clamp_close}}::{{col_type}}', p);
    END LOOP;
    RETURN jsonb_build_object('shard_sql', shard_sql, 'shard_ins_sql', coalesce(shard_ins_sql, ''),
                              'counter_set', substr(counter_set, 3));
END $gen$;

-- Local writes: emit the changes (after the rows are final), keep a tombstone for deletes. Once
-- per statement, from its transition tables: one insert into the change log for all the rows a
-- statement wrote, not a trigger call and an insert per row.
CREATE OR REPLACE FUNCTION fraiseql_repl.emit_function(t jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $gen$
    SELECT fraiseql_repl.fill($b$
CREATE OR REPLACE FUNCTION {{emit_fn}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC' AS $f$
DECLARE
    _fq_key jsonb;
    _fq_count bigint;
BEGIN
    -- This statement's commit check (control.sql), queued after everything the statement queued.
    PERFORM fraiseql_repl.arm_commit_check();
    IF TG_OP = 'DELETE' THEN
        -- The table held back by a schema change travelling through the mesh (ddl.sql)?
        PERFORM fraiseql_repl.hold_back_image({{lit}}, 'd', NULL) FROM fraiseql_repl.held _fq_h WHERE _fq_h.table_name = {{lit}} LIMIT 1;
        -- Each delete is newer than the row it removes; its change and its tombstone carry the same
        -- version and time. (One query: the tombstones are made from the changes' RETURNING rows.)
        WITH _fq_d AS (
            INSERT INTO fraiseql_repl.changes (origin, tbl, op, pk, ts, node, born, origin_at)
            SELECT fraiseql_repl.node_name(), {{lit}}, 'd', jsonb_build_object({{pk_json_o}}), fraiseql_repl.next_ts(_fq_o._repl_ts),
                   fraiseql_repl.node_name(), _fq_o._repl_born, clock_timestamp()
            FROM _fq_old _fq_o
            RETURNING pk, ts, born, origin_at
        ), _fq_t AS MATERIALIZED (
            SELECT fraiseql_repl.put_tombstone({{lit}}, _fq_d.pk, _fq_d.ts, fraiseql_repl.node_name(), _fq_d.born,
                                               fraiseql_repl.node_name(), _fq_d.origin_at)
            FROM _fq_d
        )
        SELECT count(*) INTO _fq_count FROM _fq_t;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND {{strategy_lit}} = 'counter' THEN
        RETURN NULL;  -- a counter table's updates are emitted row by row, each image before its shard
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- The keys' locks (fraiseql_repl.key_bucket), shared, in order, then a fresh look at the
        -- tombstones: a peer's delete merged here meanwhile has committed (or it waits for our
        -- commit, and removes the rows then).
        PERFORM fraiseql_repl.lock_bucket_shared(_fq_b.b)
           FROM (SELECT DISTINCT fraiseql_repl.key_bucket({{lit}}, jsonb_build_object({{pk_json_n}})) AS b FROM _fq_new _fq_n ORDER BY 1) _fq_b;
        IF current_setting('transaction_isolation') <> 'read committed' THEN
            PERFORM fraiseql_repl.refuse_unseen_deletes({{lit}}, ARRAY(SELECT jsonb_build_object({{pk_json_n}}) FROM _fq_new _fq_n));
        END IF;
        -- A peer's delete of one of these keys landed while we inserted it: our row would be an
        -- incarnation that is already dead everywhere else. Retrying sees the tombstone and starts
        -- a new one.
        SELECT jsonb_build_object({{pk_json_n}}) INTO _fq_key FROM _fq_new _fq_n
         WHERE EXISTS (SELECT 1 FROM fraiseql_repl.tombstones x WHERE x.table_name = {{lit}}
                        AND x.pk = jsonb_build_object({{pk_json_n}}) AND x.born >= _fq_n._repl_born)
         LIMIT 1;
        IF _fq_key IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '40001',
                MESSAGE = format('fraiseql_repl: %s %s was deleted in another region while this insert ran', {{lit}}, _fq_key),
                HINT = 'Retry the transaction.';
        END IF;
    END IF;
    -- Columns or the table held back by a schema change travelling through the mesh (ddl.sql) are
    -- left out of the images, or the write refused.
    INSERT INTO fraiseql_repl.changes (origin, tbl, op, pk, ts, node, born, row_image)
    SELECT fraiseql_repl.node_name(), {{lit}}, 'u', jsonb_build_object({{pk_json_n}}), _fq_n._repl_ts, _fq_n._repl_node, _fq_n._repl_born,
           CASE WHEN _fq_h.holding THEN fraiseql_repl.hold_back_image({{lit}}, 'u', to_jsonb(_fq_n.*)) ELSE to_jsonb(_fq_n.*) END
    FROM _fq_new _fq_n, (SELECT EXISTS (SELECT 1 FROM fraiseql_repl.held x WHERE x.table_name = {{lit}}) AS holding) _fq_h;
    IF TG_OP = 'INSERT' THEN
        -- Counter shards after the images, as the merges expect them (each shard's arrival
        -- recomputes the counter from the shards; an image the merge keeps out would not).
        {{shard_ins_sql}}
    END IF;
    RETURN NULL;
END $f$$b$, t)
$gen$;

-- Row by row, only where a statement's transition tables cannot say it: an update that changes
-- the key (a delete of the old key, an insert of the new) and, in counter tables, each updated
-- row: its image, then its shard's delta (in that order: a peer merges the image, then
-- recomputes the counter when the shard arrives; the other way round, an image the merge keeps
-- out leaves a counter computed before a concurrent shard was visible).
CREATE OR REPLACE FUNCTION fraiseql_repl.emit_row_function(t jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $gen$
    SELECT fraiseql_repl.fill($b$
CREATE OR REPLACE FUNCTION {{emit_row_fn}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC' AS $f$
DECLARE
    _fq_del_ts timestamptz;
    _fq_delta numeric;
    _fq_moved boolean := jsonb_build_object({{pk_json_new}}) IS DISTINCT FROM jsonb_build_object({{pk_json_old}});
BEGIN
    IF _fq_moved THEN
        -- A key change is a delete of the old key (newer than the row it removes) and an insert of
        -- the new key, a new incarnation (stamped as one): its shards carry the row's whole value,
        -- and it is refused, as an insert is, where a peer's delete of the new key landed meanwhile
        -- (the new key's lock first, as an insert takes it).
        PERFORM fraiseql_repl.lock_bucket_shared(fraiseql_repl.key_bucket({{lit}}, jsonb_build_object({{pk_json_new}})));
        IF current_setting('transaction_isolation') <> 'read committed' THEN
            PERFORM fraiseql_repl.refuse_unseen_deletes({{lit}}, ARRAY[jsonb_build_object({{pk_json_new}})]);
        END IF;
        IF EXISTS (SELECT 1 FROM fraiseql_repl.tombstones x WHERE x.table_name = {{lit}}
                    AND x.pk = jsonb_build_object({{pk_json_new}}) AND x.born >= NEW._repl_born) THEN
            RAISE EXCEPTION USING ERRCODE = '40001',
                MESSAGE = format('fraiseql_repl: %s %s was deleted in another region while this update ran', {{lit}},
                                 jsonb_build_object({{pk_json_new}})),
                HINT = 'Retry the transaction.';
        END IF;
        PERFORM fraiseql_repl.hold_back_image({{lit}}, 'd', NULL);
        _fq_del_ts := fraiseql_repl.next_ts(OLD._repl_ts);
        PERFORM fraiseql_repl.put_tombstone({{lit}}, jsonb_build_object({{pk_json_old}}), _fq_del_ts, fraiseql_repl.node_name(),
                                            OLD._repl_born, fraiseql_repl.node_name(), clock_timestamp());
        INSERT INTO fraiseql_repl.changes (origin, tbl, op, pk, ts, node, born)
        VALUES (fraiseql_repl.node_name(), {{lit}}, 'd', jsonb_build_object({{pk_json_old}}), _fq_del_ts, fraiseql_repl.node_name(), OLD._repl_born);
    END IF;
    IF {{strategy_lit}} = 'counter' THEN
        INSERT INTO fraiseql_repl.changes (origin, tbl, op, pk, ts, node, born, row_image)
        VALUES (fraiseql_repl.node_name(), {{lit}}, 'u', jsonb_build_object({{pk_json_new}}), NEW._repl_ts, NEW._repl_node, NEW._repl_born,
                fraiseql_repl.hold_back_image({{lit}}, 'u', to_jsonb(NEW)));
        {{shard_sql}}
    END IF;
    RETURN NULL;
END $f$$b$, t)
$gen$;

-- Secondary unique keys: the newer row keeps the value; the other one is removed here (it is
-- removed on every node, each deciding the same way) and recorded for the application.
CREATE OR REPLACE FUNCTION fraiseql_repl.unique_parts(rel regclass, t jsonb)
RETURNS text LANGUAGE plpgsql STABLE AS $gen$
DECLARE
    uniq record;
    out text := '';
BEGIN
    FOR uniq IN SELECT u.name, u.nnd, u.cols FROM fraiseql_repl.unique_keys(rel) u LOOP
        out := out || fraiseql_repl.fill($u$
    SELECT * INTO _fq_clash FROM {{qt}} t WHERE {{unique_match}} AND NOT ({{pk_match_r}}) LIMIT 1 FOR UPDATE;
    IF FOUND THEN
        -- The newer row holds the value. The other one is not dropped but parked (FQ004), here and on
        -- every writer that meets the clash, and merged again when the value is free: so every writer
        -- ends with the same rows whatever order the versions came in (a clash one writer saw and
        -- another never did, because the winner had moved on, leaves no difference behind).
        IF {{strategy_lit}} = 'app' OR NOT fraiseql_repl.newer_row(_fq_r._repl_born, _fq_r._repl_ts, _fq_r._repl_node,
                                                        _fq_clash._repl_born, _fq_clash._repl_ts, _fq_clash._repl_node) THEN
            INSERT INTO fraiseql_repl.conflicts (table_name, pk, kind, local_row, remote_row, remote_node)
            SELECT {{lit}}, _fq_c.pk, 'unique ' || {{index_lit}} || ': incoming lost', to_jsonb(_fq_clash), _fq_c.row_image, _fq_c.node
            WHERE NOT EXISTS (SELECT 1 FROM fraiseql_repl.conflicts x WHERE x.table_name = {{lit}} AND x.pk = _fq_c.pk
                              AND x.kind = 'unique ' || {{index_lit}} || ': incoming lost' AND x.resolved_at IS NULL);
            IF _fq_cur._repl_ts IS NOT NULL THEN
                -- The key's older version here is superseded by the one that waits: it leaves the
                -- table, as on a writer where the newer version was in place when the clash came,
                -- and its children wait with it.
                DELETE FROM {{qt}} t WHERE {{pk_match_r}};
                PERFORM fraiseql_repl.fk_park_children({{lit}}, _fq_c.pk);
            END IF;
            RETURN 'unique_incoming_lost';
        END IF;
        IF NOT _fq_losers @> jsonb_build_array(jsonb_build_object('row', to_jsonb(_fq_clash))) THEN
            _fq_losers := _fq_losers || jsonb_build_array(jsonb_build_object('row', to_jsonb(_fq_clash), 'index', {{index_lit}}));
        END IF;
    END IF;$u$, t || jsonb_build_object(
            'index_lit', quote_literal(uniq.name),
            'unique_match', fraiseql_repl.each(uniq.cols, CASE WHEN uniq.nnd THEN 't.%I IS NOT DISTINCT FROM _fq_r.%I'
                                                                ELSE 't.%I = _fq_r.%I' END, ' AND ')));
    END LOOP;
    RETURN out;
END $gen$;

-- app tables: a change that is not a fast-forward of ours is the application's to resolve.
CREATE OR REPLACE FUNCTION fraiseql_repl.app_parts(t jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $gen$
    SELECT CASE WHEN t ->> 'strategy' = 'app' THEN fraiseql_repl.fill($a$
        IF _fq_r._repl_prev_node = '*' AND fraiseql_repl.newer(_fq_r._repl_ts, _fq_r._repl_node, _fq_cur._repl_ts, _fq_cur._repl_node) THEN
            UPDATE fraiseql_repl.conflicts SET resolved_at = clock_timestamp()
            WHERE table_name = _fq_c.tbl AND pk = _fq_c.pk AND resolved_at IS NULL;  -- the application's resolution wins
        ELSIF (_fq_r._repl_prev_ts, _fq_r._repl_prev_node) IS NOT DISTINCT FROM (_fq_cur._repl_ts, _fq_cur._repl_node) THEN
            NULL;  -- a fast-forward: the writer had seen our version
        ELSIF (_fq_r._repl_ts, _fq_r._repl_node) IS NOT DISTINCT FROM (_fq_cur._repl_prev_ts, _fq_cur._repl_prev_node) THEN
            RETURN 'ancestor_ignored';  -- the version ours was based on, arriving late
        ELSE
            INSERT INTO fraiseql_repl.conflicts (table_name, pk, kind, local_row, remote_row, remote_node)
            VALUES (_fq_c.tbl, _fq_c.pk, 'update', to_jsonb(_fq_cur), _fq_c.row_image, _fq_c.node);
            RETURN 'app_conflict_logged';
        END IF;
        UPDATE {{qt}} t SET ({{upd_list}}) = ROW({{upd_values}}) WHERE {{pk_match_r}};
        RETURN 'updated';$a$, t) ELSE '' END
$gen$;

-- Foreign keys. Merges run as a replica, where PostgreSQL's own foreign-key triggers do not fire:
-- the merge does their job, the same way on every writer. A child that arrives for a parent not
-- here yet waits (parked, FQ005, merged again later); one whose parent was deleted meets the
-- key's ON DELETE rule (cascade, restrict, no action: it is dropped, as it would have been
-- deleted with the parent; set null: it arrives without the reference). A parent's delete that
-- arrives does the same to the children here (fraiseql_repl.fk_on_delete); a parent that leaves
-- the table to wait for its unique value takes its children here with it (fk_park_children).
CREATE OR REPLACE FUNCTION fraiseql_repl.fk_parts(rel regclass, t jsonb)
RETURNS text LANGUAGE plpgsql STABLE AS $gen$
DECLARE
    fk record;
    out text := '';
BEGIN
    FOR fk IN
        SELECT con.conname::text AS name, con.confrelid::regclass AS parent, con.confdeltype AS on_delete,
               con.confupdtype AS on_update,
               array_agg(ca.attname::text ORDER BY k.ord) AS cols, array_agg(pa.attname::text ORDER BY k.ord) AS pcols,
               (SELECT i.indisprimary FROM pg_catalog.pg_index i WHERE i.indexrelid = con.conindid) AS to_pk
        FROM pg_catalog.pg_constraint con
        CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(ca_num, pa_num, ord)
        JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = k.ca_num
        JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.pa_num
        WHERE con.conrelid = rel AND con.contype = 'f'
        GROUP BY con.oid, con.conname, con.confrelid, con.confdeltype, con.confupdtype, con.conindid
    LOOP
        IF NOT fk.to_pk OR fk.on_delete = 'd' OR fk.on_update IN ('c', 'n', 'd') THEN
            RAISE EXCEPTION USING ERRCODE = '0A000',
                MESSAGE = format('fraiseql_repl: foreign key %s of replicated table %s cannot be merged', fk.name, t ->> 'tname'),
                HINT = 'Merges enforce foreign keys that reference the parent''s primary key, with ON DELETE CASCADE, '
                       'SET NULL, RESTRICT or NO ACTION and no ON UPDATE action. Change the constraint, or keep the '
                       'reference without a constraint (python -m ops verify reports orphans either way).';
        END IF;
        -- The parent row is locked as PostgreSQL's own check locks it (FOR KEY SHARE): a delete of it
        -- running at the same time waits for this merge, then cascades to what it added.
        out := out || fraiseql_repl.fill($k$
    IF {{fk_present}} THEN
        PERFORM 1 FROM {{parent_qt}} p WHERE {{parent_match}} FOR KEY SHARE;
        IF NOT FOUND THEN
            IF EXISTS (SELECT 1 FROM fraiseql_repl.tombstones x WHERE x.table_name = {{parent_lit}} AND x.pk = jsonb_build_object({{parent_key}})) THEN
                {{on_parent_deleted}}
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'FQ005',
                    MESSAGE = format('fraiseql_repl: %s references %s %s, which is not here yet', {{lit}}, {{parent_lit}}, jsonb_build_object({{parent_key}})),
                    HINT = 'Parked and merged again once the parent has arrived.';
            END IF;
        END IF;
    END IF;$k$, t || jsonb_build_object(
            'fk_present', fraiseql_repl.each(fk.cols, '_fq_r.%I IS NOT NULL', ' AND '),
            'parent_qt', fraiseql_repl.quote_table(fk.parent),
            'parent_match', (SELECT string_agg(format('p.%I = _fq_r.%I', pc, cc), ' AND ') FROM unnest(fk.pcols, fk.cols) AS z(pc, cc)),
            'parent_lit', quote_literal(fraiseql_repl.table_name(fk.parent)),
            'parent_key', (SELECT string_agg(format('%L, _fq_r.%I', pc, cc), ', ') FROM unnest(fk.pcols, fk.cols) AS z(pc, cc)),
            'on_parent_deleted', CASE WHEN fk.on_delete = 'n' THEN fraiseql_repl.each(fk.cols, '_fq_r.%I := NULL;', ' ')
                                      ELSE 'RETURN ''fk_parent_deleted'';' END));
    END LOOP;
    RETURN out;
END $gen$;

-- The apply side: merge one peer change into this table. Its parts: t's, the counter's, and those of
-- unique_parts, app_parts and fk_parts.
CREATE OR REPLACE FUNCTION fraiseql_repl.merge_function(rel regclass, t jsonb)
RETURNS text LANGUAGE sql STABLE AS $gen$
    SELECT fraiseql_repl.fill($b$
CREATE OR REPLACE FUNCTION {{merge_fn}}(_fq_c fraiseql_repl.changes) RETURNS text LANGUAGE plpgsql SET TimeZone = 'UTC' AS $f$
DECLARE
    _fq_r {{qt}};
    _fq_k {{qt}};
    _fq_cur {{qt}};
    _fq_clash {{qt}};
    _fq_d {{qt}};
    _fq_tomb fraiseql_repl.tombstones;
    _fq_key jsonb := _fq_c.pk;
    _fq_n bigint;
    _fq_kind text;
    _fq_losers jsonb := '[]';
    _fq_i integer;
BEGIN
    IF _fq_c.op = 'd' THEN
        PERFORM fraiseql_repl.put_tombstone({{lit}}, _fq_c.pk, _fq_c.ts, _fq_c.node, _fq_c.born, _fq_c.origin, _fq_c.origin_at);
        _fq_k := jsonb_populate_record(NULL::{{qt}}, _fq_c.pk);
        _fq_tomb := fraiseql_repl.tombstone_of({{lit}}, _fq_c.pk);
        -- Remove every incarnation a delete of the key saw (and older ones); a later re-insert survives.
        DELETE FROM {{qt}} t WHERE {{pk_match_k}} AND t._repl_born <= _fq_tomb.born;
        GET DIAGNOSTICS _fq_n = ROW_COUNT;
        IF _fq_n = 0 THEN
            -- An insert of the key may be uncommitted (another link's merge, a local insert): take
            -- the key's lock, exclusive, which waits for it, and look again. An insert that comes
            -- later waits for our commit and sees the tombstone.
            PERFORM fraiseql_repl.lock_bucket(fraiseql_repl.key_bucket({{lit}}, _fq_c.pk));
            DELETE FROM {{qt}} t WHERE {{pk_match_k}} AND t._repl_born <= _fq_tomb.born;
            GET DIAGNOSTICS _fq_n = ROW_COUNT;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM {{qt}} t WHERE {{pk_match_k}}) THEN
            PERFORM fraiseql_repl.fk_on_delete({{lit}}, _fq_c.pk);
        END IF;
        RETURN CASE WHEN _fq_n > 0 THEN 'delete_applied' ELSE 'delete_nothing_to_remove' END;
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(_fq_c.row_image) x WHERE x <> ALL ({{cols_lit}}::text[])) THEN
        RAISE EXCEPTION USING ERRCODE = 'FQ001',
            MESSAGE = format('fraiseql_repl: change for %s has columns this node lacks: %s', {{lit}},
                             (SELECT string_agg(x, ', ') FROM jsonb_object_keys(_fq_c.row_image) x WHERE x <> ALL ({{cols_lit}}::text[]))),
            HINT = 'Apply the schema change on every writer (python -m ops schema apply); the change is parked and retried.';
    END IF;
    _fq_r := jsonb_populate_record(NULL::{{qt}}, _fq_c.row_image);
    -- Lock the row first: a local delete in flight commits its tombstone before we read it.
    SELECT * INTO _fq_cur FROM {{qt}} t WHERE {{pk_match_r}} FOR UPDATE;
    IF (SELECT count(*) FROM jsonb_object_keys(_fq_c.row_image)) < {{ncols}} THEN
        -- From a writer that does not send every column yet (a schema change on its way through the
        -- mesh): what it does not send, it did not change; a new row takes the defaults.
        IF _fq_cur._repl_ts IS NULL THEN
            {{defaults_sql}}
            _fq_r := jsonb_populate_record(_fq_d, _fq_c.row_image);
        ELSE
            _fq_r := jsonb_populate_record(_fq_cur, _fq_c.row_image);
        END IF;
    END IF;
    IF _fq_cur._repl_ts IS NULL THEN
        -- No row to lock: the key's lock, shared, before the tombstone is read (a delete merged
        -- meanwhile on another link has committed, or waits for our commit and removes our row).
        PERFORM fraiseql_repl.lock_bucket_shared(fraiseql_repl.key_bucket({{lit}}, _fq_c.pk));
    END IF;
    _fq_tomb := fraiseql_repl.tombstone_of({{lit}}, _fq_c.pk);
    IF _fq_tomb.ts IS NOT NULL AND _fq_r._repl_born <= _fq_tomb.born THEN
        RETURN 'dropped_deleted_incarnation';
    END IF;
    {{waiting_sql}}
    IF _fq_cur._repl_ts IS NOT NULL THEN
        IF (_fq_r._repl_ts, _fq_r._repl_node) IS NOT DISTINCT FROM (_fq_cur._repl_ts, _fq_cur._repl_node) THEN
            RETURN 'duplicate';
        END IF;
        {{app_sql}}
        IF NOT fraiseql_repl.newer_row(_fq_r._repl_born, _fq_r._repl_ts, _fq_r._repl_node,
                                       _fq_cur._repl_born, _fq_cur._repl_ts, _fq_cur._repl_node) THEN
            RETURN 'lww_kept_local';
        END IF;
    END IF;
    {{fk_sql}}
    -- Unique values: the incoming row must win every clash it meets, or it waits and no other row
    -- here changes (the key's own older version leaves the table); only then do the local rows it
    -- beat wait in its stead (one decision per row, so rows clashing on two keys settle instead of
    -- taking turns).
    {{clash_sql}}
    FOR _fq_i IN 0 .. jsonb_array_length(_fq_losers) - 1 LOOP
        _fq_clash := jsonb_populate_record(NULL::{{qt}}, _fq_losers -> _fq_i -> 'row');
        INSERT INTO fraiseql_repl.parked (origin, id, tbl, op, pk, ts, node, born, row_image, origin_at, sqlstate, error)
        VALUES ('clash:' || fraiseql_repl.node_name(), nextval('fraiseql_repl.changes_id'), {{lit}}, 'u',
                fraiseql_repl.row_key({{lit}}, to_jsonb(_fq_clash)), _fq_clash._repl_ts, _fq_clash._repl_node,
                _fq_clash._repl_born, to_jsonb(_fq_clash), clock_timestamp(), 'FQ004',
                'loses a unique clash; merged again when the value is free');
        DELETE FROM {{qt}} t WHERE {{pk_match_clash}};
        PERFORM fraiseql_repl.fk_park_children({{lit}}, fraiseql_repl.row_key({{lit}}, to_jsonb(_fq_clash)));
        INSERT INTO fraiseql_repl.conflicts (table_name, pk, kind, local_row, remote_row, remote_node)
        VALUES ({{lit}}, _fq_c.pk, 'unique ' || (_fq_losers -> _fq_i ->> 'index') || ': local lost', to_jsonb(_fq_clash),
                _fq_c.row_image, _fq_c.node);
        _fq_kind := 'unique_local_lost';
    END LOOP;
    INSERT INTO {{qt}} AS t ({{ins_list}}){{overriding}} VALUES ({{ins_values}})
    ON CONFLICT ({{pk_conflict}}) DO UPDATE SET ({{upd_list}}) = ROW({{upd_excluded}})
    WHERE fraiseql_repl.newer_row(EXCLUDED._repl_born, EXCLUDED._repl_ts, EXCLUDED._repl_node,
                                  t._repl_born, t._repl_ts, t._repl_node);
    GET DIAGNOSTICS _fq_n = ROW_COUNT;
    {{counter_update}}
    RETURN coalesce(_fq_kind, CASE WHEN _fq_n = 0 THEN 'lww_kept_local' WHEN _fq_cur._repl_ts IS NULL THEN 'inserted' ELSE 'updated' END);
END $f$$b$, t || jsonb_build_object(
        'counter_update', CASE WHEN t ->> 'strategy' = 'counter'
                               THEN fraiseql_repl.fill('UPDATE {{qt}} t SET {{counter_set}} WHERE {{pk_match_r}};', t) ELSE '' END,
        -- what a new row takes for the columns a writer that is behind does not send yet
        'defaults_sql', coalesce((
            SELECT string_agg(format('_fq_d.%I := %s;', a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid)), ' ')
            FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), ''),
        -- A key whose newer version waits here for its unique value (FQ004) is in no writer's table
        -- until that version merges: an older version arriving meanwhile is superseded, not inserted.
        'waiting_sql', CASE WHEN t ->> 'clash_sql' <> '' AND t ->> 'strategy' <> 'app'
                            THEN fraiseql_repl.fill($w$
    IF _fq_cur._repl_ts IS NULL AND EXISTS (
        SELECT 1 FROM fraiseql_repl.parked p
        WHERE p.tbl = {{lit}} AND p.pk = _fq_c.pk AND p.op = 'u' AND p.sqlstate = 'FQ004'
          AND (p.origin, p.id) IS DISTINCT FROM (_fq_c.origin, _fq_c.id)
          AND NOT fraiseql_repl.newer_row(_fq_r._repl_born, _fq_r._repl_ts, _fq_r._repl_node, p.born, p.ts, p.node)) THEN
        RETURN 'superseded_by_waiting';
    END IF;$w$, t) ELSE '' END))
$gen$;

-- Counter rows follow their shards (a shard can arrive before or after its row).
CREATE OR REPLACE FUNCTION fraiseql_repl.refresh_function(t jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $gen$
    SELECT fraiseql_repl.fill($b$
CREATE OR REPLACE FUNCTION {{refresh_fn}}(_fq_key jsonb) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE _fq_r {{qt}};
BEGIN
    _fq_r := jsonb_populate_record(NULL::{{qt}}, _fq_key);
    UPDATE {{qt}} t SET {{counter_set}} WHERE {{pk_match_r}};
END $f$$b$, t)
$gen$;

-- Triggers. Local (origin) triggers fire only in local sessions, never for the apply worker.
CREATE OR REPLACE FUNCTION fraiseql_repl.install_triggers(t jsonb)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    qt text := t ->> 'qt';
BEGIN
    -- The DDL guard compares the triggers with the ones the install made (recorded again after it):
    -- not while they are made again.
    IF to_regclass('fraiseql_repl.table_shape') IS NOT NULL THEN
        UPDATE fraiseql_repl.table_shape SET triggers = NULL WHERE table_name = t ->> 'tname';
    END IF;
    -- Triggers of earlier releases (per-row apply and capture, a per-row commit check) go first.
    EXECUTE format('DROP TRIGGER IF EXISTS fraiseql_repl_apply ON %1$s; DROP TRIGGER IF EXISTS fraiseql_repl_apply_del ON %1$s; '
                   'DROP TRIGGER IF EXISTS fraiseql_repl_local_del ON %1$s; DROP TRIGGER IF EXISTS fraiseql_repl_local_after ON %1$s', qt);
    EXECUTE format('CREATE OR REPLACE TRIGGER fraiseql_repl_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION fraiseql_repl.fence_guard()', qt);
    EXECUTE format('CREATE OR REPLACE TRIGGER fraiseql_repl_local BEFORE INSERT OR UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION %s()', qt, t ->> 'stamp_fn');
    EXECUTE format('CREATE OR REPLACE TRIGGER fraiseql_repl_emit AFTER INSERT ON %s REFERENCING NEW TABLE AS _fq_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', qt, t ->> 'emit_fn');
    EXECUTE format('CREATE OR REPLACE TRIGGER fraiseql_repl_emit_upd AFTER UPDATE ON %s REFERENCING NEW TABLE AS _fq_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', qt, t ->> 'emit_fn');
    EXECUTE format('CREATE OR REPLACE TRIGGER fraiseql_repl_emit_del AFTER DELETE ON %s REFERENCING OLD TABLE AS _fq_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', qt, t ->> 'emit_fn');
    -- Row by row: every update of a counter table, an update that changes the key of any other.
    EXECUTE format('CREATE OR REPLACE TRIGGER fraiseql_repl_emit_row AFTER UPDATE ON %s FOR EACH ROW %s EXECUTE FUNCTION %s()',
                   qt, CASE WHEN t ->> 'strategy' = 'counter' THEN ''
                            ELSE format('WHEN (jsonb_build_object(%s) IS DISTINCT FROM jsonb_build_object(%s))',
                                        t ->> 'pk_json_new', t ->> 'pk_json_old') END, t ->> 'emit_row_fn');
    -- The commit check is queued once per statement by the capture (fraiseql_repl.arm_commit_check);
    -- the per-row check of earlier releases goes.
    EXECUTE format('DROP TRIGGER IF EXISTS fraiseql_repl_lease ON %s', qt);
END $f$;

-- Make one table replicate by change images: refuse what cannot merge, add the version columns,
-- generate the table's functions from its parts, make its triggers, record it.
CREATE OR REPLACE FUNCTION fraiseql_repl.install_table(rel regclass, strategy text, counter_cols text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $inst$
DECLARE
    t jsonb;
    c text;
BEGIN
    PERFORM fraiseql_repl.refuse_unmergeable(rel, strategy);
    PERFORM fraiseql_repl.add_version_columns(rel, strategy);
    t := fraiseql_repl.table_parts(rel, strategy);
    EXECUTE fraiseql_repl.stamp_function(t);
    t := t || fraiseql_repl.counter_parts(rel, t, counter_cols);
    EXECUTE fraiseql_repl.emit_function(t);
    EXECUTE fraiseql_repl.emit_row_function(t);
    t := t || jsonb_build_object('clash_sql', fraiseql_repl.unique_parts(rel, t), 'app_sql', fraiseql_repl.app_parts(t),
                                 'fk_sql', fraiseql_repl.fk_parts(rel, t));
    EXECUTE fraiseql_repl.merge_function(rel, t);
    IF strategy = 'counter' THEN
        EXECUTE fraiseql_repl.refresh_function(t);
    END IF;
    PERFORM fraiseql_repl.install_triggers(t);

    INSERT INTO fraiseql_repl.table_meta AS m (table_name, strategy, counter_cols, columns)
    VALUES (t ->> 'tname', strategy, coalesce(counter_cols, '{}'), ARRAY(SELECT jsonb_array_elements_text(t -> 'cols')))
    ON CONFLICT (table_name) DO UPDATE SET strategy = excluded.strategy, counter_cols = excluded.counter_cols,
        columns = excluded.columns, installed_at = clock_timestamp();

    PERFORM fraiseql_repl.stride_sequences(rel);

    -- Rows that existed before (a phase A primary, a seeded copy: never stamped) count once, under a
    -- pseudo node that every writer seeds identically, so sums equal the pre-existing values.
    IF strategy = 'counter' THEN
        FOREACH c IN ARRAY counter_cols LOOP
            EXECUTE fraiseql_repl.fill(
                'INSERT INTO fraiseql_repl.shards (table_name, pk, col, node, born, amount) '
                'SELECT {{lit}}, jsonb_build_object({{pk_json_t}}), {{col_lit}}, ''_seed'', t._repl_born, t.{{col_ident}} FROM {{qt}} t '
                'WHERE t.{{col_ident}} IS NOT NULL AND t.{{col_ident}} <> 0 AND t._repl_ts = ''-infinity'' '
                'ON CONFLICT DO NOTHING', t || jsonb_build_object('col_ident', quote_ident(c), 'col_lit', quote_literal(c)));
        END LOOP;
    END IF;
END $inst$;

-- The one function the apply side calls: a static CASE over the installed tables.
CREATE OR REPLACE FUNCTION fraiseql_repl.install_dispatcher()
RETURNS void LANGUAGE plpgsql AS $inst$
DECLARE
    merges text := '';
    refreshes text := '';
    cascades text := '';
    parks text := '';
    m record;
    fk record;
BEGIN
    -- Every foreign key of a replicated table must point at a replicated table: a parent that only
    -- one writer has would leave the children orphaned on all the others.
    FOR fk IN
        SELECT con.conname::text AS name, m2.table_name AS child, fraiseql_repl.table_name(con.confrelid) AS parent
        FROM fraiseql_repl.table_meta m2
        JOIN pg_catalog.pg_constraint con ON con.conrelid = to_regclass(m2.table_name) AND con.contype = 'f'
        WHERE NOT EXISTS (SELECT 1 FROM fraiseql_repl.table_meta p WHERE p.table_name = fraiseql_repl.table_name(con.confrelid))
    LOOP
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: replicated table %s references %s (foreign key %s), which is not replicated',
                             fk.child, fk.parent, fk.name),
            HINT = 'Replicate the parent table too (add it to the conflict policy), or drop the constraint.';
    END LOOP;
    -- A parent's delete merged here: its children here meet their ON DELETE rule.
    FOR fk IN
        SELECT m2.table_name AS child, fraiseql_repl.table_name(con.confrelid) AS parent, con.confdeltype AS on_delete,
               array_agg(ca.attname::text ORDER BY k.ord) AS cols, array_agg(pa.attname::text ORDER BY k.ord) AS pcols
        FROM fraiseql_repl.table_meta m2
        JOIN pg_catalog.pg_constraint con ON con.conrelid = to_regclass(m2.table_name) AND con.contype = 'f'
        CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(ca_num, pa_num, ord)
        JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = k.ca_num
        JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.pa_num
        GROUP BY m2.table_name, con.oid, con.confrelid, con.confdeltype
        ORDER BY 1, 2
    LOOP
        cascades := cascades || format(E'\n    IF tname = %L THEN\n        %s\n    END IF;', fk.parent,
            CASE WHEN fk.on_delete = 'n'
                 THEN format('UPDATE %s c SET %s WHERE %s;', fraiseql_repl.quote_table(fk.child::regclass),
                             (SELECT string_agg(format('%I = NULL', x), ', ') FROM unnest(fk.cols) x),
                             (SELECT string_agg(format('c.%I = (key ->> %L)::%s', cc, pc,
                                                       format_type(a.atttypid, a.atttypmod)), ' AND ')
                              FROM unnest(fk.pcols, fk.cols) AS z(pc, cc)
                              JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(fk.child) AND a.attname = z.cc))
                 -- and the children's own children, as a cascade would
                 ELSE format('FOR _fq_k IN DELETE FROM %s c WHERE %s RETURNING %s LOOP PERFORM fraiseql_repl.fk_on_delete(%L, _fq_k); END LOOP;',
                             fraiseql_repl.quote_table(fk.child::regclass),
                             (SELECT string_agg(format('c.%I = (key ->> %L)::%s', cc, pc,
                                                       format_type(a.atttypid, a.atttypmod)), ' AND ')
                              FROM unnest(fk.pcols, fk.cols) AS z(pc, cc)
                              JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(fk.child) AND a.attname = z.cc),
                             fraiseql_repl.pk_expr(fk.child, 'c'), fk.child) END);
        -- A parent that leaves the table to wait for its unique value (FQ004) is not deleted: its
        -- children here wait for it (FQ005), whatever the ON DELETE rule, as they do on a writer
        -- where the parent never got in, and are merged again once it is back.
        parks := parks || format(E'\n    IF tname = %L THEN\n        %s\n    END IF;', fk.parent,
            format('FOR _fq_k IN DELETE FROM %1$s c WHERE %3$s RETURNING to_jsonb(c) LOOP '
                   'INSERT INTO fraiseql_repl.parked (origin, id, tbl, op, pk, ts, node, born, row_image, origin_at, sqlstate, error) '
                   'VALUES (''clash:'' || fraiseql_repl.node_name(), nextval(''fraiseql_repl.changes_id''), %2$L, ''u'', '
                   'fraiseql_repl.row_key(%2$L, _fq_k), (_fq_k ->> ''_repl_ts'')::timestamptz, _fq_k ->> ''_repl_node'', '
                   '(_fq_k ->> ''_repl_born'')::timestamptz, _fq_k, clock_timestamp(), ''FQ005'', '
                   '''its parent waits for a unique value; merged again once the parent is back''); '
                   'PERFORM fraiseql_repl.fk_park_children(%2$L, fraiseql_repl.row_key(%2$L, _fq_k)); END LOOP;',
                   fraiseql_repl.quote_table(fk.child::regclass),
                   fk.child,
                   (SELECT string_agg(format('c.%I = (key ->> %L)::%s', cc, pc,
                                             format_type(a.atttypid, a.atttypmod)), ' AND ')
                    FROM unnest(fk.pcols, fk.cols) AS z(pc, cc)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(fk.child) AND a.attname = z.cc)));
    END LOOP;
    EXECUTE format($b$
CREATE OR REPLACE FUNCTION fraiseql_repl.fk_on_delete(tname text, key jsonb) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE _fq_k jsonb;
BEGIN%s
END $f$$b$, cascades);
    EXECUTE format($b$
CREATE OR REPLACE FUNCTION fraiseql_repl.fk_park_children(tname text, key jsonb) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE _fq_k jsonb;
BEGIN%s
END $f$$b$, parks);
    FOR m IN SELECT table_name, strategy FROM fraiseql_repl.table_meta ORDER BY table_name LOOP
        merges := merges || format(E'\n        WHEN %L THEN RETURN fraiseql_repl.%I(c);', m.table_name, 'merge:' || m.table_name);
        IF m.strategy = 'counter' THEN
            refreshes := refreshes || format(E'\n        WHEN %L THEN PERFORM fraiseql_repl.%I(key);', m.table_name, 'refresh:' || m.table_name);
        END IF;
    END LOOP;
    EXECUTE format($b$
CREATE OR REPLACE FUNCTION fraiseql_repl.merge_change(c fraiseql_repl.changes) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    IF c.op = 'w' THEN
        RETURN fraiseql_repl.merge_watermark(c);
    END IF;
    %s
    RAISE EXCEPTION USING ERRCODE = 'FQ002',
        MESSAGE = format('fraiseql_repl: change for %%s, which is not replicated on this node yet', c.tbl),
        HINT = 'Install the table on every writer (bootstrap or python -m ops schema apply); the change is parked and retried.';
END $f$$b$, CASE WHEN merges = '' THEN '' ELSE 'CASE c.tbl' || merges || E'\n        ELSE NULL;\n    END CASE;' END);
    EXECUTE format($b$
CREATE OR REPLACE FUNCTION fraiseql_repl.refresh_counter(tname text, key jsonb) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    %s
END $f$$b$, CASE WHEN refreshes = '' THEN 'RETURN;' ELSE 'CASE tname' || refreshes || E'\n        ELSE NULL;\n    END CASE;' END);
END $inst$;

-- A peer's shard arrived or changed: its owner's latest amount is the truth (the pseudo node
-- '_seed' is seeded identically everywhere, so a copy may already be here), and the counter row's
-- sums follow.
CREATE OR REPLACE FUNCTION fraiseql_repl.shard_arriving()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    UPDATE fraiseql_repl.shards SET amount = NEW.amount, ts = NEW.ts
    WHERE table_name = NEW.table_name AND pk = NEW.pk AND col = NEW.col AND node = NEW.node AND born = NEW.born;
    IF FOUND THEN
        PERFORM fraiseql_repl.refresh_counter(NEW.table_name, NEW.pk);
        RETURN NULL;
    END IF;
    RETURN NEW;
END $f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.shard_received()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM fraiseql_repl.refresh_counter(NEW.table_name, NEW.pk);
    RETURN NULL;
END $f$;

-- This node's own shard changed here: its version is now (a change's statement time, as rows'
-- are, so a watermark past it says a peer has it). Peers' shards arrive with theirs (the replica
-- role does not fire this trigger); '_seed' shards keep '-infinity' on every writer.
CREATE OR REPLACE FUNCTION fraiseql_repl.shard_stamp()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF NEW.node = fraiseql_repl.node_name() THEN
        NEW.ts := pg_catalog.clock_timestamp();
    END IF;
    RETURN NEW;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_stamp BEFORE INSERT OR UPDATE ON fraiseql_repl.shards
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.shard_stamp();
  CREATE OR REPLACE TRIGGER fraiseql_repl_arriving BEFORE INSERT ON fraiseql_repl.shards
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.shard_arriving();
  ALTER TABLE fraiseql_repl.shards ENABLE REPLICA TRIGGER fraiseql_repl_arriving;
  CREATE OR REPLACE TRIGGER fraiseql_repl_received AFTER INSERT OR UPDATE ON fraiseql_repl.shards
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.shard_received();
  ALTER TABLE fraiseql_repl.shards ENABLE REPLICA TRIGGER fraiseql_repl_received;
END $do$;
