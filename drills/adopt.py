"""Adoption drill: a FraiseQL database that a team runs today moves into a new phase A primary while its
application writes, through the real runbook (`python -m ops adopt sync`, then `cutover`).

Two PostgreSQL 18 servers on loopback: `source` (the database run today, `wal_level = logical` as
`rds.logical_replication = 1` gives on RDS) and `target` (the stack's new, empty primary). The source
has FraiseQL's shape: `tb_*` tables with identity keys and public UUIDs, foreign keys, a counter and a
tag table, `v_*` JSONB views and `fn_*` mutation functions, filled before the drill starts.

Clients call the mutation functions in a loop, each write with a UUID of its own (a retry after an
error repeats it: the functions are idempotent), and remember every write whose commit returned
(acknowledged) and when. The runbook runs as a separate process, exactly as an operator runs it:
`sync` while the clients write, then `cutover`; the clients move to the new primary when the
runbook reports `ready` on its JSON output, as an application would be re-pointed then.

Measured: the longest gap between two acknowledged writes across the cutover (the pause the
application sees), the runbook's own pause (fence to ready), acknowledged writes missing on the new
primary afterwards (must be 0), likes counted against the likes acknowledged, the rows the runbook
compared, and whether writes on the new primary ever collided with copied keys (sequences).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import psycopg

from drills.pg import PG_BIN, cluster

__all__ = ["ADOPT_MODES", "AdoptResult", "adopt_rows", "run_adopt_drill", "SCHEMA"]

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10",
            "max_logical_replication_workers": "6", "max_worker_processes": "16", "wal_sender_timeout": "10s"}

SCHEMA = """
CREATE TABLE tb_user (
  pk_user bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tb_post (
  pk_post bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  fk_author bigint NOT NULL REFERENCES tb_user (pk_user),
  title text NOT NULL,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tb_comment (
  pk_comment bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  fk_post bigint NOT NULL REFERENCES tb_post (pk_post) ON DELETE CASCADE,
  fk_author bigint NOT NULL REFERENCES tb_user (pk_user),
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tb_post_stats (
  fk_post bigint PRIMARY KEY REFERENCES tb_post (pk_post) ON DELETE CASCADE,
  view_count bigint NOT NULL DEFAULT 0,
  like_count bigint NOT NULL DEFAULT 0
);
CREATE TABLE tb_post_tag (
  fk_post bigint NOT NULL REFERENCES tb_post (pk_post) ON DELETE CASCADE,
  tag text NOT NULL,
  PRIMARY KEY (fk_post, tag)
);
CREATE TABLE tb_like (
  id uuid PRIMARY KEY,
  fk_post bigint NOT NULL REFERENCES tb_post (pk_post) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON tb_post (fk_author);
CREATE INDEX ON tb_comment (fk_post);

CREATE VIEW v_user AS
  SELECT u.id, jsonb_build_object('id', u.id, 'name', u.name, 'email', u.email) AS data FROM tb_user u;
CREATE VIEW v_post AS
  SELECT p.id, jsonb_build_object(
           'id', p.id, 'title', p.title, 'body', p.body,
           'author', (SELECT v.data FROM v_user v WHERE v.id = u.id),
           'likes', coalesce(s.like_count, 0),
           'tags', coalesce((SELECT jsonb_agg(t.tag ORDER BY t.tag) FROM tb_post_tag t WHERE t.fk_post = p.pk_post), '[]'),
           'comments', (SELECT count(*) FROM tb_comment c WHERE c.fk_post = p.pk_post)) AS data
    FROM tb_post p JOIN tb_user u ON u.pk_user = p.fk_author LEFT JOIN tb_post_stats s ON s.fk_post = p.pk_post;

-- Mutations, FraiseQL style: one function each, returning the entity as JSONB. Idempotent on the
-- client's UUID, so a retry after a lost acknowledgement changes nothing.
CREATE FUNCTION fn_create_post(p_id uuid, p_author uuid, p_title text, p_body text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE k bigint;
BEGIN
  INSERT INTO tb_post (id, fk_author, title, body)
    SELECT p_id, u.pk_user, p_title, p_body FROM tb_user u WHERE u.id = p_author
    ON CONFLICT (id) DO NOTHING RETURNING pk_post INTO k;
  IF k IS NOT NULL THEN
    INSERT INTO tb_post_stats (fk_post) VALUES (k);
    INSERT INTO tb_post_tag (fk_post, tag) VALUES (k, 'drill'), (k, 'adopt');
  END IF;
  RETURN (SELECT data FROM v_post WHERE id = p_id);
END $$;
CREATE FUNCTION fn_add_comment(p_id uuid, p_post uuid, p_author uuid, p_body text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tb_comment (id, fk_post, fk_author, body)
    SELECT p_id, p.pk_post, u.pk_user, p_body FROM tb_post p, tb_user u WHERE p.id = p_post AND u.id = p_author
    ON CONFLICT (id) DO NOTHING;
  RETURN jsonb_build_object('id', p_id);
END $$;
CREATE FUNCTION fn_like_post(p_id uuid, p_post uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE k bigint;
BEGIN
  INSERT INTO tb_like (id, fk_post) SELECT p_id, p.pk_post FROM tb_post p WHERE p.id = p_post
    ON CONFLICT (id) DO NOTHING RETURNING fk_post INTO k;
  IF k IS NOT NULL THEN
    UPDATE tb_post_stats SET like_count = like_count + 1 WHERE fk_post = k;
  END IF;
  RETURN (SELECT data FROM v_post WHERE id = p_post);
END $$;
CREATE FUNCTION fn_register_user(p_id uuid, p_email text, p_name text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tb_user (id, email, name) VALUES (p_id, p_email, p_name) ON CONFLICT (id) DO NOTHING;
  RETURN (SELECT data FROM v_user WHERE id = p_id);
END $$;
"""

FILL = """
INSERT INTO tb_user (email, name) SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, {users}) g;
INSERT INTO tb_post (fk_author, title, body)
  SELECT 1 + (g % {users}), 'Post ' || g, repeat('lorem ipsum ', 20) FROM generate_series(1, {posts}) g;
INSERT INTO tb_post_stats (fk_post, view_count, like_count) SELECT pk_post, pk_post % 97, 0 FROM tb_post;
INSERT INTO tb_post_tag (fk_post, tag) SELECT pk_post, 'tag' || (pk_post % 7) FROM tb_post;
INSERT INTO tb_comment (fk_post, fk_author, body)
  SELECT 1 + (g % {posts}), 1 + (g % {users}), 'Comment ' || g FROM generate_series(1, {comments}) g;
"""

#: Quick: what CI runs. Long: ten times the data, longer load before and after.
ADOPT_MODES: dict[str, dict[str, Any]] = {
    "quick": {},
    "long": {"users": 20000, "posts": 100000, "comments": 200000, "clients": 4, "warm_s": 10.0, "after_s": 10.0},
}

#: What an application may see while the database moves: the fence (read-only), its sessions ended,
#: the server going away; it retries.
RETRIED = {"25006", "57P01", "57P02", "57P03", "08006", "08003", "08000", "08001"}


@dataclass
class Ack:
    kind: str
    id: str
    post: Optional[str]
    at: float
    server: str


@dataclass
class AdoptResult:
    rows_before: int
    acked: int
    acked_on_source: int
    acked_on_target: int
    lost: int
    likes_acked: int
    likes_counted: int
    pause_s: float
    runbook_pause_s: float
    rows_compared: int
    sync_s: float
    cutover_s: float
    key_collisions: int
    errors: dict[str, int]
    runbook_exit: tuple[int, int]
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.runbook_exit == (0, 0) and self.lost == 0 and self.key_collisions == 0
                and self.likes_counted == self.likes_acked and self.acked_on_target > 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


class Application:
    """Clients of the FraiseQL API: mutation functions in a loop, against whichever database it points at."""

    def __init__(self, source_dsn: str, clients: int, seed: int) -> None:
        self.dsn, self.server = source_dsn, "source"
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.acks: list[Ack] = []
        self.errors: dict[str, int] = {}
        self.collisions = 0
        self.posts: list[str] = []
        self.users: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(random.Random(seed + i),), daemon=True) for i in range(clients)]

    def point_at(self, dsn: str, server: str) -> None:
        with self.lock:
            self.dsn, self.server = dsn, server

    def __enter__(self) -> "Application":
        with psycopg.connect(self.dsn, autocommit=True) as c:
            self.users = [str(r[0]) for r in c.execute("SELECT id FROM tb_user ORDER BY pk_user LIMIT 200")]
            self.posts = [str(r[0]) for r in c.execute("SELECT id FROM tb_post ORDER BY pk_post DESC LIMIT 200")]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _op(self, rng: random.Random) -> tuple[str, str, str, tuple[Any, ...]]:
        roll = rng.random()
        me = rng.choice(self.users)
        if roll < 0.35 or not self.posts:
            i = str(uuid.uuid4())
            return "post", i, "SELECT fn_create_post(%s, %s, %s, %s)", (i, me, f"title {i[:8]}", "body")
        post = rng.choice(self.posts[-200:])
        if roll < 0.7:
            i = str(uuid.uuid4())
            return "comment", i, "SELECT fn_add_comment(%s, %s, %s, %s)", (i, post, me, "nice")
        if roll < 0.95:
            i = str(uuid.uuid4())
            return "like", i, "SELECT fn_like_post(%s, %s)", (i, post)
        i = str(uuid.uuid4())
        return "user", i, "SELECT fn_register_user(%s, %s, %s)", (i, f"{i}@example.com", "Newcomer")

    def _run(self, rng: random.Random) -> None:
        conn: Any = None
        where = ""
        op: Optional[tuple[str, str, str, tuple[Any, ...]]] = None
        ambiguous = False
        while not self.stop.is_set():
            with self.lock:
                dsn, server = self.dsn, self.server
            if conn is None or where != server:
                if conn is not None:
                    conn.close()
                try:
                    conn, where = psycopg.connect(dsn, autocommit=True, connect_timeout=5), server
                except psycopg.Error as e:
                    self._count(e)
                    conn = None
                    time.sleep(0.02)
                    continue
            if op is None:
                op, ambiguous = self._op(rng), False  # a failed write is retried as it was: same UUID
            kind, ident, sql, params = op
            try:
                conn.execute(sql, params)
            except psycopg.Error as e:
                self._count(e)
                already = getattr(e, "sqlstate", None) == "23505" and ambiguous
                if getattr(e, "sqlstate", None) == "23505" and not already:
                    self.collisions += 1
                # A connection lost at the commit leaves the outcome unknown: its retry's duplicate key
                # is that same write, committed, not a collision.
                ambiguous = ambiguous or isinstance(e, psycopg.OperationalError) or conn.closed or conn.broken
                if conn.closed or getattr(e, "sqlstate", None) in RETRIED or conn.broken:
                    conn = None
                if not already:
                    time.sleep(0.02)
                    continue
            at = time.monotonic()
            with self.lock:
                self.acks.append(Ack(kind, ident, params[1] if kind in ("comment", "like") else None, at, where))
                if kind == "post":
                    self.posts.append(ident)
                if kind == "user":
                    self.users.append(ident)
            op = None
            time.sleep(0.005)
        if conn is not None:
            conn.close()

    def _count(self, e: BaseException) -> None:
        key = getattr(e, "sqlstate", None) or type(e).__name__
        with self.lock:
            self.errors[key] = self.errors.get(key, 0) + 1


def _outputs(target_port: int) -> dict[str, Any]:
    """Phase A outputs as `pulumi stack output --json` gives them; the runbook reaches the target through
    --target-dsn, so only their shape matters here."""
    return {
        "phase": "a", "regions": {"us-east-1": "primary", "us-west-2": "standby"}, "primaryRegion": "us-east-1",
        "standbyRegion": "us-west-2", "primaryDbIdentifier": "drill-primary", "primaryDbAddress": "127.0.0.1",
        "replicaDbIdentifiers": {"us-west-2": "drill-replica"}, "replicaDbAddresses": {"us-west-2": "127.0.0.1"},
        "healthCheckIds": {"us-east-1": "hc-1", "us-west-2": "hc-2"}, "replicaLagAlarmArns": {},
        "zoneId": "ZDRILL", "recordName": "api.example.com", "dbPrivateZoneId": "ZPRIVATE",
        "dbWriterHostname": "writer.db.drill.internal", "dbSecurityGroupIds": {"us-east-1": "sg-1"},
        "fenceSecurityGroupIds": {"us-east-1": "sg-2"}, "slo": {"rtoSeconds": 300, "rpoSeconds": 60},
        "alertTopicArns": {}, "dbPort": target_port, "dbName": "fraiseql",
    }


def _runbook(args: list[str], on_event: Any = None) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.Popen([sys.executable, "-m", "ops", "adopt", *args, "--json"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    events = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.strip():
            continue
        event = json.loads(line)
        events.append(event)
        if on_event is not None:
            on_event(event)
    code = proc.wait(timeout=600)
    if code != 0:
        tail = proc.stderr.read() if proc.stderr else ""
        events.append({"step": "stderr", "status": "failed", "detail": tail[-2000:]})
    return code, events


def run_adopt_drill(*, users: int = 2000, posts: int = 10000, comments: int = 20000, clients: int = 3,
                    warm_s: float = 2.0, after_s: float = 2.0, seed: int = 22,
                    progress: Any = lambda line: None) -> AdoptResult:
    with cluster(["source", "target"], settings=SETTINGS) as nodes, tempfile.TemporaryDirectory() as work:
        source, target = nodes["source"], nodes["target"]
        for node in (source, target):
            node.execute("CREATE DATABASE fraiseql")
            node.dbname = "fraiseql"
        with source.connect() as c:
            c.execute(SCHEMA.encode())
            c.execute(FILL.format(users=int(users), posts=int(posts), comments=int(comments)).encode())
        rows_before = int(source.execute(
            "SELECT (SELECT count(*) FROM tb_user) + (SELECT count(*) FROM tb_post) + (SELECT count(*) FROM tb_comment) "
            "+ (SELECT count(*) FROM tb_post_stats) + (SELECT count(*) FROM tb_post_tag)")[0][0])
        outputs = Path(work) / "outputs.json"
        outputs.write_text(json.dumps(_outputs(target.port)))
        common = ["--outputs", str(outputs), "--source", source.dsn, "--target-dsn", target.dsn,
                  "--pg-bin", str(PG_BIN), "--state", str(Path(work) / "fraiseql-adopt.json")]
        progress(f"source filled: {rows_before} rows; clients writing")
        with Application(source.dsn, clients, seed) as app:
            time.sleep(warm_s)
            t0 = time.monotonic()
            sync_code, sync_events = _runbook(["sync", *common])
            sync_s = time.monotonic() - t0
            progress(f"sync: exit {sync_code} in {sync_s:.1f} s")
            time.sleep(warm_s if sync_code == 0 else 0)
            t_cut = time.monotonic()

            def on_event(event: dict[str, Any]) -> None:
                if event.get("step") == "ready" and event.get("status") == "ok":
                    app.point_at(target.dsn, "target")  # the operator re-points the application

            cut_code, cut_events = _runbook(["cutover", *common], on_event) if sync_code == 0 else (-1, [])
            cutover_s = time.monotonic() - t_cut
            progress(f"cutover: exit {cut_code} in {cutover_s:.1f} s")
            time.sleep(after_s)
        acks = sorted(app.acks, key=lambda a: a.at)
        with target.connect() as c:
            have = {str(r[0]) for r in c.execute(
                "SELECT id FROM tb_post UNION ALL SELECT id FROM tb_comment UNION ALL SELECT id FROM tb_like "
                "UNION ALL SELECT id FROM tb_user")}
            counted = c.execute("SELECT count(*) FROM tb_like").fetchone()
            summed = c.execute("SELECT sum(like_count) FROM tb_post_stats").fetchone()
            assert counted is not None and summed is not None  # an aggregate always returns one row
            likes_counted, like_sum = int(counted[0]), int(summed[0])
        lost = [a for a in acks if a.id not in have]
        likes_acked = sum(1 for a in acks if a.kind == "like")
        around = [a.at for a in acks if a.at >= t_cut - 1.0]
        pause = max((b - a for a, b in zip(around, around[1:])), default=0.0)
        ready = next((e for e in cut_events if e.get("step") == "ready" and e.get("status") == "ok"), {})
        done = next((e for e in cut_events if e.get("step") == "result"), {})
        return AdoptResult(
            rows_before=rows_before,
            acked=len(acks),
            acked_on_source=sum(1 for a in acks if a.server == "source"),
            acked_on_target=sum(1 for a in acks if a.server == "target"),
            lost=len(lost),
            likes_acked=likes_acked,
            likes_counted=likes_counted if likes_counted == like_sum else -like_sum,
            pause_s=round(pause, 3),
            runbook_pause_s=float((ready.get("data") or {}).get("pause_s") or -1),
            rows_compared=int((done.get("data") or {}).get("rows_compared") or 0),
            sync_s=round(sync_s, 2),
            cutover_s=round(cutover_s, 2),
            key_collisions=app.collisions,
            errors=dict(app.errors),
            runbook_exit=(sync_code, cut_code),
            steps=[e for e in sync_events + cut_events if e.get("status") in ("ok", "failed", "refused", "problem", "done")],
        )


def adopt_rows(r: AdoptResult) -> list[Any]:
    """Rows for the drill table (pure)."""
    from drills.report import Row

    return [
        Row("Adopt: acknowledged writes lost moving an existing database in", f"{r.lost} of {r.acked}", "0",
            r.lost == 0 and r.runbook_exit == (0, 0),
            f"{r.rows_before} rows copied while {r.acked_on_source} writes were acknowledged on the source "
            f"(sync {r.sync_s:.1f} s); {r.acked_on_target} on the new primary after the cutover; "
            f"likes counted {r.likes_counted}/{r.likes_acked}; key collisions after the switch {r.key_collisions}"),
        Row("Adopt: write pause at the cutover (longest gap between acknowledged writes)", f"{r.pause_s:.2f} s",
            "RTO 5 min (phase A)", r.pause_s < 300,
            f"runbook fence to ready {r.runbook_pause_s:.2f} s; the application re-pointed at `ready`; "
            f"{r.rows_compared} rows compared after; client errors {dict(sorted(r.errors.items()))} (retried)"),
    ]


if __name__ == "__main__":
    print(json.dumps(run_adopt_drill(progress=lambda s: print(s, file=sys.stderr)).as_dict(), indent=2, default=str))
