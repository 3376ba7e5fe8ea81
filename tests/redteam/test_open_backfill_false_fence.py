"""Claim: "a large transaction does not fence healthy regions (0 false fences, 1,000,000 rows at the
default timing)", with "hears" = a fresh heartbeat and a data link that is receiving.

Attack: an ordinary backfill on west (one ``UPDATE`` of many existing rows of a replicated table, by
the application role) while eu's application updates one of those rows, as live traffic does. East
applies west's backfill as one transaction that holds every row lock it took until it commits; eu's
change of the same row reaches east while that apply runs and east's apply worker for eu waits on
the row lock for the rest of the backfill's apply. East's data link from eu receives nothing, so
after stale_after east no longer hears eu, and the selected clique becomes {us-east-1, us-west-2}
(ties by region order): **eu is fenced**, although every link of eu's is up and eu did nothing but
a one-row update. The drill's big transaction (``drills.nemesis._big_txn_false_fences``) inserts new
rows with no concurrent traffic, so it never meets this. The transaction here is scaled to the
probe timing of the harness (probe 0.25 s, stale 1 s): its apply takes a few seconds, as a
1,000,000-row backfill's apply takes minutes against the default 15 s.

``test_control_...`` is the same backfill without the concurrent update (expected to pass: it
shows the fence comes from the lock wait, not from load).

A fix was tried on 2026-12-07 and withdrawn: a silent link whose apply worker waits only on other
links' receiving apply workers counted as receiving. Round 12 laundered an application's lock
through such a worker and kept a stalled link heard past the bound
(tests/redteam/test_red12_held_link.py).

    .venv/bin/python -m pytest -q tests/redteam/test_open_backfill_false_fence.py
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import pytest

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.roles import APP_ROLE
from tests.redteam.harness import EU, PROBE_S, WEST, connect, settings, writable

OPEN = pytest.mark.xfail(strict=False, reason="open finding (replication/README.md, Data links): an apply worker waiting on a row lock held by another link's apply of a large transaction receives nothing, so its link looks silent and a healthy region is fenced for the rest of that apply")

ROWS = 60_000
BASE = 20_000_000


class Prober:
    """Every agent probe round robin on a thread (as the harness's ``rounds`` does), recording decisions."""

    def __init__(self, agents: dict[str, Any]) -> None:
        self.agents = agents
        self.log: list[tuple[float, str, bool, str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            for r in REGIONS:
                p = probe(self.agents[r], settings(r), control_on=True)
                self.log.append((time.monotonic(), r, writable(p), p.decision.reason,
                                 {k: v["link_healthy"] for k, v in p.evidence.items()}))
            time.sleep(PROBE_S)

    def __enter__(self) -> "Prober":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(15)

    def all_writable_for(self, seconds: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            recent = [e for e in self.log if e[0] > now - seconds]
            if len(recent) >= 3 * len(REGIONS) and all(e[2] for e in recent):
                return
            time.sleep(0.2)
        raise AssertionError("the mesh did not become writable")


def _rows_everywhere(m: Mesh, lo: int, hi: int, where: str = "TRUE", timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(m.execute(r, f"SELECT count(*) FROM items WHERE id BETWEEN %s AND %s AND {where}", (lo, hi))[0][0]
               == hi - lo + 1 for r in REGIONS):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError("the backfill did not replicate")


Statement = tuple[str, tuple[Any, ...]]


def race(m: Mesh, west: Any, bulk: Statement, one: Optional[Statement]) -> tuple[float, float]:
    """eu's application runs ``one`` and leaves it open while west's (``west``, autocommit) runs ``bulk``;
    eu commits 0.2 s after west's commit, and both close. When the bulk statement started and committed."""
    eu = connect(m, EU, APP_ROLE)
    if one is not None:
        eu.execute(*one)
    t_start = time.monotonic()
    west.execute(*bulk)
    t_commit = time.monotonic()
    time.sleep(0.2)
    eu.commit()
    eu.close()
    west.close()
    return t_start, t_commit


def _backfill(m: Mesh, agents: dict[str, Any], *, eu_update: bool, base: int) -> tuple[list[Any], float, float]:
    lo, hi = base + 1, base + ROWS
    with Prober(agents) as pr:
        pr.all_writable_for(2.0)
        west = connect(m, WEST, APP_ROLE, autocommit=True)
        west.execute("INSERT INTO items (id, v) SELECT g, 'seed' FROM generate_series(%s::int, %s::int) g", (lo, hi))
        _rows_everywhere(m, lo, hi)
        pr.all_writable_for(2.0)
        # live traffic in eu: one ordinary row update, open while west's backfill commits
        t_start, t_commit = race(m, west, ("UPDATE items SET v = 'backfilled' WHERE id BETWEEN %s AND %s", (lo, hi)),
                                 ("UPDATE items SET v = 'eu edit' WHERE id = %s", (lo,)) if eu_update else None)
        replicated_s = _rows_everywhere(m, lo + 1, hi, "v = 'backfilled'")
        time.sleep(2.0)
    fences = [e for e in pr.log if e[0] >= t_start and not e[2]]
    return fences, t_commit - t_start, replicated_s


def _report(fences: list[Any], update_s: float, replicated_s: float) -> str:
    if not fences:
        return f"no fence; backfill ran {update_s:.1f} s, replicated everywhere {replicated_s:.1f} s after its commit"
    by_region: dict[str, list[Any]] = {}
    for e in fences:
        by_region.setdefault(e[1], []).append(e)
    parts = [f"{r}: {len(v)} fenced probes over {v[-1][0] - v[0][0]:.1f} s ({sorted({e[3] for e in v})}, links {v[0][4]})"
             for r, v in by_region.items()]
    return (f"backfill of {ROWS} rows ran {update_s:.1f} s, replicated everywhere {replicated_s:.1f} s after its commit; "
            "false fences: " + "; ".join(parts))


@OPEN
def test_a_backfill_in_west_and_a_one_row_update_in_eu_fence_eu(m: Mesh, agents) -> None:
    fences, update_s, replicated_s = _backfill(m, agents, eu_update=True, base=BASE)
    print("\n" + _report(fences, update_s, replicated_s))
    assert not fences, "healthy regions fenced during an ordinary backfill: " + _report(fences, update_s, replicated_s)

