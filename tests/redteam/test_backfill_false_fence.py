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

A fix was tried on 2026-12-07 and withdrawn: a silent link whose apply worker waits only on other
links' receiving apply workers counted as receiving. Round 12 laundered an application's lock
through such a worker and kept a stalled link heard past the bound
(tests/redteam/test_red12_held_link.py).

Fixed on 2026-12-08 in the merge, not the fence: a merge that meets a row another link's apply
holds waits 200 ms at most (per apply transaction), then parks the change (``FQ006``), and later
changes of that key park behind it; the agent merges them again, in order, at its next maintenance
run. East's link from eu reads on, so it is never silent. A row an application holds is waited for
as before (round 12's rule stays withdrawn: the fence still sees such a link go silent).

The second test is the order: an ``app`` table's next version is a fast-forward of the one before
only, so a key's changes must merge in the order they came even when the first one waited parked
and the row was free again by the time the second arrived.

    .venv/bin/python -m pytest -q tests/redteam/test_backfill_false_fence.py
"""

from __future__ import annotations

import threading
import time
from typing import Any

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent import probe
from replication.agent.maintenance import maintain
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PROBE_S, WEST, connect, settings, writable

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


def _backfill(m: Mesh, agents: dict[str, Any], *, eu_update: bool, base: int) -> tuple[list[Any], float, float]:
    lo, hi = base + 1, base + ROWS
    with Prober(agents) as pr:
        pr.all_writable_for(2.0)
        west = connect(m, WEST, APP_ROLE, autocommit=True)
        west.execute("INSERT INTO items (id, v) SELECT g, 'seed' FROM generate_series(%s::int, %s::int) g", (lo, hi))
        _rows_everywhere(m, lo, hi)
        pr.all_writable_for(2.0)
        eu = connect(m, EU, APP_ROLE)
        if eu_update:  # live traffic in eu: one ordinary row update, open while west's backfill commits
            eu.execute("UPDATE items SET v = 'eu edit' WHERE id = %s", (lo,))
        t_start = time.monotonic()
        west.execute("UPDATE items SET v = 'backfilled' WHERE id BETWEEN %s AND %s", (lo, hi))
        t_commit = time.monotonic()
        time.sleep(0.2)
        eu.commit()
        eu.close()
        west.close()
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


def test_a_backfill_in_west_and_a_one_row_update_in_eu_fence_nobody(m: Mesh, agents) -> None:
    fences, update_s, replicated_s = _backfill(m, agents, eu_update=True, base=BASE)
    print("\n" + _report(fences, update_s, replicated_s))
    assert not fences, "healthy regions fenced during an ordinary backfill: " + _report(fences, update_s, replicated_s)
    # eu's change that waited (parked at east) is merged by the agent's next maintenance run: every
    # writer ends with the same row, and nothing stays parked.
    for r in REGIONS:
        kept = maintain(agents[r], full=False)
        assert kept.errors == [] and kept.parked == 0, (r, kept)
    first = {r: m.execute(r, "SELECT v, _repl_ts FROM items WHERE id = %s", (BASE + 1,)) for r in REGIONS}
    assert len({repr(v) for v in first.values()}) == 1, first


def _wait(what: str, cond: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_keys_changes_that_wait_for_another_apply_merge_in_the_order_they_came() -> None:
    with mesh(POLICY, APP_SCHEMA, delays=False) as pm:  # writable without agents
        a, z = 91, 92
        pm.execute(WEST, "INSERT INTO accounts (id, balance) VALUES (%s, 0)", (a,))
        pm.execute(WEST, "INSERT INTO items (id, v) VALUES (%s, 'z')", (z,))
        _wait("seed rows", lambda: all(pm.execute(r, "SELECT count(*) FROM items WHERE id = %s", (z,)) == [(1,)]
                                       and pm.execute(r, "SELECT count(*) FROM accounts WHERE id = %s", (a,)) == [(1,)]
                                       for r in REGIONS))
        # An application session on east holds z, so east's apply of west's next transaction (the
        # account first, then z) holds the account's row for as long as this session likes.
        holder = pm.connect(EAST)
        holder.autocommit = False
        holder.execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (z,))
        with pm.connect(WEST) as w:
            w.autocommit = False
            w.execute("UPDATE accounts SET balance = 1 WHERE id = %s", (a,))
            w.execute("UPDATE items SET v = 'west' WHERE id = %s", (z,))
            w.commit()
        _wait("eu has west's version", lambda: pm.execute(EU, "SELECT balance FROM accounts WHERE id = %s", (a,)) == [(1,)])
        pm.execute(EU, "UPDATE accounts SET balance = 2 WHERE id = %s", (a,))  # based on west's version
        parked = "SELECT count(*) FROM fraiseql_repl.parked WHERE tbl = 'public.accounts' AND sqlstate = 'FQ006'"
        _wait("eu's first change waits, parked, at east", lambda: pm.execute(EAST, parked) == [(1,)])
        holder.rollback()  # west's transaction commits at east: the account's row is free again
        holder.close()
        _wait("west's transaction applied at east", lambda: pm.execute(EAST, "SELECT v FROM items WHERE id = %s", (z,)) == [("west",)])
        pm.execute(EU, "UPDATE accounts SET balance = 3 WHERE id = %s", (a,))  # based on eu's first
        _wait("eu's second change reaches east", lambda: pm.execute(EAST, parked) == [(2,)], timeout=10)
        with pm.connect(EAST) as c:
            c.autocommit = True
            kept = maintain(c, full=False)  # what the agent runs between probes
        assert kept.merged_from_parked == 2 and kept.parked == 0, kept
        assert {r: pm.execute(r, "SELECT balance FROM accounts WHERE id = %s", (a,)) for r in REGIONS} == {
            r: [(3,)] for r in REGIONS}
        assert pm.execute(EAST, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE table_name = 'public.accounts'") == [(0,)]

