"""A large transaction does not hold the heartbeats back (issue 19, item 5), checked on the
mechanism rather than on timing: the heartbeats' link streams a large transaction while it is
written, so nothing of it is left to replay (and discard) at its commit, when every heartbeat
committed after it would wait.

Before: the control walsender decoded with the default 64 MB of memory, so a transaction below that
size was kept whole and replayed at its commit: seconds of silence on every link out of the writer
that ran it, and false fences under load.
"""

from __future__ import annotations

from drills.mesh import REGIONS, Mesh

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
