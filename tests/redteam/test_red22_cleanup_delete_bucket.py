"""Red team 22: a bulk load's apply fences a region that deletes a row it does not hold.

Claim (docs/architecture.md, claims table; tests/redteam/test_backfill_fence.py): "A large
transaction's apply fences no region that writes none of the rows it holds."

Attack. West's application bulk-loads 60,000 new keys into ``items`` (one INSERT). Every merged
insert of a new key takes its key's bucket lock shared (``fraiseql_repl.key_bucket``: 256 buckets
per table), so each writer applying the load holds every bucket of ``items`` shared until the load
commits there. Meanwhile east's and eu's applications run an ordinary clean-up of OLD rows of
``items`` (keys the load does not have; nobody writes any of the load's rows): east deletes 1,000
old rows, then 10 more that eu's clean-up deletes too (a retention job run in two regions). Each
region's delete of the 10 reaches the other, where the row is already gone: a merged delete that
removes nothing takes its key's bucket lock EXCLUSIVE (200 ms lock timeout), which the other link's
apply of the bulk load holds shared. At eu the first of the 10 is east's transaction's 1,001st
change, in the "fast part" (no subtransaction): the lock timeout fails the whole apply transaction,
eu counts an apply error on its link from east, and that link is unhealthy for ``stale_after``;
the careful retry then waits 200 ms x 5 per delete and parks it (55P03) while the load is applied.
At east, eu's 10 deletes wait ~1.1 s each (careful part), which leaves east's link from eu silent
for just over ``stale_after`` between messages. The edge east-eu is cut in the fence's view and eu is
fenced (clique {east, west}), though no region wrote a row the bulk load holds. The control, the
same clean-ups with no bulk load in flight, fences nobody (asserted first, in the same test).

Observed (red team 22, 2026-12-08, real PostgreSQL 18, harness timing):
* this probe (1,000 + 10 deletes): 5 of 5 runs failed; control fenced nobody each time; eu-west-1
  fenced 5, 6, 8, 10 and 11 probes over 1.1 to 4.2 s, from +0.7..0.9 s after the load's commit, within
  the apply (applied everywhere 3.7 to 5.4 s after the commit); us-east-1 and us-west-2 at most 1
  'unconfirmed' probe each; apply errors: 1 on eu's link from us-east-1 every run; parked 55P03:
  2-3 per receiving writer; writers equal (``items``) after the agents' housekeeping.
* an earlier form with only the 10 shared deletes (no apply error, only the ~1.1 s gaps): 2 of 3 runs
  failed (eu-west-1 10 probes over 7.3 s, then 6 over 2.6 s), 1 passed (3 s of waiting, no fence).

Kept as a regression test of the claim as restated after this finding (0166cfc,
tests/redteam/test_backfill_fence.py): a change that waits behind the apply holds its link, and
only that link's ends may be fenced (the rest only for the hand-over), everyone writable again
within 30 s of the apply. The judge is the spec's; this run's ends are named at the call.

    FRAISEQL_LONG_PROBES=1 .venv/bin/python -m pytest -q -s tests/redteam/test_red22_cleanup_delete_bucket.py -p no:cacheprovider
"""

from __future__ import annotations

import time
from typing import Any

from drills.mesh import REGIONS, Mesh
from replication.agent.maintenance import maintain
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, WEST, agent_conn, connect, long_probe, wait_until
from tests.redteam.test_backfill_fence import (
    RECOVER_S,
    ROWS,
    Prober,
    _rows_everywhere,
    _summary,
    assert_fenced_only_while_held,
    timeline,
)
from tests.redteam.test_red22_tiebreak_fences_bystander import WaitSampler

BASE = 60_000_000
OLD = 10  # old rows both clean-ups delete
ONLY_EAST = 1_000  # old rows only east's clean-up deletes, first (past them, a merge is in the "fast part")
SPAN = ONLY_EAST + OLD
pytestmark = long_probe


def _cleanup_race(m: Mesh, bulk: Any, lo: int, hi: int, old_lo: int) -> tuple[float, float]:
    """east's clean-up deletes ``ONLY_EAST`` old rows nobody else deletes, then ``OLD`` old rows that eu's
    clean-up deletes too; both open while west's bulk load runs (if ``bulk``), then both commit 0.2 s
    later. When the load started and committed."""
    shared_lo = old_lo + ONLY_EAST
    cleaners = {r: connect(m, r, APP_ROLE) for r in (EAST, EU)}
    assert cleaners[EAST].execute("DELETE FROM items WHERE id BETWEEN %s AND %s", (old_lo, shared_lo - 1)).rowcount == ONLY_EAST
    for c in cleaners.values():
        assert c.execute("DELETE FROM items WHERE id BETWEEN %s AND %s", (shared_lo, shared_lo + OLD - 1)).rowcount == OLD
    t_start = time.monotonic()
    if bulk is not None:
        bulk.execute("INSERT INTO items (id, v) SELECT g, 'bulk' FROM generate_series(%s::int, %s::int) g", (lo, hi))
    t_commit = time.monotonic()
    time.sleep(0.2)
    for c in cleaners.values():
        c.commit()
        c.close()
    return t_start, t_commit


def _gone_everywhere(m: Mesh, old_lo: int) -> None:
    wait_until("the clean-up's rows gone on every writer", lambda: all(
        m.execute(r, "SELECT count(*) FROM items WHERE id BETWEEN %s AND %s", (old_lo, old_lo + SPAN - 1))[0][0] == 0
        for r in REGIONS), timeout=RECOVER_S)


def test_deletes_that_wait_for_a_bulk_loads_buckets_fence_only_the_ends_of_their_links(m: Mesh, agents: dict[str, Any]) -> None:
    lo, hi = BASE + 1, BASE + ROWS
    old = BASE - 10_000  # old rows: [old, old + 2 * SPAN)
    with Prober(agents) as pr:
        pr.all_writable_for(2.0)
        west = connect(m, WEST, APP_ROLE, autocommit=True)
        west.execute("INSERT INTO items (id, v) SELECT g, 'old' FROM generate_series(%s::int, %s::int) g",
                     (old, old + 2 * SPAN - 1))
        _rows_everywhere(m, old, old + 2 * SPAN - 1)
        pr.all_writable_for(2.0)

        # control: the same clean-up with no bulk load in flight
        c_start, _ = _cleanup_race(m, None, lo, hi, old)
        _gone_everywhere(m, old)
        time.sleep(3.0)
        control = [e for e in pr.log if e[0] >= c_start and not e[2]]
        pr.all_writable_for(2.0)

        # attack: the same clean-up of other old rows while west's bulk load is applied
        with WaitSampler(m, EAST) as ws_east, WaitSampler(m, EU) as ws_eu:
            t_start, t_commit = _cleanup_race(m, west, lo, hi, old + SPAN)
            _rows_everywhere(m, lo, hi)
            applied = time.monotonic()
        west.close()
        fences = [e for e in pr.log if e[0] >= t_start and not e[2]]
        report = (f"control (no bulk load): fenced {_summary(control)}; bulk load of {ROWS} keys ran "
                  f"{t_commit - t_start:.1f} s, applied everywhere {applied - t_commit:.1f} s after its commit; fenced: "
                  f"{timeline(fences, t_commit)} | {_summary(fences)} | at {EAST}: {ws_east.summary()} | at {EU}: {ws_eu.summary()} | parked: "
                  + str({r: m.execute(r, "SELECT sqlstate, count(*) FROM fraiseql_repl.parked GROUP BY 1") for r in REGIONS})
                  + " | apply errors: " + str({r: m.execute(r, "SELECT subname, apply_error_count FROM pg_stat_subscription_stats "
                                                               "WHERE apply_error_count > 0") for r in REGIONS}))
        print("\n" + report)
        assert not control, f"the control fenced: {report}"
        try:
            # the held links: east's deletes at eu, eu's at east, each waiting for a bucket the load's apply took
            assert_fenced_only_while_held(pr, t_start, {EAST, EU}, f"clean-up during a bulk load [{report}]")
            verdict = None
        except AssertionError as exc:  # raised after the equality check below
            verdict = exc
    # every writer equal once the agents' housekeeping has retried what was parked
    maint = {r: agent_conn(m, r) for r in REGIONS}
    for c in maint.values():
        maintain(c, full=True)
    _gone_everywhere(m, old + SPAN)
    m.wait_converged(["items"], timeout=RECOVER_S)
    print("writers equal after housekeeping; parked left: "
          + str({r: m.execute(r, "SELECT sqlstate, count(*) FROM fraiseql_repl.parked GROUP BY 1") for r in REGIONS}))
    if verdict is not None:
        raise verdict
