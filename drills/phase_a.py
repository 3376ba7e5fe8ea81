"""Phase A drill: primary + async streaming standby across a delayed link, then kill -9.

Measures what the architecture promises for phase A (RPO 1 min, RTO 5 min,
lag alarm at 30 s):

* replication delay of a heartbeat row (commit acknowledged on the primary →
  visible on the standby), p50/p99/max — the window of acknowledged writes a
  crash can lose;
* ``pg_stat_replication.replay_lag`` as PostgreSQL reports it;
* after ``kill -9`` of the whole primary: time for ``pg_promote()`` and until
  the standby accepts a write (the mechanism only: no detection, no DNS);
* acknowledged transactions missing on the promoted standby.
"""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from drills.pg import cluster
from drills.proxy import DelayProxy

__all__ = ["PhaseAResult", "percentile", "run_phase_a"]

PRIMARY_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "hot_standby": "on",
    "wal_keep_size": "256MB",
    "synchronous_commit": "on",  # local flush only: the standby is asynchronous
}


@dataclass
class PhaseAResult:
    """Everything measured by one phase-A run (times in ms unless named ``_s``)."""

    one_way_ms: float
    load_s: float
    writers: int
    acked: int
    tps: float
    heartbeat_samples: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    replay_lag_p50_ms: float | None
    replay_lag_max_ms: float | None
    lost: int
    lost_window_ms: float
    promote_s: float
    kill_to_write_s: float
    standby_rows_after_promotion: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


class _Writer(threading.Thread):
    """Inserts ledger rows as fast as it can and remembers which commits were acknowledged."""

    def __init__(self, dsn: str, ids: itertools.count[int], lock: threading.Lock, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.dsn, self.ids, self.lock, self.stop = dsn, ids, lock, stop
        self.acked: list[tuple[int, float]] = []

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                while not self.stop.is_set():
                    with self.lock:
                        i = next(self.ids)
                    c.execute("INSERT INTO ledger (id) VALUES (%s)", (i,))
                    self.acked.append((i, time.monotonic()))  # commit returned: acknowledged
        except psycopg.Error:
            pass  # the primary was killed


def _heartbeat_lag(primary_dsn: str, standby_dsn: str, stop: threading.Event, out: list[float]) -> None:
    """Write a heartbeat every 50 ms; poll the standby; record ack→visible delay."""
    acked: dict[int, float] = {}
    seen_upto = 0
    with psycopg.connect(primary_dsn, autocommit=True) as p, psycopg.connect(standby_dsn, autocommit=True) as s:
        beat = 0
        next_beat = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                beat += 1
                p.execute("UPDATE heartbeat SET n = %s WHERE id = 1", (beat,))
                acked[beat] = time.monotonic()
                next_beat = now + 0.05
            row = s.execute("SELECT n FROM heartbeat WHERE id = 1").fetchone()
            visible = time.monotonic()
            n = int(row[0]) if row else 0
            if n > seen_upto:
                for b in range(seen_upto + 1, n + 1):
                    if b in acked:
                        out.append((visible - acked[b]) * 1000)
                seen_upto = n
            time.sleep(0.001)


def _replay_lag_sampler(primary_dsn: str, stop: threading.Event, out: list[float]) -> None:
    with psycopg.connect(primary_dsn, autocommit=True) as p:
        while not stop.is_set():
            row = p.execute(
                "SELECT extract(epoch FROM replay_lag) * 1000 FROM pg_stat_replication LIMIT 1"
            ).fetchone()
            if row and row[0] is not None:
                out.append(float(row[0]))
            time.sleep(0.1)


def run_phase_a(*, one_way_ms: float = 17.0, load_s: float = 8.0, writers: int = 2) -> PhaseAResult:
    """Run the whole drill on throw-away servers and return the measurements."""
    with cluster(["primary"], settings=PRIMARY_SETTINGS) as nodes:
        primary = nodes["primary"]
        primary.execute("CREATE TABLE ledger (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        primary.execute("CREATE TABLE heartbeat (id int PRIMARY KEY, n bigint NOT NULL)")
        primary.execute("INSERT INTO heartbeat VALUES (1, 0)")
        with DelayProxy(primary.port, delay_up_ms=one_way_ms, delay_down_ms=one_way_ms, name="standby->primary") as link:
            standby = primary.make_standby("standby", via_port=link.listen_port)
            nodes["standby"] = standby
            standby.start()
            standby.wait_ready()

            stop_load, stop_obs = threading.Event(), threading.Event()
            lock = threading.Lock()
            ids = itertools.count(1)
            ws = [_Writer(primary.dsn, ids, lock, stop_load) for _ in range(writers)]
            lags: list[float] = []
            replay: list[float] = []
            observers = [
                threading.Thread(target=_heartbeat_lag, args=(primary.dsn, standby.dsn, stop_obs, lags), daemon=True),
                threading.Thread(target=_replay_lag_sampler, args=(primary.dsn, stop_obs, replay), daemon=True),
            ]
            for t in [*ws, *observers]:
                t.start()
            t_load = time.monotonic()
            time.sleep(load_s)
            stop_obs.set()
            for t in observers:
                t.join(timeout=10)

            # Crash while the writers are still writing.
            t_kill = time.monotonic()
            primary.kill()
            stop_load.set()
            for w in ws:
                w.join(timeout=10)
            elapsed = t_kill - t_load

            t_promote = time.monotonic()
            standby.promote(wait=True)
            promote_s = time.monotonic() - t_promote
            with standby.connect() as c:
                c.execute("INSERT INTO ledger (id) VALUES (-1)")
            kill_to_write_s = time.monotonic() - t_kill

            acked = [a for w in ws for a in w.acked]
            present = {int(r[0]) for r in standby.execute("SELECT id FROM ledger WHERE id > 0")}
            lost = [(i, t) for i, t in acked if i not in present]
            lost_window_ms = (max(t for _, t in lost) - min(t for _, t in lost)) * 1000 if lost else 0.0

    return PhaseAResult(
        one_way_ms=one_way_ms,
        load_s=elapsed,
        writers=writers,
        acked=len(acked),
        tps=len(acked) / elapsed if elapsed else 0.0,
        heartbeat_samples=len(lags),
        lag_p50_ms=statistics.median(lags) if lags else float("nan"),
        lag_p99_ms=percentile(lags, 99),
        lag_max_ms=max(lags) if lags else float("nan"),
        replay_lag_p50_ms=statistics.median(replay) if replay else None,
        replay_lag_max_ms=max(replay) if replay else None,
        lost=len(lost),
        lost_window_ms=lost_window_ms,
        promote_s=promote_s,
        kill_to_write_s=kill_to_write_s,
        standby_rows_after_promotion=len(present),
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run_phase_a().as_dict(), indent=2))
