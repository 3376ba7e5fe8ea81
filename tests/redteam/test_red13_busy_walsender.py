"""Claim 5(b) (commit 33a2f7a, replication/sql.py REQUIRED_PARAMETERS wal_receiver_timeout = 10 s): the
subscriber's pings (a reply request after half of wal_receiver_timeout of silence, which the walsender
answers even while it decodes) never make a data link that delivers nothing count as heard for longer
than before the change; and the safety claim behind it: two regions that cannot replicate to each
other never both acknowledge writes past ``detection_bound``.

Attack: the application on west keeps the data links' walsenders busy decoding work that sends
nothing: large transactions on ``items`` (replicated) rolled back, back to back, and large committed
writes to ``scratch`` (not replicated, but the application role has INSERT on it), while it commits
ordinary one-row writes to ``items``. The walsenders fall behind the WAL; west's ordinary writes
reach east only when the walsender has decoded its way through the garbage in front of them. The
probe measures, at the drill timing of tests/redteam/harness.py, how late west's writes reach east
while west and east both stay writable, with east's and eu's wal_receiver_timeout at 10 s (the new
setting) and at 30 s (the old one).

What happens: each ``UPDATE scratch SET id = id`` of 3,000,000 rows (committed, 30-85 s on the
loaded 2-core machine) is decoded by west's data walsenders (streaming off, so spilled and replayed
at its commit through pgoutput, which sends nothing for it). The walsender falls up to ~100 MB
behind; every west commit behind the replay waits. East's data link from west goes silent, west is
fenced after stale_after, as it should be; but after 5 s of silence east's apply worker asks the
walsender for a reply, the walsender answers with a keepalive while it is still replaying, and
``last_msg_receipt_time`` is fresh again: for the next stale_after east "hears" west, west's agent
grants itself a lease (unfence_after = 1 at the drill timing) and west acknowledges writes while east
still lacks west writes acknowledged 5-6 s earlier (bound 2.10 s). Measured (wal_receiver_timeout
10 s): 2 of 4 runs of this configuration failed (the other two: link silent up to 4.7 and 5.1 s, west not writable in a ping window): "t=31.1 late 5.9 s, east's link from west silent
0.6 s (last keepalive 0.6 s ago), walsender behind 95 MB"; another run "late 4.8 s / 5.1 s, silent
0.1 s, walsender behind 61 / 52 MB" (link silent up to 5.0 s, the ping point). With 30 s the ping
comes only after 15 s, longer than these replays: 1 of 3 runs failed (late 3.6 s, link silent up to
11.4 s: no ping, the delayed commits themselves arriving, the known "receiving is not delivering"),
2 passed. West's writes reached east up to 6-15 s late in every run with either setting (west mostly
fenced meanwhile, east and eu writable).

The test FAILS while east acknowledges a write, west being writable in the same round, more than
``detection_bound`` after a west write east has not received (the 10 s case is the claim under test;
the 30 s case is the comparison, and can fail too through the known throttled-link behaviour).

    .venv/bin/python -m pytest -q -s tests/redteam/test_red13_busy_walsender.py
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

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
    settings,
    writable,
)

ROWS = 3_000_000  # rows of scratch each garbage transaction updates
RUN_S = 80.0


def _garbage(m: Mesh, stop: threading.Event, counts: dict[str, Any]) -> None:
    """West's application: large committed transactions on ``scratch`` (not replicated), back to
    back. The data links' walsenders (streaming off) replay each at its commit through pgoutput,
    which sends nothing for it, and every west commit after it waits for the replay."""
    c = connect(m, WEST, APP_ROLE)
    try:
        while not stop.is_set():
            t = time.monotonic()
            c.execute("UPDATE scratch SET id = id")
            c.commit()
            counts["txns"] = counts.get("txns", 0) + 1
            counts["s_last"] = round(time.monotonic() - t, 1)
    except Exception as exc:  # noqa: BLE001 - a refusal ends the garbage, recorded
        counts["error"] = repr(exc)[:200]
    finally:
        c.close()


def _set_receiver_timeout(m: Mesh, value: str) -> None:
    for r in (EAST, EU):
        m.execute(r, f"ALTER SYSTEM SET wal_receiver_timeout = '{value}'")
        m.execute(r, "SELECT pg_reload_conf()")
    time.sleep(1.0)


#: The deployed setting is the claim; RED13_COMPARE=1 adds the previous one (30 s) for comparison.
TIMEOUTS = ["10s", "30s"] if os.environ.get("RED13_COMPARE") else ["10s"]
OPEN = pytest.mark.xfail(strict=False, reason="open finding (replication/README.md, Data links: receiving is not delivering): "
                         "a walsender kept busy decoding work that sends nothing answers the subscriber's pings, so its "
                         "link counts as heard while the writes behind the work wait")


@OPEN
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_busy_walsender_delays_west_writes_while_both_writable(m: Mesh, agents: Any, timeout: str) -> None:
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    _set_receiver_timeout(m, timeout)
    seed = connect(m, WEST, APP_ROLE, autocommit=True)
    if not seed.execute("SELECT count(*) FROM scratch").fetchone()[0]:
        seed.execute("INSERT INTO scratch (id) SELECT g FROM generate_series(1, %s) g", (ROWS,))
    seed.close()
    healthy(agents)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    sub_ew = subscription_name(m.nodes[EAST], m.nodes[WEST])
    stop = threading.Event()
    counts: dict[str, Any] = {}
    th = threading.Thread(target=_garbage, args=(m, stop, counts), daemon=True)
    history = Delivery(m, b)
    timeline: list[str] = []
    split: list[float] = []   # east's lateness in rounds where west was writable too
    east_late: list[float] = []
    rounds = both = west_w = heard_rounds = 0
    silent_max = lag_max = 0.0
    th.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < RUN_S:
            last = {r: probe(agents[r], settings(r), control_on=True) for r in REGIONS}
            rounds += 1
            ww, ew = writable(last[WEST]), writable(last[EAST])
            west_w += ww
            both += ww and ew
            heard_rounds += WEST in last[EAST].hears
            s = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::float8, "
                                "extract(epoch FROM clock_timestamp() - latest_end_time)::float8 "
                                "FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL AND leader_pid IS NULL",
                          (sub_ew,))
            silent_now = float(s[0][0]) if s and s[0][0] is not None else -1.0
            keepalive_age = float(s[0][1]) if s and s[0][1] is not None else -1.0
            silent_max = max(silent_max, silent_now)
            lag = m.execute(WEST, "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn))::float8 "
                                  "FROM pg_stat_replication WHERE application_name = %s", (sub_ew,))
            lag_now = float(lag[0][0]) if lag and lag[0][0] is not None else -1.0
            lag_max = max(lag_max, lag_now)
            history.write(west, WEST)
            at = history.write(east, EAST)
            if at is not None and (lateness := history.late(EAST, WEST, at)):
                east_late.append(lateness)
                if ww:
                    split.append(lateness)
                    timeline.append(f"t={time.monotonic() - t0:.1f} late {lateness:.1f} s, east's link from west "
                                    f"silent {silent_now:.1f} s (last keepalive {keepalive_age:.1f} s ago), walsender behind {lag_now / 1e6:.0f} MB")
            time.sleep(PROBE_S)
    finally:
        stop.set()
        th.join(60)
        west.close()
        east.close()
        _set_receiver_timeout(m, "10s")
    acked = history.acked.get(WEST, {})
    arrived = history.arrived.get(EAST, {})
    delays = [arrived[k] - t for k, t in acked.items() if k in arrived]
    print(f"\nwal_receiver_timeout {timeout}: bound {b:.2f} s; {rounds} rounds; west writable {west_w}, "
          f"both {both}; east heard west in {heard_rounds}; east's link from west silent up to {silent_max:.1f} s; "
          f"west walsender behind up to {lag_max / 1e6:.0f} MB; garbage {counts}; {len(acked)} west writes, "
          f"{len(arrived)} reached east during the run, delivery delay max {max(delays, default=0):.1f} s; east "
          f"acknowledged late in {len(east_late)} rounds (max {max(east_late, default=0):.1f} s), with west writable "
          f"in {len(split)} (max {max(split, default=0):.1f} s)")
    for line in timeline:
        print("  " + line)
    assert not split, (
        f"wal_receiver_timeout {timeout}: east acknowledged writes up to {max(split):.1f} s after a west write it had "
        f"not received, west writable in the same round ({len(split)} rounds; bound {b:.2f} s)")
