"""Claim: "two regions that cannot replicate to each other never both acknowledge writes past the
bound" with "hears" = a fresh heartbeat AND a data link that is receiving (pg_stat_subscription
last_msg_receipt_time within stale_after).

Attack: the liveness test is "received *something* within stale_after", not "delivers". The
application role on east has UPDATE on ``items`` (render_app_grants), so it may run
``LOCK TABLE items IN EXCLUSIVE MODE``. It holds that lock for a little less than stale_after,
releases it for a moment, and takes it again, in a loop. East's apply worker for west's data link
merges one west transaction per gap, then reads the next message (last_msg_receipt_time is fresh
again) and blocks on the next merge. The link never looks silent for stale_after, so east keeps
"hearing" west and both stay writable, while west's acknowledged writes pile up unapplied at east
for far longer than ``detection_bound``: west's and east's writes diverge without bound.

The test FAILS while east still takes writes more than ``detection_bound`` after a west write it has
not received.

    .venv/bin/python -m pytest -q tests/redteam/test_open_throttled_data_link.py
"""

from __future__ import annotations

import threading
import time

import pytest

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.quorum import detection_bound
from replication.roles import APP_ROLE
from tests.redteam.harness import (
    EAST,
    LEASE_S,
    PROBE_S,
    STALE_S,
    WEST,
    Delivery,
    connect,
    healthy,
    settings,
    writable,
)

OPEN = pytest.mark.xfail(strict=False, reason="open finding (replication/README.md, Data links): a data link counts as heard while it receives, so an application that keeps an apply worker blocked most of the time, but never for stale_after at once, delays replication without fencing anyone")

#: West's application commits this many single-row transactions per probe round.
WEST_TXNS_PER_ROUND = 6


def _lock_cycler(m: Mesh, stop: threading.Event, hold_s: float) -> None:
    """An application session on east: take a table lock on items, hold it for ``hold_s``, let go, and
    queue for it again at once. Two of these take turns, so one of them always holds the lock or
    waits for it ahead of the apply worker: the apply worker merges about one transaction per turn
    and never waits longer than two turns (kept under stale_after)."""
    c = connect(m, EAST, APP_ROLE)
    try:
        while not stop.is_set():
            c.execute("LOCK TABLE items IN EXCLUSIVE MODE")
            stop.wait(hold_s)
            c.commit()
    finally:
        c.rollback()
        c.close()


@OPEN
def test_a_throttled_data_link_keeps_counting_as_heard_while_west_writes_pile_up_unapplied_at_east(m: Mesh, agents) -> None:
    healthy(agents)
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    stop = threading.Event()
    cyclers = [threading.Thread(target=_lock_cycler, args=(m, stop, 0.4 * STALE_S), daemon=True) for _ in range(2)]
    for th in cyclers:
        th.start()
        time.sleep(0.2 * STALE_S)
    t0 = time.monotonic()
    history = Delivery(m, b)
    late: list[float] = []  # how late east's late acknowledgements were
    both_writable = 0
    rounds = 0
    try:
        while time.monotonic() - t0 < 4 * b + 6:
            last = {r: probe(agents[r], settings(r), control_on=True) for r in REGIONS}
            rounds += 1
            both_writable += writable(last[EAST]) and writable(last[WEST])
            history.writes(west, WEST, WEST_TXNS_PER_ROUND)  # an ordinary write rate: a few transactions per probe
            # east writes to tags, which the application's lock cycle leaves alone
            east_ack = history.write(east, EAST, "INSERT INTO tags (item, tag) VALUES (%s, %s)")
            if east_ack is not None and (lateness := history.late(EAST, WEST, east_ack)):
                late.append(lateness)
            time.sleep(PROBE_S)
    finally:
        stop.set()
        for th in cyclers:
            th.join(5)
        west.close()
        east.close()
    west_writes, arrived_at = history.acked.get(WEST, {}), history.arrived.get(EAST, {})
    lags = sorted(arrived_at[x] - t for x, t in west_writes.items() if x in arrived_at)
    missing = len(west_writes) - len(arrived_at)
    worst = max(late, default=0.0)
    print(f"\nbound {b:.2f} s; {rounds} rounds, east and west both writable in {both_writable}; {len(west_writes)} west "
          f"writes, {len(arrived_at)} reached east (median lag {lags[len(lags) // 2] if lags else 0:.1f} s), "
          f"{missing} never did; east acknowledged writes up to {worst:.1f} s after a west write it never received")
    assert not late, (
        f"east acknowledged a write {worst:.1f} s after west acknowledged one east had not received "
        f"(bound {b:.2f} s); {missing}/{len(west_writes)} west writes still missing at east: the data link "
        "'receives' (last_msg_receipt_time fresh) but does not deliver")
