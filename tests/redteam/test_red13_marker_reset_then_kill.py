"""Red team, round 13, merge marker, claim 2: "a transaction that merges cleanly and whose link resets
(or whose worker restarts) during the apply is merged again fast: under 1 kB per row of apply-worker
memory on the retry".

Attack: both, one after the other, on one clean 30,000-row transaction. The link resets during the
first attempt (the apply worker ends with an error PostgreSQL counts: apply_error_count + 1, marker
even: a reset is read between changes). The retry starts with "a failure since" (the count differs
from the one recorded), reads the marker even and goes fast; its record of the new count is written
in the apply transaction, so it is rolled back when that attempt ends. That retry's worker is then
restarted (pg_terminate_backend, the SIGTERM a fast shutdown or a pod restart sends) while it is
inside a merge of the fast part (here: waiting for a key a local session holds for a moment and
then rolls back, nothing fails): it dies with the marker odd and counts no error. The next attempt
sees the count still different from the record (the reset's error) and the marker odd, and merges the whole clean transaction carefully: 8.5 kB per row again.

The second case is the same with an operator's pg_stat_reset_subscription_stats during the first
attempt in place of the link reset (the counts' reset time differs from the recorded one), and that
first attempt's worker restarted inside a merge.

Seen (link reset then restart, 5 runs of 5): 8.07, 8.08, 8.07, 8.07, 8.00 kB per row on the attempt
after the restart; the marker odd after the restart (e.g. 89063), apply_error_count 1, recorded 0.
Stats reset then restart, 2 runs of 2: 8.08, 8.04 kB per row. (Without the held key a kill during
the fast part landed between merges once of once: marker even, retry 0.34 kB per row.)

Fixed for the link reset: the marker carries the apply error count its fast part began under
(objects.sql, mark_fast_part); odd under the count still current means the attempt was stopped
inside a merge, not failed there, and the next attempt merges fast (2 runs of 2: 0.34 kB per row).
Open for the stats reset (a strict expected failure): after a reset the counts cannot tell a stopped
attempt from one that failed before the reset, and round 11's probe
(tests/redteam/test_red11_stats_reset.py) requires the failed one to be merged carefully; so both
are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.sql import subscription_name
from tests.replication.links import ApplyMemory, apply_pid, merge_marker, merging

EAST, WEST = REGIONS[0], REGIONS[1]
ROWS = 30_000
BASE = 13_500_000


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        yield running


def _errors(m: Mesh) -> tuple[int, object]:
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    rows = m.execute(WEST, "SELECT coalesce(apply_error_count, 0), "
                           "(SELECT errors FROM fraiseql_repl.apply_failures a WHERE a.subid = s.subid) "
                           "FROM pg_stat_subscription_stats s WHERE subname = %s", (sub,))
    return int(rows[0][0]), rows[0][1]


def _wait_new_worker_in_fast_part(m: Mesh, old: set[int], deadline: float) -> int:
    while True:
        assert time.monotonic() < deadline, "no new apply worker reached the fast part"
        pid = apply_pid(m, WEST, EAST)
        if pid is not None and pid not in old and merging(m, WEST, pid):
            start = merge_marker(m, WEST, EAST)[0]
            while merge_marker(m, WEST, EAST)[0] < start + 200:  # the fast part moves the marker twice per change
                assert time.monotonic() < deadline, "the new worker never reached the fast part"
                time.sleep(0.02)
            return pid
        time.sleep(0.05)


@pytest.mark.parametrize("first_event", [
    "link reset",
    pytest.param("stats reset", marks=pytest.mark.xfail(strict=True, reason=(
        "open (replication/README.md, large transactions): after a reset of the counts a stopped attempt "
        "cannot be told from a failed one (tests/redteam/test_red11_stats_reset.py), and is merged carefully"))),
])
def test_a_clean_transaction_whose_link_resets_and_whose_worker_then_restarts_is_merged_fast(
        two: Mesh, first_event: str) -> None:
    m = two
    global BASE
    BASE += 100_000
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'first')", (BASE,))
    m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id = {BASE}", 1)
    first = apply_pid(m, WEST, EAST)
    assert first is not None
    sampler = ApplyMemory(m, WEST, EAST).start()  # apply worker pid -> [first sample, peak] kB
    peaks = sampler.peaks
    log = []
    try:
        with m.connect(EAST) as c, c.transaction():
            c.execute(f"INSERT INTO items (id, v) SELECT {BASE} + g, repeat('x', 100) FROM generate_series(1, {ROWS}) g")
        deadline = time.monotonic() + 180
        while not merging(m, WEST, first):
            assert time.monotonic() < deadline, "the large transaction never reached the subscriber"
            time.sleep(0.05)
        time.sleep(0.5)
        log.append(("before " + first_event, _errors(m), merge_marker(m, WEST, EAST)))
        if first_event == "link reset":
            for p in m.links_of(WEST):
                p.partition(reset=True)
            time.sleep(1)
            m.heal()
            while True:
                second = apply_pid(m, WEST, EAST)
                if second is not None and second != first and merging(m, WEST, second):
                    break
                assert time.monotonic() < deadline, "no retry"
                time.sleep(0.02)
        else:
            # The operator resets the link's counts (pg_stat_reset_subscription_stats) meanwhile;
            # the first attempt goes on, and is the one restarted below.
            sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
            m.execute(WEST, "SELECT pg_stat_reset_subscription_stats(oid) FROM pg_subscription WHERE subname = %s",
                      (sub,))
            second = first
        # A local session holds the transaction's last key for a moment (an open insert of the same
        # key; it rolls back): the retry's merge of it waits, inside the merge, in the fast part.
        holder = m.connect(WEST)
        holder.execute("BEGIN")
        holder.execute("INSERT INTO items (id, v) VALUES (%s, 'held')", (BASE + ROWS,))
        last = None
        while True:
            now = merge_marker(m, WEST, EAST)
            if now == last and now[0] % 2 == 1:
                break
            last = now
            assert time.monotonic() < deadline, "the retry never waited in the fast part"
            time.sleep(0.3)
        log.append(("retry waits inside a merge", second, _errors(m), merge_marker(m, WEST, EAST)))
        m.execute(WEST, "SELECT pg_terminate_backend(%s)", (second,))
        time.sleep(0.3)
        holder.execute("ROLLBACK")
        holder.close()
        log.append(("after the restart", _errors(m), merge_marker(m, WEST, EAST)))
        m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id > {BASE}", ROWS, timeout=600)
        log.append(("done", _errors(m), merge_marker(m, WEST, EAST)))
    finally:
        sampler.stop()
    third = {pid: (kb[1] - kb[0]) / ROWS for pid, kb in peaks.items() if pid not in (first, second)}
    print(f"\n[{first_event}]")
    print(f"\n{log}\nfirst {first}: {peaks.get(first)}; second {second}: {peaks.get(second)}; "
          f"after the kill (kB per row): {third}")
    assert third, "no third attempt measured"
    worst = max(third.values())
    assert worst < 1, (f"the clean transaction, after a link reset and then a worker restart, was merged "
                       f"carefully: the apply worker kept {worst:.2f} kB per row")
