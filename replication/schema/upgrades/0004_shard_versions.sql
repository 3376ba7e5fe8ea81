-- Upgrade 4: counter shards carry a version (fraiseql_repl.shards.ts, stamped by their node on
-- every change: install.sql's shard_stamp), so verify rounds compare a counter's shards when its
-- row changes too often to be compared. Shards written before take '-infinity' on every writer
-- (compared as they are). Upgrade every writer in one go: until a writer has the column, a shard
-- change from an upgraded peer fails its apply and the data link from that peer waits (retried
-- every few seconds; nothing is lost).
ALTER TABLE IF EXISTS fraiseql_repl.shards ADD COLUMN IF NOT EXISTS ts timestamptz NOT NULL DEFAULT '-infinity';
