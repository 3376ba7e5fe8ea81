"""The change log's prune (`fraiseql_repl.purge_changes`) takes a bounded bite per call: the agent
calls it every run under a statement timeout, and after a million-row transaction one DELETE of the
whole backlog timed out on every run (the long nemesis), so nothing was ever purged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from drills.mesh import MESH_SETTINGS
from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication import sql
from replication.bootstrap import apply
from replication.model import Node
from tests.replication.fixtures.freeze_release import NODE

ME = Node(**NODE)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def writer() -> Iterator[psycopg.Connection[Any]]:
    with cluster(["prune"], settings=MESH_SETTINGS) as pg:
        conn = pg["prune"].connect()
        apply(conn, APP_SCHEMA)
        apply(conn, sql.render_local_objects(ME, [ME], POLICY))
        yield conn
        conn.close()


def test_a_large_backlog_is_purged_in_bounded_bites_and_recent_changes_stay(writer: psycopg.Connection[Any]) -> None:
    old, recent = 45_000, 10
    writer.execute("INSERT INTO fraiseql_repl.changes (origin, tbl, op, ts, node, born, origin_at) "
                   "SELECT 'x', 'public.items', 'w', clock_timestamp(), 'x', '-infinity', now() - interval '1 hour' "
                   "FROM generate_series(1, %s)", (old,))
    writer.execute("INSERT INTO fraiseql_repl.changes (origin, tbl, op, ts, node, born) "
                   "SELECT 'x', 'public.items', 'w', clock_timestamp(), 'x', '-infinity' FROM generate_series(1, %s)",
                   (recent,))
    bites: list[int] = []
    while not bites or bites[-1]:
        (n,) = writer.execute("SELECT fraiseql_repl.purge_changes()").fetchone()  # type: ignore[misc]
        bites.append(n)
    assert sum(bites) == old and max(bites) < old and len(bites) > 2, bites
    assert writer.execute("SELECT count(*) FROM fraiseql_repl.changes WHERE origin = 'x'").fetchone() == (recent,)
