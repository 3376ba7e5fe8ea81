"""The capped counter the round-13 counter probes share: a bigint counter column ``hits`` with a
per-row ``cap``, replicated as a counter, on a red mesh with leases that never run out, and the
two concurrent writes (each legal where it ran) that push a row's sum past what one writer allowed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from drills.mesh import REGIONS, Mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.model import ConflictPolicy, TablePolicy
from tests.redteam.harness import red_mesh

MAX = 9_223_372_036_854_775_807
CAP = MAX - 500
TABLE = f"CREATE TABLE capped (id int PRIMARY KEY, cap bigint NOT NULL DEFAULT {CAP}, hits bigint NOT NULL DEFAULT 0)"
POLICY_WITH_CAPPED = ConflictPolicy(tables=POLICY.tables + (TablePolicy("capped", "counter", ("hits",)),),
                                    replicated=POLICY.replicated)


@contextlib.contextmanager
def capped_mesh(*app_rules: str) -> Iterator[Mesh]:
    """Three writers with the capped table and the application's own ``app_rules`` (its triggers)."""
    with red_mesh(APP_SCHEMA + (TABLE, *app_rules), POLICY_WITH_CAPPED) as running:
        for r in REGIONS:
            running.set_fence(r, False)  # a lease that never runs out: these probes are about merges
        yield running


def push_past(m: Mesh, east: Any, west: Any, row: int, east_sets: int, west_adds: int) -> None:
    """East sets ``row`` to ``east_sets`` while west adds ``west_adds``, neither seeing the other."""
    with m.paused():
        east.execute("UPDATE capped SET hits = %s WHERE id = %s", (east_sets, row))
        west.execute("UPDATE capped SET hits = hits + %s WHERE id = %s", (west_adds, row))
