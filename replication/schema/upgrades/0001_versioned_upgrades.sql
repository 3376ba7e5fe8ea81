-- Upgrade 1: a writer of a release from before upgrades were versioned (no
-- fraiseql_repl.schema_upgrades) to this release's shapes. The previous release had every shape
-- below but the tombstones' defaults and the names of parked's constraints; older ones lack more of it: each step looks first. Shapes here
-- are those of this release: the install files then create what is still missing as they define it.

-- The change log has no primary key (its index was about a sixth of the WAL a change wrote).
ALTER TABLE IF EXISTS fraiseql_repl.changes DROP CONSTRAINT IF EXISTS changes_pkey;

-- Tombstones record the incarnation a delete removed and the delete's origin (purges wait for it).
-- Rows of before take the oldest incarnation and no origin (never purged by origin); the defaults
-- only filled them: every tombstone is written whole.
ALTER TABLE IF EXISTS fraiseql_repl.tombstones
    ADD COLUMN IF NOT EXISTS born timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS origin_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE IF EXISTS fraiseql_repl.tombstones
    ALTER COLUMN born DROP DEFAULT, ALTER COLUMN origin DROP DEFAULT, ALTER COLUMN origin_at DROP DEFAULT;

-- Parked changes were made LIKE the change log, whose names PostgreSQL 18 gave their not-null
-- constraints; the table now states its columns, and its constraints carry its own name.
DECLARE
    con text;
BEGIN
    FOR con IN SELECT x.conname FROM pg_catalog.pg_constraint x
                WHERE x.conrelid = to_regclass('fraiseql_repl.parked') AND x.contype = 'n' AND x.conname LIKE 'changes\_%'
    LOOP
        EXECUTE format('ALTER TABLE fraiseql_repl.parked RENAME CONSTRAINT %I TO %I', con, 'parked' || substr(con, 8));
    END LOOP;
END;

-- Counter contributions moved to fraiseql_repl.shards, per incarnation.
IF to_regclass('fraiseql_repl.counter_shards') IS NOT NULL THEN
    CREATE TABLE IF NOT EXISTS fraiseql_repl.shards (
        table_name text NOT NULL,
        pk         jsonb NOT NULL,
        col        text NOT NULL,
        node       text NOT NULL,
        born       timestamptz NOT NULL,
        amount     numeric NOT NULL DEFAULT 0,
        PRIMARY KEY (table_name, pk, col, node, born)
    );
    INSERT INTO fraiseql_repl.shards (table_name, pk, col, node, born, amount)
        SELECT table_name, pk, col, node, '-infinity', amount FROM fraiseql_repl.counter_shards
        ON CONFLICT DO NOTHING;
    DROP TABLE fraiseql_repl.counter_shards;
END IF;

-- The lease row's server instance: a lease of before was granted to no known instance (fenced until
-- the agent grants one).
ALTER TABLE IF EXISTS fraiseql_repl.lease ADD COLUMN IF NOT EXISTS instance_started_at timestamptz;

-- The lease's end moved to a sequence (read outside MVCC): it starts where the row is.
IF to_regclass('fraiseql_repl.lease') IS NOT NULL AND to_regclass('fraiseql_repl.lease_until') IS NULL THEN
    CREATE SEQUENCE fraiseql_repl.lease_until AS bigint MINVALUE 0 START WITH 0 NO CYCLE;
    PERFORM pg_catalog.setval('fraiseql_repl.lease_until',
                              CASE WHEN l.valid_until = 'infinity' THEN 9223372036854775807
                                   ELSE greatest(floor(extract(epoch FROM l.valid_until) * 1e6), 0)::bigint END, true)
       FROM fraiseql_repl.lease l WHERE l.singleton AND l.valid_until > '-infinity';
END IF;

-- The agent's hand-over of its loop to a newer membership, and the memberships in the heartbeats.
ALTER TABLE IF EXISTS fraiseql_repl.agent_state
    ADD COLUMN IF NOT EXISTS holder_since timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN IF NOT EXISTS waiting_membership text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS waiting_since timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN IF NOT EXISTS retired_membership text NOT NULL DEFAULT '';
ALTER TABLE IF EXISTS fraiseql_repl.heartbeats
    ADD COLUMN IF NOT EXISTS membership text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS observed_at timestamptz,
    ADD COLUMN IF NOT EXISTS selected jsonb NOT NULL DEFAULT '{}';

-- Tables of the first control channel (fraiseql_repl.lease and heartbeats replaced them).
DROP TABLE IF EXISTS fraiseql_repl.fence;
DROP TABLE IF EXISTS fraiseql_repl.heartbeat;

-- Hold-back was a row trigger on the change log, one call per change (now hold_back_image, once
-- per statement).
IF to_regclass('fraiseql_repl.changes') IS NOT NULL THEN
    DROP TRIGGER IF EXISTS fraiseql_repl_hold ON fraiseql_repl.changes;
END IF;
DROP FUNCTION IF EXISTS fraiseql_repl.hold_back();

-- Functions of the first design (base tables published directly, per-row apply triggers).
DROP FUNCTION IF EXISTS fraiseql_repl.apply_remote() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.set_apply() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.tombstones_apply() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.shards_apply() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.shards_refresh() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.delete_local() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.counter_local() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.set_local() CASCADE;
DROP FUNCTION IF EXISTS fraiseql_repl.stamp_local() CASCADE;
