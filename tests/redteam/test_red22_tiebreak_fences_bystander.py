"""Red team 22: the backfill fence lands on a region that wrote none of the backfill's rows.

Claim as it was briefed (the first wording of 0166cfc's claim): "A large transaction's apply fences
no region that writes none of the rows it holds. A region that writes one of the rows it holds may
be fenced until the transaction is applied on every writer, and is writable again by itself
afterwards, with every writer equal." Broken, 6 of 6 runs (below).

Kept as a regression test of the claim as restated after this finding (0166cfc,
tests/redteam/test_backfill_fence.py): a change that waits behind the apply holds its link, and
only that link's ends may be fenced (the rest only for the hand-over), everyone writable again
within 30 s of the apply. The judge is the spec's; this run's ends are named at the call.

Attack. The spec probe always has the backfill on us-west-2 and the conflicting one-row update on
eu-west-1, the LAST region in the configured order. Swap who writes the held row. The stalled
link is at the THIRD writer (the one applying the backfill remotely), on its apply worker for the
row's writer; the fence then breaks the edge {third writer, row writer}, and which end of that
edge loses is decided by the clique tie-break (the clique whose members come earliest in
``REGIONS`` = (us-east-1, us-west-2, eu-west-1)), not by who wrote the row. Whenever the row's
writer comes earlier in that order than the third writer, the third writer -- which wrote nothing --
is the one fenced, and the row's writer stays writable:

* backfill on us-west-2, us-east-1 updates one of its rows: eu-west-1's apply worker for us-east-1
  waits on the row lock eu-west-1's apply of the backfill holds; clique {east, west} beats
  {west, eu}: eu-west-1 is fenced.
* backfill on eu-west-1, us-east-1 updates one of its rows: us-west-2's worker for us-east-1 waits;
  {east, eu} beats {west, eu}: us-west-2 is fenced.
* backfill on us-east-1, us-west-2 updates one of its rows: eu-west-1's worker for us-west-2 waits;
  {east, west} beats {east, eu}: eu-west-1 is fenced.

(The other three orderings fence the row's writer, as the spec probe's case does.) Nothing here
needs more than the application role: one ``UPDATE`` of 60,000 rows and one ``UPDATE`` of one row,
as in the spec probe. The probe also samples, on the region it expects
to be fenced, which apply worker waits on which during the apply.

Observed (red team 22, 2026-12-08, real PostgreSQL 18, harness timing, 60,000 rows), 2 runs of all
three cases, 6 of 6 failed; the row's writer was never fenced, only the bystander, and the bystander's
apply worker for the row's writer waited (transactionid lock) on its apply worker for the backfill's
region for the whole apply:

* backfill@west, row@east: eu-west-1 fenced 41 probes over 12.3 s (applied everywhere 14.9 s after the
  commit) / 10 probes over 2.7 s (applied after 4.4 s); reasons other_majority_selected, unconfirmed.
* backfill@eu, row@east: us-west-2 fenced 30 probes over 9.0 s (applied after 10.5 s) / 13 over 3.5 s
  (applied after 5.2 s).
* backfill@east, row@west: eu-west-1 fenced 21 probes over 5.9 s (applied after 7.6 s) / 14 over 3.7 s
  (applied after 5.0 s).

Every region was writable again within a second or so of the apply, and row ``lo`` was equal on
every writer.

    FRAISEQL_LONG_PROBES=1 .venv/bin/python -m pytest -q -s tests/redteam/test_red22_tiebreak_fences_bystander.py -p no:cacheprovider
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from drills.mesh import REGIONS, Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, WEST, connect, long_probe, wait_until
from tests.redteam.test_backfill_fence import (
    RECOVER_S,
    ROWS,
    Prober,
    _rows_everywhere,
    _summary,
    assert_fenced_only_while_held,
    race,
    timeline,
)

BASE = 50_000_000
#: About a minute a case: FRAISEQL_LONG_PROBES=1 runs them.
pytestmark = long_probe



class WaitSampler:
    """On ``region`` (superuser), every 0.25 s: which data subscription's apply worker waits on a lock,
    and on which subscription's worker."""

    def __init__(self, m: Mesh, region: str) -> None:
        self.m, self.region = m, region
        self.samples: list[tuple[float, list[tuple[Any, ...]]]] = []
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with self.m.connect(self.region) as c:
            while not self.stop.is_set():
                rows = c.execute(
                    "SELECT s.subname, a.wait_event_type, a.wait_event, "
                    "  (SELECT string_agg(s2.subname, ',') FROM pg_stat_subscription s2 "
                    "   WHERE s2.pid = ANY(pg_blocking_pids(s.pid))) "
                    "FROM pg_stat_subscription s JOIN pg_stat_activity a ON a.pid = s.pid "
                    "WHERE s.relid IS NULL AND a.wait_event_type = 'Lock'").fetchall()
                if rows:
                    self.samples.append((time.monotonic(), rows))
                time.sleep(0.25)

    def __enter__(self) -> "WaitSampler":
        self.th.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.th.join(10)

    def summary(self) -> str:
        if not self.samples:
            return "no apply worker waited on a lock"
        kinds = sorted({r for _, rows in self.samples for r in rows})
        return (f"{len(self.samples)} samples over {self.samples[-1][0] - self.samples[0][0]:.1f} s with an apply "
                f"worker waiting: {kinds}")


CASES = [  # (backfill region, region that updates one held row, region expected fenced though it wrote nothing)
    (WEST, EAST, EU),
    (EU, EAST, WEST),
    (EAST, WEST, EU),
]


@pytest.mark.parametrize("bulk_region,row_writer,bystander", CASES,
                         ids=[f"backfill@{b}-row@{w}" for b, w, _ in CASES])
def test_a_backfill_fences_one_end_of_the_held_link_whichever_wrote_the_row(
        m: Mesh, agents: dict[str, Any], bulk_region: str, row_writer: str, bystander: str) -> None:
    base = BASE + 1_000_000 * CASES.index((bulk_region, row_writer, bystander))
    lo, hi = base + 1, base + ROWS
    with Prober(agents) as pr:
        pr.all_writable_for(2.0)
        bulk = connect(m, bulk_region, APP_ROLE, autocommit=True)
        bulk.execute("INSERT INTO items (id, v) SELECT g, 'seed' FROM generate_series(%s::int, %s::int) g", (lo, hi))
        _rows_everywhere(m, lo, hi)
        pr.all_writable_for(2.0)
        with WaitSampler(m, bystander) as ws:
            # the row writer's application: one ordinary update of one backfilled row, open while the
            # backfill commits
            t_start, t_commit = race(m, bulk, ("UPDATE items SET v = 'backfilled' WHERE id BETWEEN %s AND %s", (lo, hi)),
                                     ("UPDATE items SET v = 'one edit' WHERE id = %s", (lo,)), writer=row_writer)
            _rows_everywhere(m, lo + 1, hi, "v = 'backfilled'")
            applied = time.monotonic()
        fences = [e for e in pr.log if e[0] >= t_start and not e[2]]
        report = (f"backfill@{bulk_region} ({ROWS} rows, {t_commit - t_start:.1f} s), row@{row_writer}; applied everywhere "
                  f"{applied - t_commit:.1f} s after its commit; fenced: {timeline(fences, t_commit)}"
                  f" | {_summary(fences)} | at {bystander}: {ws.summary()}")
        print("\n" + report)
        try:
            # the held link: at the bystander, its apply worker for the row's writer
            assert_fenced_only_while_held(pr, t_start, {row_writer, bystander},
                                          f"backfill@{bulk_region}, row@{row_writer} [{report}]")
            verdict = None
        except AssertionError as exc:  # raised after the equality check below
            verdict = exc
    wait_until("row lo equal on every writer", lambda: len({m.execute(r, "SELECT v FROM items WHERE id = %s", (lo,))[0]
                                                            for r in REGIONS}) == 1, timeout=RECOVER_S)
    print("row lo equal on every writer: " + str(m.execute(EAST, "SELECT v FROM items WHERE id = %s", (lo,))))
    if verdict is not None:
        raise verdict
