"""Claim C: "A lease never lasts past lease_s after the observation it was granted on, however long the
agent pauses anywhere in its loop."

The east agent is paused (in-process) before and after every statement probe() sends, and at the
failpoint ``agent.after_observe`` (replication/failpoints.py, through FRAISEQL_FAILPOINTS_FILE); east is
cut off at the start of the pause, and the pause (2.5 s) is longer than stale_after + lease. A writer
thread tries a plain INSERT on east every 20 ms throughout. Each case FAILS if any of those writes
committed (commit timestamp, server clock) later than lease_s after the newest observation any east
probe granted on (its heartbeat's observed_at), or if the lease sequence says the lease runs longer.

    .venv/bin/python -m pytest -q tests/redteam/test_claim_c_paused_agent.py
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

import replication.agent.probing as probing
from drills.mesh import Mesh
from replication.agent import probe
from replication.roles import AGENT_ROLE, APP_ROLE
from tests.redteam.harness import EAST, LEASE_S, connect, healthy, key, settings

PAUSE_S = 2.5
#: the statements probe() sends on a fenced or writable run, in order (the message is sent through a
#: client-side cursor); end_writes only runs when fenced.
POINTS = [(i, when) for i in range(7) for when in ("before", "after")] + [("failpoint", "agent.after_observe")]


class Pausing(psycopg.Connection):  # type: ignore[type-arg]
    """Counts the statements sent through it (and through client cursors made on it) and pauses once,
    before or after statement number ``at``, cutting its region off first."""

    def setup(self, at: int, when: str, cut: Any) -> None:
        self.n, self.at, self.when, self.cut, self.paused_at = 0, at, when, cut, None

    def _maybe(self, when: str) -> None:
        if self.paused_at is None and self.n == self.at and self.when == when:
            self.paused_at = time.monotonic()
            self.cut()
            time.sleep(PAUSE_S)

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        self._maybe("before")
        out = super().execute(query, params, **kw)
        self._maybe("after")
        self.n += 1
        return out


class PausingCursor(psycopg.ClientCursor):  # type: ignore[type-arg]
    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        conn = self.connection
        conn._maybe("before")  # type: ignore[attr-defined]
        out = super().execute(query, params, **kw)
        conn._maybe("after")  # type: ignore[attr-defined]
        conn.n += 1  # type: ignore[attr-defined]
        return out


def _writer(m: Mesh, stop: threading.Event, committed: list[int]) -> None:
    c = connect(m, EAST, APP_ROLE, autocommit=True)
    while not stop.is_set():
        k = key(9_000_000)
        try:
            c.execute("INSERT INTO items (id, v) VALUES (%s, 'probe c')", (k,))
            committed.append(k)
        except psycopg.Error:
            if c.broken:  # ended by the fence (end_writes): keep trying on a new session
                c = connect(m, EAST, APP_ROLE, autocommit=True)
        time.sleep(0.02)
    c.close()


@pytest.mark.parametrize("point", POINTS, ids=[f"{w}-{i}" for i, w in POINTS])
def test_no_write_commits_past_lease_s_after_the_newest_observation(m: Mesh, agents, point, monkeypatch,
                                                                  tmp_path) -> None:
    healthy(agents)
    at, when = point
    conn = Pausing.connect(f"host=127.0.0.1 port={m.pg[EAST].port} dbname=postgres user={AGENT_ROLE}", autocommit=True)
    conn.setup(-1, "", lambda: None)
    conn.execute("SET statement_timeout = '5s'")
    conn.n = 0
    if at == "failpoint":
        spec = tmp_path / "failpoints.json"
        spec.write_text(json.dumps({when: {"token": f"t{time.monotonic_ns()}", "seconds": PAUSE_S}}))
        monkeypatch.setenv("FRAISEQL_FAILPOINTS_FILE", str(spec))
        timer = threading.Timer(0.05, lambda: m.partition(EAST))
    else:
        conn.setup(int(at), when, lambda: m.partition(EAST))
        timer = None
    monkeypatch.setattr(probing, "psycopg_client_cursor", lambda c: PausingCursor(c))
    stop, committed = threading.Event(), []
    th = threading.Thread(target=_writer, args=(m, stop, committed))
    th.start()
    try:
        time.sleep(0.2)
        if timer:
            timer.start()
        probe(conn, settings(EAST), control_on=True)
        time.sleep(LEASE_S + 0.5)  # let whatever was granted run out, writes still trying
    finally:
        stop.set()
        th.join(10)
        conn.close()
        m.heal()
    observed, lease = m.execute(
        EAST, "SELECT extract(epoch FROM h.observed_at)::float8, (SELECT last_value FROM fraiseql_repl.lease_until) "
              "FROM fraiseql_repl.heartbeats h WHERE h.node = %s", (EAST,))[0]
    limit = float(observed) + LEASE_S
    last = m.execute(EAST, "SELECT max(extract(epoch FROM pg_xact_commit_timestamp(xmin)))::float8 FROM items "
                           "WHERE id = ANY(%s)", (committed,))[0][0] if committed else None
    print(f"\npause {when} statement {at}: lease end {float(lease) / 1e6 - float(observed):+.3f} s after the "
          f"observation; last write committed {(last - float(observed)) if last else float('nan'):+.3f} s after it "
          f"(limit {LEASE_S})")
    assert float(lease) / 1e6 <= limit + 1e-6 or lease == 0
    assert last is None or last <= limit, f"a write committed {last - limit:.3f} s past the lease"
