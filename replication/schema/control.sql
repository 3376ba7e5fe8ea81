-- Control objects: the write lease that fences this node, the heartbeats that carry every
-- region's view over their own publication, and the fence agent's local state.
-- Every statement is idempotent; run them one by one in autocommit mode.

-- Writes to replicated tables are allowed only while the lease is ahead of this node's clock.
-- Only the fence agent renews it (set_lease); nobody locks it, so neither side can starve the other.
-- A new node starts fenced: it takes writes once its agent has seen a majority.
--
-- The lease's end lives in a sequence, not in a table row: a sequence is read outside MVCC, so a
-- REPEATABLE READ or SERIALIZABLE transaction sees a revoke made after its snapshot was taken, and
-- setval is immediate (nothing waits for a commit). In microseconds since the epoch; 0: fenced;
-- the largest bigint: a lease that never ends (tests, or an operator overriding a dead agent).
CREATE SEQUENCE IF NOT EXISTS fraiseql_repl.lease_until AS bigint MINVALUE 0 START WITH 0 NO CYCLE;

-- What the lease was granted on and why (read by people and tools; the check reads the sequence).
-- instance_started_at: the server instance the lease was granted on. A physical copy (a read replica
-- being promoted, a restored snapshot) carries its source's lease row but not its start time: it
-- starts fenced.
CREATE TABLE IF NOT EXISTS fraiseql_repl.lease (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    valid_until         timestamptz NOT NULL DEFAULT '-infinity',
    reason              text NOT NULL DEFAULT 'no lease yet: the fence agent has not granted one',
    granted_by          text NOT NULL DEFAULT '',
    changed_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    instance_started_at timestamptz
);

INSERT INTO fraiseql_repl.lease (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- One row per node, written only by that node's agent, replicated on the control publication.
-- received_at is set from the local clock when a peer's row arrives (apply trigger below), so
-- ages are measured on one clock.
-- membership: the membership the agent runs ("a,b,c" or "a,b,c|a,b,c,d,e" during a joint change).
-- observed_at: when the agent made the observation the row reports (sender's clock; sent_at is when
-- it wrote the row). A receiver ages the report by sent_at - observed_at on top of the time since the
-- row arrived: an agent that paused between looking and writing publishes old news, and says so.
-- selected: the clique the agent selected, per membership list ({"a,b,c": ["a","b"]}): a region
-- writes only while every other member of its clique says it selected the same one (replication.quorum).
CREATE TABLE IF NOT EXISTS fraiseql_repl.heartbeats (
    node        text PRIMARY KEY,
    seq         bigint NOT NULL,
    sent_at     timestamptz NOT NULL,
    hears       text[] NOT NULL DEFAULT '{}',
    relay       jsonb NOT NULL DEFAULT '{}',
    writable    boolean NOT NULL DEFAULT false,
    schema_hash text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    membership  text NOT NULL DEFAULT '',
    observed_at timestamptz,
    selected    jsonb NOT NULL DEFAULT '{}'
);

-- A heartbeat its peers can read: a peer's apply worker parses each row from text before any
-- trigger runs, and one it cannot parse fails the control link at every retry, so nothing the
-- writer publishes there arrives again (red team 17: the agent's role wrote a relay nested 17,138
-- levels deep, and both peers stopped hearing its writer for good). The agent's rows are a few kB
-- and five levels deep; anything far past that is refused where it is written.
DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'fraiseql_repl.heartbeats'::regclass AND conname = 'heartbeats_row_readable') THEN
        ALTER TABLE fraiseql_repl.heartbeats ADD CONSTRAINT heartbeats_row_readable
            CHECK (pg_catalog.pg_column_size(relay) + pg_catalog.pg_column_size(selected) + pg_catalog.pg_column_size(hears)
                       + pg_catalog.octet_length(node) + pg_catalog.octet_length(membership)
                       + pg_catalog.octet_length(schema_hash) <= 1000000
                   AND NOT pg_catalog.jsonb_path_exists(relay, 'strict $.**{32}')
                   AND NOT pg_catalog.jsonb_path_exists(selected, 'strict $.**{32}')) NOT VALID;
    END IF;
END $do$;

-- The agent's memory between runs (local, never replicated): hysteresis, the last decision,
-- apply-error counters, whether it took the region out of the traffic path, and which
-- invocation holds the agent loop.
-- Handing the loop to a newer configuration (a membership change deployed): an invocation that
-- started after the holder's and runs a different membership asks for the loop (waiting_*); the
-- holder hands it over at its next probe instead of running the old configuration to its deadline.
-- retired_membership: the one the holder last handed over from. An invocation of it that starts
-- afterwards (a Lambda scheduled while the deploy was still rolling out) is not newer and is not
-- handed the loop back; it takes the loop only once the holder's invocation has ended (e.g. a
-- rolled-back change).
CREATE TABLE IF NOT EXISTS fraiseql_repl.agent_state (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq                bigint NOT NULL DEFAULT 0,
    writable           boolean,
    reason             text NOT NULL DEFAULT 'cold start',
    healthy_streak     integer NOT NULL DEFAULT 0,
    majority           text[] NOT NULL DEFAULT '{}',
    apply_errors       jsonb NOT NULL DEFAULT '{}',
    traffic_out        boolean NOT NULL DEFAULT false,
    holder             text NOT NULL DEFAULT '',
    holder_until       timestamptz NOT NULL DEFAULT '-infinity',
    decided_at         timestamptz,
    holder_since       timestamptz NOT NULL DEFAULT '-infinity',
    waiting_membership text NOT NULL DEFAULT '',
    waiting_since      timestamptz NOT NULL DEFAULT '-infinity',
    retired_membership text NOT NULL DEFAULT ''
);

INSERT INTO fraiseql_repl.agent_state (singleton) VALUES (true) ON CONFLICT DO NOTHING;

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

-- A local session of the agent writes only its own node's row; peers' rows arrive by replication
-- (the apply worker runs as a replica, where this trigger does not fire). The schema's owner may
-- repair any row by hand.
CREATE OR REPLACE FUNCTION fraiseql_repl.heartbeat_own_row()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    IF ((CASE WHEN TG_OP = 'DELETE' THEN OLD.node ELSE NEW.node END) IS DISTINCT FROM fraiseql_repl.node_name()
        OR (TG_OP = 'UPDATE' AND OLD.node IS DISTINCT FROM fraiseql_repl.node_name()))
       AND NOT pg_catalog.pg_has_role(session_user,
               (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = 'fraiseql_repl: only this node''s own heartbeat row is written here',
            HINT = 'Other regions'' heartbeats arrive by replication.';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_own_row BEFORE INSERT OR UPDATE OR DELETE ON fraiseql_repl.heartbeats
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.heartbeat_own_row();
END $do$;

-- Each agent re-creates its row every beat (DELETE, then INSERT; deletes are not published), so a
-- peer that subscribed after the row was first inserted still gets it: an UPDATE of a row the
-- subscriber never had is skipped (update_missing), an INSERT is not. On arrival, an INSERT of a
-- row the subscriber has becomes an UPDATE of it.
CREATE OR REPLACE FUNCTION fraiseql_repl.heartbeat_upsert()
RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    UPDATE fraiseql_repl.heartbeats SET seq = NEW.seq, sent_at = NEW.sent_at, hears = NEW.hears, relay = NEW.relay,
           writable = NEW.writable, schema_hash = NEW.schema_hash, membership = NEW.membership,
           observed_at = NEW.observed_at, selected = NEW.selected
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

-- The lease's end, from the sequence ('-infinity' when fenced).
CREATE OR REPLACE FUNCTION fraiseql_repl.lease_valid_until()
RETURNS timestamptz LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $f$
    SELECT CASE WHEN last_value <= 0 THEN '-infinity'::timestamptz
                WHEN last_value = 9223372036854775807 THEN 'infinity'::timestamptz
                ELSE to_timestamp(last_value / 1e6) END
    FROM fraiseql_repl.lease_until
$f$;

-- Grant a lease until `until` (NULL or -infinity: revoke), the one way anyone changes it. The lease
-- row is locked while it changes, so an agent and a runbook never interleave. With keep_transition
-- (an agent that has just started and cannot have heard its peers yet), a runbook's transition lease
-- that is still running is left alone instead of revoked.
CREATE OR REPLACE FUNCTION fraiseql_repl.set_lease(until timestamptz, why text, by_whom text,
                                                   keep_transition boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
    cur record;
    us bigint;
BEGIN
    -- The fence agent renews for seconds: nothing but the schema's owner (a runbook, an operator who
    -- overrides a dead agent knowingly) grants a lease longer than an hour.
    IF until > clock_timestamp() + interval '1 hour' AND session_user <> (
            SELECT r.rolname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
            WHERE p.oid = 'fraiseql_repl.set_lease(timestamptz, text, text, boolean)'::regprocedure)
       AND NOT pg_catalog.pg_has_role(session_user, (
            SELECT p.proowner FROM pg_catalog.pg_proc p
            WHERE p.oid = 'fraiseql_repl.set_lease(timestamptz, text, text, boolean)'::regprocedure), 'MEMBER') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('fraiseql_repl: a lease until %s is longer than an agent grants', until),
            HINT = 'Only the replication schema''s owner grants a lease longer than an hour.';
    END IF;
    SELECT * INTO cur FROM fraiseql_repl.lease WHERE singleton FOR UPDATE;
    IF keep_transition AND (until IS NULL OR until <= clock_timestamp()) AND cur.granted_by LIKE 'transition:%'
       AND fraiseql_repl.lease_valid_until() > clock_timestamp() THEN
        RETURN;
    END IF;
    UPDATE fraiseql_repl.lease SET valid_until = coalesce(until, '-infinity'), reason = why, granted_by = by_whom,
           changed_at = clock_timestamp(), instance_started_at = pg_postmaster_start_time()
     WHERE singleton;
END $f$;

-- Every change of the lease row moves the sequence with it, at once (an agent of the previous
-- release, which updates the row directly, keeps working through an upgrade).
CREATE OR REPLACE FUNCTION fraiseql_repl.lease_to_sequence()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    PERFORM setval('fraiseql_repl.lease_until',
                   CASE WHEN NEW.valid_until = '-infinity' THEN 0
                        WHEN NEW.valid_until = 'infinity' THEN 9223372036854775807
                        ELSE greatest(floor(extract(epoch FROM NEW.valid_until) * 1e6), 0)::bigint END, true);
    RETURN NEW;
END $f$;

DO $do$ BEGIN
  CREATE OR REPLACE TRIGGER fraiseql_repl_lease_clock BEFORE INSERT OR UPDATE OF valid_until ON fraiseql_repl.lease
    FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.lease_to_sequence();
END $do$;

-- The check itself: no lock taken, so a fencing agent never waits for writers and writers never
-- wait for it. The margin covers the time between the check at commit and the commit record.
-- Refused too: a lease granted to another server instance (a copy, a restore, a restart), and any
-- write where a server setting lets a commit escape the check (guard_problem).
--
-- Why the guard cannot hold on this server, or NULL: the settings under which a transaction can commit
-- with no check, or do unbounded work after its check that serves no interrupt (so end_writes cannot
-- stop it). The check refuses every write while this is not NULL, and the agent grants no lease and
-- says why. One rule, used by both.
--   * max_prepared_transactions <> 0: COMMIT PREPARED runs no trigger at all.
--   * max_notify_queue_pages > 1024: a transaction's notifications are written to the shared queue
--     after the check, page by page with no interrupt served (async.c PreCommit_Notify); NOTIFY needs
--     no privilege. The queue's size bounds that work: 1024 pages (8 MB) took at most 28 ms here on a
--     loaded 2-core machine, inside the check's 100 ms margin; a transaction queuing more is refused
--     ("too many notifications in the NOTIFY queue") before its commit record.
--   * track_counts off: the check could not count a session's large-object opens (check_lease).
CREATE OR REPLACE FUNCTION fraiseql_repl.guard_problem()
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $f$
    SELECT CASE
        WHEN pg_catalog.current_setting('max_prepared_transactions')::integer <> 0 THEN
            'max_prepared_transactions is not 0: COMMIT PREPARED would commit a write without any lease check '
            '(set it to 0 in the parameter group)'
        WHEN pg_catalog.current_setting('max_notify_queue_pages')::integer > 1024 THEN
            'max_notify_queue_pages is above 1024: a transaction''s notifications are written after the lease check '
            'without serving interrupts, for as long as the queue lets them (set it to 1024 in the parameter group)'
        WHEN NOT pg_catalog.current_setting('track_counts')::boolean THEN
            'track_counts is off: the lease check counts a session''s large-object opens in its statistics '
            '(set track_counts to on in the parameter group)'
    END
$f$;

-- Large objects opened for reading stay open until the commit closes them: after the commit check,
-- serving no interrupt (AtEOXact_LargeObject), in a time that grows faster than their number
-- squared (10,000: 0.3 s; 40,000: 3.1 s; tests/redteam/test_red8_commit_large_objects.py), so
-- end_writes could not stop such a commit. lo_open is PUBLIC's, and revoking it needs the
-- functions' owner (not the RDS master user). So a write to a replicated table is refused from a
-- session that has opened large objects 1,000 times or more lately: every lo_open scans
-- pg_largeobject_metadata (its index, or the table itself), and the session's scan count not yet reported to the
-- statistics system covers its current transaction (it only grows within one) and, at most a few
-- seconds, its earlier ones: it never counts this transaction's opens short. It needs
-- track_counts, which guard_problem requires.
CREATE OR REPLACE FUNCTION fraiseql_repl.large_object_opens()
RETURNS bigint LANGUAGE sql STABLE AS $f$
    -- the table too: a session started with ignore_system_indexes (any role may, at connect) reads
    -- it without the index (tests/redteam/test_red12_lo_ignore_indexes.py)
    SELECT pg_catalog.pg_stat_get_xact_numscans('pg_catalog.pg_largeobject_metadata_oid_index'::pg_catalog.regclass)
         + pg_catalog.pg_stat_get_xact_numscans('pg_catalog.pg_largeobject_metadata'::pg_catalog.regclass)
$f$;

CREATE OR REPLACE FUNCTION fraiseql_repl.check_lease(at_phase text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
    until_us bigint;
    l record;
    why text;
    opens bigint := fraiseql_repl.large_object_opens();
BEGIN
    IF opens >= 1000 THEN
        RAISE EXCEPTION USING
            ERRCODE = '54000',
            MESSAGE = format('fraiseql_repl: write refused at %s: this session opened large objects %s times lately '
                             '(a transaction that writes a replicated table may open them at most 999 times)', at_phase, opens),
            DETAIL = 'Large objects opened for reading are closed after the lease check at commit, without serving '
                     'interrupts, for as long as their number makes it take: the fence could not stop that commit.',
            HINT = 'Open large objects in a transaction that writes no replicated table (the count covers the last '
                   'few seconds of the session), or store the data as bytea.';
    END IF;
    SELECT last_value INTO until_us FROM fraiseql_repl.lease_until;
    SELECT reason, instance_started_at INTO l FROM fraiseql_repl.lease WHERE singleton;
    IF until_us > (extract(epoch FROM clock_timestamp()) * 1e6)::bigint + 100000
       AND l.instance_started_at IS NOT DISTINCT FROM pg_postmaster_start_time()
       AND fraiseql_repl.guard_problem() IS NULL THEN
        RETURN;
    END IF;
    why := CASE
        WHEN fraiseql_repl.guard_problem() IS NOT NULL THEN fraiseql_repl.guard_problem()
        WHEN l.instance_started_at IS DISTINCT FROM pg_postmaster_start_time() AND until_us > 0 THEN
            'the lease was granted to another server instance (a copy, a restore or a restart); '
            'its fence agent grants this one a lease once it sees a quorum'
        ELSE coalesce(l.reason, 'no lease row') END;
    RAISE EXCEPTION USING
        ERRCODE = '25006',
        MESSAGE = format('fraiseql_repl: node %s is fenced; write refused at %s', fraiseql_repl.node_name(), at_phase),
        DETAIL = why,
        HINT = 'This region has no write quorum (or its fence agent is not running). Retry the write in another region.';
END $f$;

-- The commit check: one per statement that writes a replicated table, not one per row. At the end of
-- such a statement the table's change capture (its emit function, install.sql) adds a row here
-- (arm_commit_check), whose deferred constraint trigger checks the lease when the transaction
-- commits. The row is added after everything the statement queued, so the check fires after the
-- statement's own deferred work (its foreign-key checks, say), as the per-row check of earlier
-- releases did. Nobody but the schema's owner has any right on the table (the capture is SECURITY
-- DEFINER): a session can neither leave its rows out nor forge one, nor lock the table; no setting is
-- trusted. Unlogged: it costs no WAL, and a row lives only until its check (a crash, or a copy
-- promoted to primary, starts it empty: no transaction of before is still open there).
CREATE UNLOGGED TABLE IF NOT EXISTS fraiseql_repl.writing (
    n   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
REVOKE ALL ON TABLE fraiseql_repl.writing FROM PUBLIC;

-- Deferred to commit: a transaction that checked the lease early and commits late is refused if the
-- lease ran out in between.
CREATE OR REPLACE FUNCTION fraiseql_repl.lease_at_commit()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    PERFORM fraiseql_repl.check_lease('commit');
    DELETE FROM fraiseql_repl.writing w WHERE w.n = NEW.n;
    RETURN NULL;
END $f$;

DO $do$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = 'fraiseql_repl_lease'
                 AND tgrelid = 'fraiseql_repl.writing'::regclass) THEN
    CREATE CONSTRAINT TRIGGER fraiseql_repl_lease AFTER INSERT ON fraiseql_repl.writing
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fraiseql_repl.lease_at_commit();
  END IF;
END $do$;

-- Queue the commit check of the statement that is ending (each replicated table's capture calls it,
-- once per statement, install.sql). It is made deferred first, so a session that made every
-- constraint immediate (Django's check_constraints does) still has its later writes checked at
-- commit; a session that runs the checks early (SET CONSTRAINTS ... IMMEDIATE) and then sits idle is
-- ended by its agent (end_writes, below).
CREATE OR REPLACE FUNCTION fraiseql_repl.arm_commit_check()
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    SET CONSTRAINTS fraiseql_repl.fraiseql_repl_lease DEFERRED;
    INSERT INTO fraiseql_repl.writing DEFAULT VALUES;
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

-- What a fenced writer's agent runs: end every client transaction that has written to a replicated
-- table and not committed. Such a transaction may have passed its checks while the lease was valid
-- and hold its commit back for as long as it likes (a session can run its deferred checks early
-- with SET CONSTRAINTS ... IMMEDIATE, and sit idle afterwards); terminating it is the guard that
-- needs no cooperation from it. A transaction that has not written yet is refused by its own
-- checks, which run after this. Does nothing while the lease is valid. Returns how many it ended.
CREATE OR REPLACE FUNCTION fraiseql_repl.end_writes()
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
    victim integer;
    victims integer[] := '{}';
    n integer := 0;
BEGIN
    IF fraiseql_repl.lease_valid_until() > clock_timestamp()
       AND (SELECT instance_started_at FROM fraiseql_repl.lease WHERE singleton) IS NOT DISTINCT FROM pg_postmaster_start_time() THEN
        RETURN 0;
    END IF;
    -- Every one is signalled before any is waited for: a session that is slow to exit (thousands of
    -- temp tables) cannot hold back the signal to the others.
    FOR victim IN
        SELECT DISTINCT l.pid FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'relation' AND l.relation = 'fraiseql_repl.changes'::regclass AND l.granted
          AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
    LOOP
        IF pg_terminate_backend(victim) THEN
            n := n + 1;
            victims := victims || victim;
        END IF;
    END LOOP;
    -- A signalled backend aborts its transaction at its next interrupt check; wait a little for the
    -- exits to be visible (the count is what matters: nothing of theirs can commit any more). The
    -- sessions are read afresh each time (pg_stat_activity is otherwise read once per transaction,
    -- and this waited its whole second, between two of the agent's heartbeats, at every probe).
    FOR i IN 1 .. 20 LOOP
        PERFORM pg_catalog.pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = ANY (victims));
        PERFORM pg_catalog.pg_sleep(0.05);
    END LOOP;
    RETURN n;
END $f$;

-- The fence agent's loop lock is an advisory lock, which any role can take: a session of another
-- role holding it (an application keeping every agent run from starting, so that nothing ends its
-- writes) is terminated. Returns how many.
CREATE OR REPLACE FUNCTION fraiseql_repl.evict_loop_squatters()
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
    key bigint := hashtext('fraiseql_repl.agent');
    victim integer;
    n integer := 0;
BEGIN
    FOR victim IN
        SELECT l.pid FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
          AND l.classid = ((key >> 32) & 4294967295)::text::oid AND l.objid = (key & 4294967295)::text::oid
          AND l.objsubid = 1 AND a.usename IS DISTINCT FROM session_user
    LOOP
        IF pg_terminate_backend(victim) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $f$;

-- The merges' key-bucket locks (objects.sql, lock_bucket_shared and lock_bucket) are advisory locks
-- too, which any role can take. An application session holding one exclusive (or waiting for one: a
-- waiting exclusive request queues every later shared request behind it) keeps every merged insert
-- of a key in that bucket waiting, with no timeout, and the data link with it, for as long as it
-- likes (tests/redteam/test_red13_marker_advisory_stall.py); one holding it shared outside a write
-- makes every merged delete of its keys wait 200 ms five times and park, and one in the fast part
-- of a large transaction fail the whole attempt (tests/redteam/test_red14_bucket_shared_hold.py).
-- Only merges take them exclusive, and an insert takes them shared inside its writing transaction,
-- so a client session of another user is terminated if it holds or wants one exclusive, or holds
-- one shared while it has written nothing (no xid; or its transaction failed) and has been idle
-- since before the locks were read (a session lock, or one its transaction kept without writing:
-- ending it loses nothing). Returns how many.
CREATE OR REPLACE FUNCTION fraiseql_repl.evict_bucket_squatters()
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
    victim integer;
    n integer := 0;
    seen timestamptz := clock_timestamp();  -- before the locks are read
    wanting integer[];
    sharing integer[];
BEGIN
    SELECT array_agg(DISTINCT l.pid) FILTER (WHERE l.mode = 'ExclusiveLock'),
           array_agg(DISTINCT l.pid) FILTER (WHERE l.mode = 'ShareLock' AND l.granted)
      INTO wanting, sharing
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
      AND l.classid = 1718709113::oid AND l.objsubid = 2;
    IF wanting IS NULL AND sharing IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pg_catalog.pg_stat_clear_snapshot();  -- the sessions as they are now, after the locks were read
    FOR victim IN
        SELECT a.pid FROM pg_catalog.pg_stat_activity a
        WHERE a.backend_type = 'client backend' AND a.usename IS DISTINCT FROM session_user
          AND a.usename IS DISTINCT FROM current_user
          AND (a.pid = ANY (coalesce(wanting, '{}'))
               OR (a.pid = ANY (coalesce(sharing, '{}')) AND a.state_change < seen
                   AND (a.state = 'idle in transaction (aborted)'
                        OR (a.backend_xid IS NULL AND a.state IN ('idle', 'idle in transaction')))))
    LOOP
        BEGIN
            IF pg_catalog.pg_terminate_backend(victim) THEN
                n := n + 1;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- a superuser's session (RDS: rdsadmin): not ours to end; the others still are
        END;
    END LOOP;
    RETURN n;
END $f$;

-- Replay lag of this publisher's peers (their walsenders run as the replication role): all the agent
-- needs from pg_stat_replication, without pg_read_all_stats, which would let it read every
-- session's statement text in pg_stat_activity and pg_stat_statements.
CREATE OR REPLACE FUNCTION fraiseql_repl.replication_lag()
RETURNS TABLE (subscriber text, lag_s float8) LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $f$
    SELECT application_name::text, coalesce(extract(epoch FROM replay_lag), 0)::float8 FROM pg_catalog.pg_stat_replication
$f$;

-- Nobody but the roles granted it (the fence agent) may move the lease or end transactions.
REVOKE EXECUTE ON FUNCTION fraiseql_repl.set_lease(timestamptz, text, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.end_writes() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.replication_lag() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.evict_loop_squatters() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.evict_bucket_squatters() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION fraiseql_repl.lease_to_sequence() FROM PUBLIC;
REVOKE ALL ON SEQUENCE fraiseql_repl.lease_until FROM PUBLIC;
