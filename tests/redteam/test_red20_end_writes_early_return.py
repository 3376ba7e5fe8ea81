"""Red team 20, claim 1: end_writes returns as soon as the sessions it ended left pg_stat_activity
(379153c, pg_stat_clear_snapshot in its wait loop).

Specification: after the fencing probe (revoke, then end_writes) returned, no transaction that had
written to a replicated table before it commits: its commit timestamp is never later than the end of
the agent's fencing round. Many sessions race their COMMITs (deferred checks run early with SET
CONSTRAINTS ALL IMMEDIATE, some with savepoints, cursors WITH HOLD, serializable) against the fence.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red20_end_writes_early_return.py -p no:cacheprovider
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, REGIONS, Probing, agent_conn, connect, healthy, red_mesh, rounds, writable


def test_no_commit_lands_after_end_writes_returned() -> None:
    rng = random.Random(7)
    late_all = []
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS}
        for attempt in range(3):
            m.heal()
            healthy(agents)
            probing = Probing(agents)  # leases renewed while the sessions write
            apps = []
            for i in range(24):
                c = connect(m, EAST, APP_ROLE, autocommit=True)
                k = 500_000 + attempt * 1000 + i
                style = i % 4
                c.execute("BEGIN ISOLATION LEVEL SERIALIZABLE" if style == 1 else "BEGIN")
                if style == 2:
                    c.execute("SAVEPOINT s")
                c.execute("INSERT INTO items (id, v) VALUES (%s, 'x')", (k,))
                if style == 2:
                    c.execute("RELEASE SAVEPOINT s")
                if style == 3:
                    c.execute("DECLARE cur CURSOR WITH HOLD FOR SELECT * FROM items")
                c.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the commit check runs now, lease valid
                apps.append((c, k))
            probing.close()
            outcome: dict[int, str] = {}

            def commit(c: Any, k: int, delay: float, outcome: dict[int, str] = outcome) -> None:
                time.sleep(delay)
                try:
                    c.execute("COMMIT")
                    outcome[k] = "ok"
                except Exception as exc:  # noqa: BLE001
                    outcome[k] = type(exc).__name__
            threads = [threading.Thread(target=commit, args=(c, k, rng.uniform(0.0, 3.0))) for c, k in apps]
            for t in threads:
                t.start()
            time.sleep(0.3)
            m.partition(EAST)
            ended_at = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                last = rounds(agents, 1, only=[EAST])
                if not writable(last[EAST]):
                    ended_at = m.execute(EAST, "SELECT clock_timestamp()")[0][0]
                    break
            for t in threads:
                t.join()
            assert ended_at is not None
            rows = m.execute(EAST, "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin) - %s)::float8 FROM items "
                                   "WHERE id BETWEEN %s AND %s ORDER BY id", (ended_at, 500_000 + attempt * 1000, 500_000 + attempt * 1000 + 99))
            late = [(k, s) for k, s in rows if s > 0]
            print(f"\nattempt {attempt}: committed {len(rows)} of {len(apps)} (seconds after the fencing round ended: "
                  f"{[round(s, 3) for _, s in rows]}), outcomes {sorted(set(outcome.values()))}")
            late_all += late
            for c, _ in apps:
                c.close()
    assert not late_all, f"commits after end_writes returned: {late_all}"
