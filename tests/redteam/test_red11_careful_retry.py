"""Red team, round 11, claim M (3): "the apply worker keeps well under 1 kB per row for a large
transaction that merges cleanly" (replication/README.md, large transactions;
fraiseql_repl.merge_carefully).

Found: whether a transaction is merged carefully (a subtransaction per change, 8.5 kB per row) is
decided by "has the link's apply error count changed since the last careful commit", not by "did a
merge of this transaction fail". A link that drops while a large transaction is being received (a
network reset, a peer's restart or failover, a partition: nothing wrong with any change) ends the
apply worker with an error that PostgreSQL counts like a failed merge, and the transaction, which
merges cleanly, is received again and merged carefully from its first row to its last: the
8.5 kB per row the change was to remove (a 1,000,000-row load: 8.5 GB again, on every subscriber
whose link dropped during it). The drills' proxy resets the link here (``partition(reset=True)``);
across regions any dropped connection does the same.

Fixed: the link's merge marker (objects.sql, merge_carefully), a sequence the fast part moves to
odd before each merge and back to even after, tells an attempt that ended inside a merge from one
that ended anywhere else; only the first is retried carefully.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from tests.replication.links import ApplyMemory, apply_pid, merging

EAST, WEST = REGIONS[0], REGIONS[1]
ROWS = 30_000
BASE = 8_500_000


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        yield running


def test_a_clean_large_transaction_whose_link_resets_once_is_merged_under_1kb_per_row(two: Mesh) -> None:
    m = two
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'first')", (BASE,))
    m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id = {BASE}", 1)
    first = apply_pid(m, WEST, EAST)
    assert first is not None
    sampler = ApplyMemory(m, WEST, EAST).start()  # apply worker pid -> [first sample, peak] kB
    peaks = sampler.peaks
    try:
        with m.connect(EAST) as c, c.transaction():
            c.execute(f"INSERT INTO items (id, v) SELECT {BASE} + g, repeat('x', 100) FROM generate_series(1, {ROWS}) g")
        deadline = time.monotonic() + 120
        while not merging(m, WEST, first):
            assert time.monotonic() < deadline, "the large transaction never reached the subscriber"
            time.sleep(0.05)
        time.sleep(0.5)  # merging: the first worker has begun the transaction
        # The link drops once (a reset, as a peer's restart or a network blip does) and comes back.
        for p in m.links_of(WEST):
            p.partition(reset=True)
        time.sleep(1)
        m.heal()
        m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id > {BASE}", ROWS, timeout=600)
    finally:
        sampler.stop()
    retried = {pid: (kb[1] - kb[0]) / ROWS for pid, kb in peaks.items() if pid != first}
    assert retried, f"the link did not drop (apply worker {first} throughout): nothing measured"
    worst = max(retried.values())
    print(f"\nfirst worker {first}: {peaks.get(first)}; after the reset: {retried} kB per row")
    assert worst < 1, (f"the transaction, which merges cleanly, was received again after the link reset and merged "
                       f"carefully: the apply worker kept {worst:.2f} kB per row")
