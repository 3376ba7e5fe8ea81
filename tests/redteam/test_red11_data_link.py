"""Red team, round 11, claim L: the data link's walsender has no ``wal_sender_timeout`` and leaves a
peer that has gone away to TCP (``tcp_user_timeout`` = 30 s, keepalives), so "a subscriber that
merges slowly (or waits on a row lock) keeps its walsender and connection, and does not get the
transaction re-sent" (replication/README.md, known limits; replication/sql.py
``DATA_WALSENDER_OPTIONS``).

The writers here talk over plain loopback TCP, as across regions, not through the drills' proxy:
the proxy reads everything the walsender writes into its own unbounded queue, so the walsender's
socket never fills behind it and the receive window never shuts (the limit the README names).

Found: Linux applies ``TCP_USER_TIMEOUT`` to zero-window probes too (``tcp_probe_timer``: a
sender whose peer keeps answering the probes with a shut window is aborted once the user timeout
has passed). An apply worker that waits on a row lock reads nothing; once the walsender has filled
the socket buffers with the rest of the transaction, the subscriber's receive window is shut, and
30 s later the kernel ends the connection the claim says is kept: the walsender is replaced and the
transaction is received again from its start, and PostgreSQL counts an apply error for it (which
in turn makes the retry merge the whole transaction carefully, 8.5 kB per row). The fixed 30 s is
what ``wal_sender_timeout`` was before, so for a merge held behind a row lock (an application
transaction, another link's large apply) nothing changed but the way the link ends.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest

from drills.mesh import MESH_SETTINGS, REGIONS, Mesh
from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication.model import Node
from replication.sql import subscription_name
from tests.replication.links import data_walsender, walsenders_seen

EAST, WEST = REGIONS[0], REGIONS[1]
HOLD_S = int(os.environ.get("RED11_HOLD_S", "50"))  # the row lock the merge waits on: longer than tcp_user_timeout (30 s)
ROWS = 40_000  # ~600 bytes of image each: far more than the loopback socket buffers hold


@contextlib.contextmanager
def direct_mesh() -> Iterator[Mesh]:
    """Two writers that subscribe to each other over direct loopback TCP (no proxy)."""
    regions = (EAST, WEST)
    with cluster(list(regions), settings=MESH_SETTINGS) as pg:
        m = Mesh(pg=pg, nodes={r: Node(name=r, region=r, host="127.0.0.1", port=pg[r].port, dbname="postgres",
                                       user="postgres", index=i + 1) for i, r in enumerate(regions)},
                 policy=POLICY)
        for r in regions:
            with m.connect(r) as c:
                for stmt in APP_SCHEMA:
                    c.execute(stmt.encode())
        m.bootstrap()
        for r in regions:
            m.set_fence(r, False)
        yield m


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with direct_mesh() as running:
        yield running


def _apply_errors(m: Mesh) -> int:
    return int(m.execute(WEST, "SELECT coalesce(apply_error_count, 0) FROM pg_stat_subscription_stats "
                               "WHERE subname = %s", (subscription_name(m.nodes[WEST], m.nodes[EAST]),))[0][0])


@pytest.mark.xfail(strict=True, reason="documented limit (replication/README.md, large transactions): a subscriber that reads nothing for tcp_user_timeout (30 s) with its receive window shut loses its data link, as a dead peer does; the transaction is sent again")
def test_a_merge_waiting_on_a_row_lock_past_tcp_user_timeout_keeps_its_data_link(two: Mesh) -> None:
    m = two
    ci = m.execute(WEST, "SELECT subconninfo FROM pg_subscription WHERE subname = %s",
                   (subscription_name(m.nodes[WEST], m.nodes[EAST]),))[0][0]
    assert "wal_sender_timeout=0" in ci and "tcp_user_timeout=30000" in ci, ci
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (8100000, 'before')")
    m.wait_for(WEST, "SELECT v FROM items WHERE id = 8100000", "before")
    time.sleep(0.5)
    walsender, errors = data_walsender(m, EAST, WEST), _apply_errors(m)
    assert walsender is not None
    with walsenders_seen(m, EAST, WEST, every_s=0.1) as seen:
        with m.connect(WEST, autocommit=False) as lock:
            # An application transaction holds the row; the merge of the update waits on it and the
            # apply worker reads nothing meanwhile, while the walsender writes the rest.
            lock.execute("SELECT 1 FROM items WHERE id = 8100000 FOR UPDATE")
            with m.connect(EAST) as c, c.transaction():
                c.execute("UPDATE items SET v = 'after' WHERE id = 8100000")
                c.execute(f"INSERT INTO items (id, v) SELECT 8100000 + g, repeat('x', 500) "
                          f"FROM generate_series(1, {ROWS}) g")
            time.sleep(HOLD_S)
            lock.rollback()
        time.sleep(10)  # the worker merges what it had read, and meets the end of the connection if it ended
    ended = [line for line in m.pg[EAST].log_path.read_text(errors="replace").splitlines()
             if "could not send data to client" in line or "could not receive data from client" in line]
    assert seen - {walsender} == set() and _apply_errors(m) == errors, (
        f"the data link's walsender {walsender} was replaced by {seen - {walsender, None}} "
        f"(gone meanwhile: {None in seen}); apply errors {errors} -> {_apply_errors(m)}: "
        f"the transaction was sent again. Publisher log: {ended}")
    m.wait_for(WEST, "SELECT count(*) FROM items WHERE id > 8100000", ROWS, timeout=600)
    m.wait_for(WEST, "SELECT v FROM items WHERE id = 8100000", "after", timeout=60)
