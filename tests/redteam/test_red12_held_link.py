"""Claim (replication/agent/probing.py ``_data_links``): a data link silent for longer than stale_after
counts as receiving only when its apply worker waits on other subscriptions' leader apply workers that
are receiving: "it is held by replication work, not by an application, and it reads on once that apply
commits". The safety claim it must not weaken: "two regions that cannot replicate to each other never
both acknowledge writes past detection_bound".

Attack: the application launders its own lock through an apply worker. On east:

* an application session locks row ``k1`` (``SELECT ... FOR UPDATE``: the application role has UPDATE
  on ``items``; a row lock is no write, the lease check never sees it);
* eu commits one ordinary transaction that updates ``r0``, then ``k1``, ``k2``, ... ``kn``. East's apply
  worker X for eu's link locks ``r0`` and waits on ``k1``;
* west updates ``r0``: east's apply worker W for west's link waits on X, and stays there. Every west
  write after it queues behind it, unapplied at east;
* the application passes the lock along: a second session locks ``k2`` before the first lets ``k1`` go,
  and so on. X merges one row per turn and reads the next message (its last_msg_receipt_time is fresh
  again), so X counts as "receiving", and W, silent for as long as the application likes and waiting
  only on X, counts as "held by replication": east keeps hearing west.

The second test does it at both ends (two eu transactions, one stopped at each end): east and west
cannot replicate to each other at all, and both keep acknowledging writes.

This is not tests/redteam/test_open_throttled_data_link.py (an open finding: a throttled link that
still delivers, slowly). Here W delivers nothing for as long as the application likes (0 of ~150 west
writes reached east in a run), silent far past stale_after, and the rule meant to tell a link held by
replication from one held by an application counts it as held by replication.

The application never blocks W itself (W's blocker is an apply worker), and X is never silent for
stale_after. Found (4 of 4 runs): east acknowledged writes 14.1-14.4 s after a west write it had not
received, both writable in nearly every round. The rule was withdrawn (replication/README.md, Data
links): W's silent link now makes east stop hearing west, and one end is fenced within the bound.

The first test FAILS while east and west are both writable later than ``detection_bound`` after W
stalled (the claim). It prints, without judging it, how long after a west write east had not
received east still wrote: east is the majority side then, and west's last writes arrive when the
stall ends. The second FAILS while both acknowledge writes the other has not received.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red12_held_link.py
"""

from __future__ import annotations

import threading
import time
from typing import Any

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.quorum import detection_bound
from replication.roles import APP_ROLE
from replication.sql import subscription_name
from tests.redteam.harness import (
    EAST,
    EU,
    LEASE_S,
    PROBE_S,
    STALE_S,
    WEST,
    Delivery,
    connect,
    healthy,
    key,
    set_up,
    settings,
    wait_present,
    writable,
)

HOLD_S = 0.4 * STALE_S  # how long the application holds each row: X is never silent for stale_after
ROWS = 120  # rows of eu's transaction the application hands along (ROWS * HOLD_S outlasts the test)


def _relay(m: Mesh, rows: list[int], first_locked: threading.Event, stop: threading.Event, region: str = EAST) -> None:
    """Two application sessions on ``region`` pass a row lock along ``rows``: the next row is locked before
    the previous one is let go, so eu's apply worker always waits on the application, one turn at a time."""
    conns = [connect(m, region, APP_ROLE) for _ in range(2)]
    try:
        for i, r in enumerate(rows):
            if stop.is_set():
                break
            conns[i % 2].execute("SELECT v FROM items WHERE id = %s FOR UPDATE", (r,))
            if i == 0:
                first_locked.set()
            else:
                conns[(i - 1) % 2].commit()
            stop.wait(HOLD_S)
    finally:
        for c in conns:
            c.rollback()
            c.close()


def _apply_pid(m: Mesh, region: str, peer: str) -> Any:
    """The leader apply worker of ``region``'s data subscription to ``peer``."""
    rows = m.execute(region, "SELECT st.pid FROM pg_stat_subscription st WHERE st.subname = %s AND st.relid IS NULL "
                             "AND st.leader_pid IS NULL", (subscription_name(m.nodes[region], m.nodes[peer]),))
    return rows[0][0] if len(rows) == 1 else None


def test_an_application_lock_laundered_through_an_apply_worker_keeps_a_stalled_link_heard(m: Mesh, agents: Any) -> None:
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    healthy(agents)
    eu = connect(m, EU, APP_ROLE, autocommit=True)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    r0, rows = key(), [key() for _ in range(ROWS)]
    set_up(agents, lambda: eu.execute("INSERT INTO items (id, v) SELECT x, 'seed' FROM unnest(%s::int[]) x",
                                      ([r0, *rows],)))
    healthy(agents)
    assert wait_present(m, EAST, rows[-1]) and wait_present(m, WEST, rows[-1]), "the seed rows did not replicate"
    x_pid, w_pid = _apply_pid(m, EAST, EU), _apply_pid(m, EAST, WEST)
    assert x_pid and w_pid, "east's apply workers for eu's and west's data links were not found"

    stop, first_locked = threading.Event(), threading.Event()
    relay = threading.Thread(target=_relay, args=(m, rows, first_locked, stop), daemon=True)
    relay.start()
    assert first_locked.wait(10)

    def eu_transaction() -> None:  # one ordinary eu transaction: r0 first, then the rows the application relays
        with eu.transaction():
            eu.execute("UPDATE items SET v = 'eu' WHERE id = %s", (r0,))
            # in key order (the primary key's index scan), the order the application relays them in
            eu.execute("UPDATE items SET v = 'eu' WHERE id = ANY(%s)", (rows,))

    set_up(agents, eu_transaction, "eu's transaction")
    # W waits on X, which holds r0
    set_up(agents, lambda: west.execute("UPDATE items SET v = 'west' WHERE id = %s", (r0,)), "west's update")

    t0 = time.monotonic()
    history = Delivery(m, b)
    late: list[float] = []  # how late east's late acknowledgements were
    both_writable = held_rounds = n_rounds = 0
    both_late: list[float] = []  # rounds in which both were writable, later than the bound after the stall began
    w_silent_max = 0.0
    try:
        while time.monotonic() - t0 < 4 * b + 6:
            last = {r: probe(agents[r], settings(r), control_on=True) for r in REGIONS}
            n_rounds += 1
            both_writable += writable(last[EAST]) and writable(last[WEST])
            if writable(last[EAST]) and writable(last[WEST]) and time.monotonic() - t0 > b:
                both_late.append(time.monotonic() - t0)
            state = m.execute(EAST, "SELECT pg_blocking_pids(%s) = ARRAY[%s]::int[], "
                                    "extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::float8 "
                                    "FROM pg_stat_subscription WHERE pid = %s", (w_pid, x_pid, w_pid))
            if state:
                held_rounds += bool(state[0][0])
                w_silent_max = max(w_silent_max, float(state[0][1] or 0))
            history.writes(west, WEST, 3)
            east_ack = history.write(east, EAST)
            if east_ack is not None and (lateness := history.late(EAST, WEST, east_ack)):
                late.append(lateness)
            time.sleep(PROBE_S)
    finally:
        stop.set()
        relay.join(10)
        for c in (eu, west, east):
            c.close()
    worst = max(late, default=0.0)
    print(f"\nbound {b:.2f} s; {n_rounds} rounds, east and west both writable in {both_writable}; west's apply worker "
          f"at east waited on eu's in {held_rounds} rounds, silent up to {w_silent_max:.1f} s; "
          f"{len(history.acked.get(WEST, {}))} west writes, {len(history.arrived.get(EAST, {}))} reached east; east "
          f"acknowledged writes up to {worst:.1f} s after a west write it had not received")
    # The claim: two regions that cannot replicate to each other never both take writes past the
    # bound. East going on alone is the majority side doing its job (west's last writes arrive when
    # the stall ends); both writable past the bound is the split.
    assert not both_late, (
        f"east and west were both writable {max(both_late):.1f} s after east's link from west stalled (bound "
        f"{b:.2f} s): east's apply worker for west was silent up to {w_silent_max:.1f} s, waiting on eu's apply "
        "worker, which an application session kept waiting one row at a time")


def test_laundered_both_ways_east_and_west_cannot_replicate_to_each_other_and_both_keep_writing(
        m: Mesh, agents: Any) -> None:
    """The same laundering at both ends, with two eu transactions: ``ta`` (``ra``, then the rows east's
    application relays) and ``tb`` (``rb``, then the rows west's application relays). At east, eu's
    apply worker stops in ``ta`` holding ``ra`` (``tb`` queues behind it); at west, ``ta`` goes through
    and eu's apply worker stops in ``tb`` holding ``rb``. West then updates ``ra`` (free at west, held
    at east) and east updates ``rb`` (free at east, held at west): each one's apply worker for the
    other waits on an apply worker that "receives". Neither region receives the other's writes, and
    both keep acknowledging theirs."""
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    healthy(agents)
    conns = {r: connect(m, r, APP_ROLE, autocommit=True) for r in REGIONS}
    ra, rb = key(), key()
    relayed = {EAST: [key() for _ in range(ROWS)], WEST: [key() for _ in range(ROWS)]}
    set_up(agents, lambda: conns[EU].execute("INSERT INTO items (id, v) SELECT x, 'seed' FROM unnest(%s::int[]) x",
                                             ([ra, rb, *relayed[EAST], *relayed[WEST]],)))
    healthy(agents)
    for r in (EAST, WEST):
        assert wait_present(m, r, relayed[WEST][-1]), "the seed rows did not replicate"
    pids = {r: (_apply_pid(m, r, EU), _apply_pid(m, r, WEST if r == EAST else EAST)) for r in (EAST, WEST)}
    assert all(x and w for x, w in pids.values()), f"apply workers not found: {pids}"

    stop = threading.Event()
    relays = []
    for r in (EAST, WEST):
        first = threading.Event()
        th = threading.Thread(target=_relay, args=(m, relayed[r], first, stop, r), daemon=True)
        th.start()
        relays.append(th)
        assert first.wait(10)
    for head, r in ((ra, EAST), (rb, WEST)):  # ta, then tb: two ordinary eu transactions
        def eu_transaction(head: int = head, r: str = r) -> None:
            with conns[EU].transaction():
                conns[EU].execute("UPDATE items SET v = 'eu' WHERE id = %s", (head,))
                # in key order (the primary key's index scan), the order the application relays them in
                conns[EU].execute("UPDATE items SET v = 'eu' WHERE id = ANY(%s)", (relayed[r],))

        set_up(agents, eu_transaction, "an eu transaction")
    healthy(agents)
    # at west, ta has been merged and eu's worker holds rb; at east, eu's worker holds ra
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not m.execute(
            WEST, "SELECT count(*) = 1 FROM items WHERE id = %s AND v = 'eu'", (ra,))[0][0]:
        time.sleep(0.1)
    set_up(agents, lambda: conns[WEST].execute("UPDATE items SET v = 'west' WHERE id = %s", (ra,)), "west's update")
    set_up(agents, lambda: conns[EAST].execute("UPDATE items SET v = 'east' WHERE id = %s", (rb,)), "east's update")

    t0 = time.monotonic()
    history = Delivery(m, b)
    both: list[float] = []  # rounds in which each acknowledged a write past the bound after one it lacks
    held = {EAST: 0, WEST: 0}
    n_rounds = 0
    try:
        while time.monotonic() - t0 < 4 * b + 6:
            for r in REGIONS:
                probe(agents[r], settings(r), control_on=True)
            n_rounds += 1
            for r, (x_pid, w_pid) in pids.items():
                held[r] += bool(m.execute(r, "SELECT pg_blocking_pids(%s) = ARRAY[%s]::int[]", (w_pid, x_pid))[0][0])
            late = {}
            for r, other in ((EAST, WEST), (WEST, EAST)):
                now = history.write(conns[r], r)
                if now is not None and (lateness := history.late(r, other, now)):
                    late[r] = lateness
            if len(late) == 2:
                both.append(min(late.values()))
            time.sleep(PROBE_S)
    finally:
        stop.set()
        for th in relays:
            th.join(10)
        for c in conns.values():
            c.close()
    worst = max(both, default=0.0)
    acked, arrived = history.acked, history.arrived
    print(f"\nbound {b:.2f} s; {n_rounds} rounds; the other's apply worker waited on eu's in {held} rounds; "
          f"{len(acked.get(WEST, {}))} west writes, {len(arrived.get(EAST, {}))} reached east; "
          f"{len(acked.get(EAST, {}))} east writes, {len(arrived.get(WEST, {}))} reached west; in {len(both)} rounds "
          f"both acknowledged a write up to {worst:.1f} s after one of the other's they had not received")
    assert not both, (
        f"east and west both acknowledged writes up to {worst:.1f} s after a write of the other they had not received "
        f"(bound {b:.2f} s): neither can replicate to the other, each one's apply worker for the other waiting on "
        "eu's apply worker, which an application session keeps waiting one row at a time")
