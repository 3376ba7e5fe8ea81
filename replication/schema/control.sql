-- Control objects: the write lease that fences this node, the heartbeats that carry every
-- region's view over their own publication, and the fence agent's local state.
-- Every statement is idempotent; run them one by one in autocommit mode.

-- Writes to replicated tables are allowed only while valid_until is ahead of this node's clock.
-- Only the fence agent renews it; nobody locks it, so neither side can starve the other.
-- A new node starts fenced ('-infinity'): it takes writes once its agent has seen a majority.
CREATE TABLE IF NOT EXISTS fraiseql_repl.lease (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    valid_until timestamptz NOT NULL DEFAULT '-infinity',
    reason      text NOT NULL DEFAULT 'no lease yet: the fence agent has not granted one',
    granted_by  text NOT NULL DEFAULT '',
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

INSERT INTO fraiseql_repl.lease (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- The server instance the lease was granted on. A physical copy (a read replica being promoted, a
-- restored snapshot) carries its source's lease row but not its start time: it starts fenced.
ALTER TABLE fraiseql_repl.lease ADD COLUMN IF NOT EXISTS instance_started_at timestamptz;

-- One row per node, written only by that node's agent, replicated on the control publication.
-- received_at is set from the local clock when a peer's row arrives (apply trigger below), so
-- ages are measured on one clock.
CREATE TABLE IF NOT EXISTS fraiseql_repl.heartbeats (
    node        text PRIMARY KEY,
    seq         bigint NOT NULL,
    sent_at     timestamptz NOT NULL,
    hears       text[] NOT NULL DEFAULT '{}',
    relay       jsonb NOT NULL DEFAULT '{}',
    writable    boolean NOT NULL DEFAULT false,
    schema_hash text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The agent's memory between runs (local, never replicated): hysteresis, the last decision,
-- apply-error counters, whether it took the region out of the traffic path, and which
-- invocation holds the agent loop.
CREATE TABLE IF NOT EXISTS fraiseql_repl.agent_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq            bigint NOT NULL DEFAULT 0,
    writable       boolean,
    reason         text NOT NULL DEFAULT 'cold start',
    healthy_streak integer NOT NULL DEFAULT 0,
    majority       text[] NOT NULL DEFAULT '{}',
    apply_errors   jsonb NOT NULL DEFAULT '{}',
    traffic_out    boolean NOT NULL DEFAULT false,
    holder         text NOT NULL DEFAULT '',
    holder_until   timestamptz NOT NULL DEFAULT '-infinity',
    decided_at     timestamptz
);

INSERT INTO fraiseql_repl.agent_state (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- Handing the loop to a newer configuration (a membership change deployed): an invocation that
-- started after the holder's and runs a different membership asks for the loop; the holder hands
-- it over at its next probe instead of running the old configuration to its deadline.
ALTER TABLE fraiseql_repl.agent_state
    ADD COLUMN IF NOT EXISTS holder_since timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN IF NOT EXISTS waiting_membership text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS waiting_since timestamptz NOT NULL DEFAULT '-infinity';

-- The membership the holder last handed over from. An invocation of it that starts afterwards (a
-- Lambda scheduled while the deploy was still rolling out) is not newer and is not handed the loop
-- back; it takes the loop only once the holder's invocation has ended (e.g. a rolled-back change).
ALTER TABLE fraiseql_repl.agent_state ADD COLUMN IF NOT EXISTS retired_membership text NOT NULL DEFAULT '';

-- Which membership each agent runs ("a,b,c" or "a,b,c|a,b,c,d,e" during a joint change).
ALTER TABLE fraiseql_repl.heartbeats ADD COLUMN IF NOT EXISTS membership text NOT NULL DEFAULT '';

CREATE OR REPLACE FUNCTION fraiseql_repl.heartbeat_received()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    NEW.received_at := pg_catalog.clock_timestamp();
    RETURN NEW;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_received BEFORE INSERT OR UPDATE ON fraiseql_repl.heartbeats
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.heartbeat_received();
  ALTER TABLE fraiseql_repl.heartbeats ENABLE REPLICA TRIGGER fraiseql_repl_received;
END $do$;

-- Each agent re-creates its row every beat (DELETE, then INSERT; deletes are not published), so a
-- peer that subscribed after the row was first inserted still gets it: an UPDATE of a row the
-- subscriber never had is skipped (update_missing), an INSERT is not. On arrival, an INSERT of a
-- row the subscriber has becomes an UPDATE of it.
CREATE OR REPLACE FUNCTION fraiseql_repl.heartbeat_upsert()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    UPDATE fraiseql_repl.heartbeats SET seq = NEW.seq, sent_at = NEW.sent_at, hears = NEW.hears, relay = NEW.relay,
           writable = NEW.writable, schema_hash = NEW.schema_hash, membership = NEW.membership
     WHERE node = NEW.node;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_upsert BEFORE INSERT ON fraiseql_repl.heartbeats
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.heartbeat_upsert();
  ALTER TABLE fraiseql_repl.heartbeats ENABLE REPLICA TRIGGER fraiseql_repl_upsert;
END $do$;

-- The check itself: no lock taken, so a fencing agent never waits for writers and writers never
-- wait for it. The margin covers the time between the check at commit and the commit record.
CREATE OR REPLACE FUNCTION fraiseql_repl.check_lease(at_phase text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE l record;
BEGIN
    SELECT valid_until, reason, instance_started_at INTO l FROM fraiseql_repl.lease WHERE singleton;
    IF l.valid_until IS NULL OR clock_timestamp() + interval '100 milliseconds' >= l.valid_until
       OR l.instance_started_at IS DISTINCT FROM pg_postmaster_start_time() THEN
        RAISE EXCEPTION USING
            ERRCODE = '25006',
            MESSAGE = format('fraiseql_repl: node %s is fenced; write refused at %s', fraiseql_repl.node_name(), at_phase),
            DETAIL = CASE WHEN l.instance_started_at IS DISTINCT FROM pg_postmaster_start_time()
                              AND clock_timestamp() < l.valid_until
                          THEN 'the lease was granted to another server instance (a copy, a restore or a restart); '
                               'its fence agent grants this one a lease once it sees a quorum'
                          ELSE coalesce(l.reason, 'no lease row') END,
            HINT = 'This region has no write quorum (or its fence agent is not running). Retry the write in another region.';
    END IF;
END $f$;

-- Statement level, before any row changes: refuse early with a clear error.
CREATE OR REPLACE FUNCTION fraiseql_repl.fence_guard()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION USING
            ERRCODE = '0A000',
            MESSAGE = format('fraiseql_repl: TRUNCATE of replicated table %I.%I is refused', TG_TABLE_SCHEMA, TG_TABLE_NAME),
            HINT = 'TRUNCATE is not replicated and cannot be merged with concurrent writes in other regions. '
                   'Use DELETE (it replicates and leaves tombstones), or take the table out of replication first.';
    END IF;
    PERFORM fraiseql_repl.check_lease('statement');
    RETURN NULL;
END $f$;

-- Row level, deferred to commit: a transaction that checked the lease early and commits late is
-- refused if the lease ran out in between. Checked again at most every 20 ms of commit work.
CREATE OR REPLACE FUNCTION fraiseql_repl.lease_at_commit()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE last text := current_setting('fraiseql_repl.lease_checked', true);
BEGIN
    IF last IS NULL OR last = '' OR clock_timestamp() - last::timestamptz > interval '20 milliseconds' THEN
        PERFORM fraiseql_repl.check_lease('commit');
        PERFORM set_config('fraiseql_repl.lease_checked', clock_timestamp()::text, true);
    END IF;
    RETURN NULL;
END $f$;

DROP TABLE IF EXISTS fraiseql_repl.fence;
DROP TABLE IF EXISTS fraiseql_repl.heartbeat;
