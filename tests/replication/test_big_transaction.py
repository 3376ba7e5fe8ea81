"""A large transaction does not hold the heartbeats back (issue 19, item 5), checked on the
mechanism rather than on timing: the heartbeats' link streams a large transaction while it is
written, so nothing of it is left to replay (and discard) at its commit, when every heartbeat
committed after it would wait.

Before: the control walsender decoded with the default 64 MB of memory, so a transaction below that
size was kept whole and replayed at its commit: seconds of silence on every link out of the writer
that ran it, and false fences under load.
"""

from __future__ import annotations

import time

from drills.mesh import REGIONS, Mesh
from replication.sql import subscription_name
from tests.replication.links import data_walsender, walsenders_seen

EAST, WEST, EU = REGIONS


def _control_slots(m: Mesh) -> dict[str, int]:
    return {slot: int(n) for slot, n in m.execute(
        EAST, "SELECT slot_name, stream_txns FROM pg_stat_replication_slots WHERE slot_name LIKE 'fq\\_ctl\\_%'")}


def test_a_large_transaction_is_streamed_to_the_heartbeat_links_not_replayed_at_its_commit(m: Mesh) -> None:
    before = _control_slots(m)
    assert len(before) == 2  # one per peer subscribing to us-east-1
    m.execute(EAST, "INSERT INTO items (id, v) SELECT 5_000_000 + g, repeat('x', 200) FROM generate_series(1, 20000) g")
    for r in (WEST, EU):
        m.wait_for(r, "SELECT count(*) FROM items WHERE id > 5000000", 20000, timeout=120)
    after = _control_slots(m)
    assert all(after[s] > before[s] for s in before), (before, after)


def test_the_heartbeat_links_ask_for_streaming_and_small_decoding_memory(m: Mesh) -> None:
    subs = m.execute(EAST, "SELECT subname, substream, subconninfo FROM pg_subscription ORDER BY 1")
    control = [(s, stream, ci) for s, stream, ci in subs if s.startswith("fq_ctl_")]
    assert len(control) == 2
    assert all(stream == "t" and "logical_decoding_work_mem=64kB" in ci for _, stream, ci in control)


def test_a_merge_silent_for_longer_than_wal_sender_timeout_keeps_its_data_link(m: Mesh) -> None:
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (5100000, 'before')")
    m.wait_for(WEST, "SELECT v FROM items WHERE id = 5100000", "before")
    m.execute(EAST, "ALTER SYSTEM SET wal_sender_timeout = '1s'")
    m.execute(EAST, "SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)
        walsender = data_walsender(m, EAST, WEST)
        assert walsender is not None
        with walsenders_seen(m, EAST, WEST) as seen, m.connect(WEST, autocommit=False) as lock:
            # The merge of the update waits on this row lock, and reads nothing meanwhile.
            lock.execute("SELECT 1 FROM items WHERE id = 5100000 FOR UPDATE")
            m.execute(EAST, "UPDATE items SET v = 'after' WHERE id = 5100000")
            time.sleep(5)  # five times the timeout
            lock.rollback()
            m.wait_for(WEST, "SELECT v FROM items WHERE id = 5100000", "after", timeout=60)
            time.sleep(0.5)
    finally:
        m.execute(EAST, "ALTER SYSTEM RESET wal_sender_timeout")
        m.execute(EAST, "SELECT pg_reload_conf()")
    assert seen == {walsender}, f"the data link's walsender changed: {walsender} then {seen - {walsender}}"


def test_the_data_links_leave_a_dead_peer_to_tcp(m: Mesh) -> None:
    subs = m.execute(EAST, "SELECT subname, subconninfo FROM pg_subscription WHERE subname NOT LIKE 'fq\\_ctl\\_%'")
    assert len(subs) == 2
    for _, ci in subs:
        assert "wal_sender_timeout=0" in ci and "tcp_user_timeout=30000" in ci, ci


def test_a_data_link_with_nothing_to_send_hears_its_walsender_within_the_receiver_timeout(m: Mesh) -> None:
    # A data link's walsender sends no keepalive of its own (wal_sender_timeout = 0) and nothing at
    # all while it decodes a large transaction, or while its writer writes nothing: here, a mesh with
    # no agent writing watermarks. The subscriber asks for a reply after half of wal_receiver_timeout
    # (10 s) without anything, so the fence agent, which counts a data link silent for stale_after
    # (15 s by default) as cut, sees it receive every 5 s or so. At 30 s a million-row transaction
    # fenced healthy regions (replication/README.md, large transactions and heartbeats).
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    worst = 0.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        age = m.execute(WEST, "SELECT extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::float8 "
                              "FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL", (sub,))[0][0]
        worst = max(worst, float(age if age is not None else 1e9))
        time.sleep(0.2)
    # every 5 s or so, with room for a loaded machine; at the old 30 s setting it peaked near 15 s
    assert worst < 12, f"west's data link from east received nothing for {worst:.1f} s"
