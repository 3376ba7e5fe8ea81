"""Claim (docs/architecture.md, Phase B, claims table, the large-transaction row): a large
transaction's apply fences nobody unless another region's change must wait for something the apply
holds on a writer applying it (a row, a unique value it wrote, a key bucket). Such a change holds
its link (from the region that wrote it to that writer) for the rest of the apply, and the quorum
treats the link as cut one way: one of its two ends is fenced (which one, region order decides),
the regions of the clique that takes over may pause for the hand-over (confirmation, then the
unfence hold), and every region is writable again by itself once the apply has committed
everywhere, with every writer equal.

Why this is the design (decided on 2026-12-08, issue 19, item 5). Take an ordinary
backfill on west (one ``UPDATE`` of many existing rows, by the application role) while eu's
application updates one of those rows. East applies west's backfill as one transaction that holds
every row lock it took until it commits; eu's change of the same row reaches east while that apply
runs, and east's apply worker for eu waits on the row lock for the rest of the apply. Nothing of
eu's after that change reaches east meanwhile: the link is undelivered, not slow, and the fence
must count it as down, because an application holding that worker looks the same
(tests/redteam/test_red12_held_link.py, test_open_throttled_data_link.py). A rule that excused a
worker waiting only on other links' apply workers was tried on 2026-12-07 and withdrawn: round 12
laundered an application's lock through such a worker and kept a stalled link heard past the bound.
So, after ``stale_after``, east no longer hears eu and the selected clique is {us-east-1,
us-west-2} (ties by region order): eu is fenced; east and west may pause for the hand-over. With
the roles swapped, the region that wrote nothing can be the fenced end
(tests/redteam/test_red22_tiebreak_fences_bystander.py, red team 22). The runbook's answer is to batch
backfills (docs/runbooks.md, "Alarm: a region is fenced", step 4).

The transaction is scaled to the harness's probe timing (probe 0.25 s, stale 1 s): its apply takes a
few seconds, as a 1,000,000-row backfill's apply takes minutes against the default 15 s.
``tests/redteam/test_backfill_fence_shapes.py`` and ``test_backfill_fence_inserts.py`` hold the other
shapes (a same-key insert, a child row, a counter), as long probes.

    .venv/bin/python -m pytest -q -s tests/redteam/test_backfill_fence.py -p no:cacheprovider
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PROBE_S, WEST, connect, settings, wait_until, writable

#: How long after a backfill is applied everywhere every region must be writable again: the fenced
#: region needs one fresh heartbeat from each peer and ``unfence_after`` (1) healthy probe, a second
#: or so; the rest is margin for a loaded machine.
RECOVER_S = 30.0

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

    def all_writable_for(self, seconds: float, timeout: float = 60) -> float:
        """Until every probe of the last ``seconds`` (3 rounds at least) found its region writable;
        returns when that began."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            recent = [e for e in self.log if e[0] > now - seconds]
            if len(recent) >= 3 * len(REGIONS) and all(e[2] for e in recent):
                return recent[0][0]
            time.sleep(0.2)
        raise AssertionError(f"the mesh did not become writable within {timeout} s: {self.fenced_since(deadline - timeout)}")

    def fenced_since(self, t0: float) -> dict[str, int]:
        """Fenced probes per region since ``t0``."""
        out: dict[str, int] = {}
        for e in self.log:
            if e[0] >= t0 and not e[2]:
                out[e[1]] = out.get(e[1], 0) + 1
        return out


#: The reasons a region of the new majority is fenced while the quorum moves to it: its peers have
#: not yet reported the same clique, then the unfence hold (replication/quorum.py).
HANDOVER = frozenset({"unconfirmed", "stabilizing"})


def assert_fenced_only_while_held(pr: Prober, t_start: float, cut_ends: set[str], what: str) -> list[Any]:
    """The claim, judged over the prober's log; called once the backfill is applied on every writer.
    Every region is writable again (for a whole second) within ``RECOVER_S``; and from the backfill's
    start (``t_start``, monotonic) only the ends of the links the apply held (``cut_ends``) were
    fenced, except for the quorum's hand-over (``HANDOVER``) while a clique without one of them took
    over. With no such link (``cut_ends`` empty), nobody was fenced at all. Returns the fenced probes."""
    pr.all_writable_for(1.0, timeout=RECOVER_S)
    fences = [e for e in pr.log if e[0] >= t_start and not e[2]]
    allowed = HANDOVER if cut_ends else frozenset()
    wrong = [e for e in fences if e[1] not in cut_ends and e[3] not in allowed]
    assert not wrong, (f"{what}: regions at neither end of a held link were fenced "
                       f"({sorted({e[1] for e in wrong})}): {_summary(fences)}")
    return fences


def _summary(fences: list[Any]) -> str:
    by_region: dict[str, list[Any]] = {}
    for e in fences:
        by_region.setdefault(e[1], []).append(e)
    return "; ".join(f"{r}: {len(v)} fenced probes over {v[-1][0] - v[0][0]:.1f} s ({sorted({e[3] for e in v})}, links {v[0][4]})"
                     for r, v in by_region.items()) or "none"


def timeline(fences: list[Any], t_commit: float) -> str:
    """When each region's fenced probes began and ended, in seconds after the backfill's commit."""
    by_region = {r: [e for e in fences if e[1] == r] for r in REGIONS}
    return "; ".join(f"{r}: {len(v)} probes from {v[0][0] - t_commit:+.1f} s to {v[-1][0] - t_commit:+.1f} s after the commit"
                     for r, v in by_region.items() if v)


def count_everywhere(m: Mesh, sql: str, args: tuple[Any, ...], want: int, timeout: float = 300) -> float:
    """Until ``sql`` (a count) answers ``want`` on every writer; returns how long that took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(m.execute(r, sql, args)[0][0] == want for r in REGIONS):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"did not replicate in {timeout} s: {sql} {args}")


def _rows_everywhere(m: Mesh, lo: int, hi: int, where: str = "TRUE", timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(m.execute(r, f"SELECT count(*) FROM items WHERE id BETWEEN %s AND %s AND {where}", (lo, hi))[0][0]
               == hi - lo + 1 for r in REGIONS):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError("the backfill did not replicate")


Statement = tuple[str, tuple[Any, ...]]


def race(m: Mesh, west: Any, bulk: Statement, one: Optional[Statement], writer: str = EU) -> tuple[float, float]:
    """``writer``'s application (eu unless said) runs ``one`` and leaves it open while the bulk
    region's (``west``, autocommit) runs ``bulk``; ``writer`` commits 0.2 s after the bulk commit, and
    both close. When the bulk statement started and committed."""
    app = connect(m, writer, APP_ROLE)
    if one is not None:
        app.execute(*one)
    t_start = time.monotonic()
    west.execute(*bulk)
    t_commit = time.monotonic()
    time.sleep(0.2)
    app.commit()
    app.close()
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
        fences = assert_fenced_only_while_held(pr, t_start, {EU, EAST} if eu_update else set(), "an update backfill")
    wait_until("row lo equal on every writer", lambda: len({m.execute(r, "SELECT v FROM items WHERE id = %s", (lo,))[0]
                                                            for r in REGIONS}) == 1, timeout=RECOVER_S)
    return fences, t_commit - t_start, replicated_s


def _report(fences: list[Any], update_s: float, replicated_s: float) -> str:
    return (f"backfill of {ROWS} rows ran {update_s:.1f} s, replicated everywhere {replicated_s:.1f} s after its commit; "
            f"fenced: {_summary(fences)}")


def test_a_backfill_another_region_writes_to_fences_only_the_held_links_ends_until_it_is_applied(
        m: Mesh, agents: dict[str, Any]) -> None:
    fences, update_s, replicated_s = _backfill(m, agents, eu_update=True, base=BASE)
    print("\n" + _report(fences, update_s, replicated_s))


def test_a_backfill_no_other_region_writes_to_fences_nobody(m: Mesh, agents: dict[str, Any]) -> None:
    fences, update_s, replicated_s = _backfill(m, agents, eu_update=False, base=BASE + 1_000_000)
    print("\n" + _report(fences, update_s, replicated_s))
