"""A large transaction does not hold the heartbeats back (issue 19, item 5), checked on the
mechanism rather than on timing: the heartbeats' link streams a large transaction while it is
written, so nothing of it is left to replay (and discard) at its commit, when every heartbeat
committed after it would wait.

Before: the control walsender decoded with the default 64 MB of memory, so a transaction below that
size was kept whole and replayed at its commit: seconds of silence on every link out of the writer
that ran it, and false fences under load.
"""

from __future__ import annotations

import threading
import time

from drills.mesh import REGIONS, Mesh
from replication.sql import subscription_name

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


def _data_walsender(m: Mesh) -> int | None:
    rows = m.execute(EAST, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                     (subscription_name(m.nodes[WEST], m.nodes[EAST]),))
    return rows[0][0] if rows else None


def test_a_merge_silent_for_longer_than_wal_sender_timeout_keeps_its_data_link(m: Mesh) -> None:
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (5100000, 'before')")
    m.wait_for(WEST, "SELECT v FROM items WHERE id = 5100000", "before")
    m.execute(EAST, "ALTER SYSTEM SET wal_sender_timeout = '1s'")
    m.execute(EAST, "SELECT pg_reload_conf()")
    seen: set[int | None] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(_data_walsender(m))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    try:
        time.sleep(0.5)
        walsender = _data_walsender(m)
        assert walsender is not None
        watcher.start()
        with m.connect(WEST, autocommit=False) as lock:
            # The merge of the update waits on this row lock, and reads nothing meanwhile.
            lock.execute("SELECT 1 FROM items WHERE id = 5100000 FOR UPDATE")
            m.execute(EAST, "UPDATE items SET v = 'after' WHERE id = 5100000")
            time.sleep(5)  # five times the timeout
            lock.rollback()
        m.wait_for(WEST, "SELECT v FROM items WHERE id = 5100000", "after", timeout=60)
        time.sleep(0.5)
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        m.execute(EAST, "ALTER SYSTEM RESET wal_sender_timeout")
        m.execute(EAST, "SELECT pg_reload_conf()")
    assert seen == {walsender}, f"the data link's walsender changed: {walsender} then {seen - {walsender}}"


def test_the_data_links_leave_a_dead_peer_to_tcp(m: Mesh) -> None:
    subs = m.execute(EAST, "SELECT subname, subconninfo FROM pg_subscription WHERE subname NOT LIKE 'fq\\_ctl\\_%'")
    assert len(subs) == 2
    for _, ci in subs:
        assert "wal_sender_timeout=0" in ci and "tcp_user_timeout=30000" in ci, ci
