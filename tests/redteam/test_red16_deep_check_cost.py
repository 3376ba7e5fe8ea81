"""Red team 16, claim 2 (cost): "the nesting CHECK does not make ordinary writes fail or become
pathologically slow".

Attack: a large but shallow jsonb (an array of 2,000,000 small objects, about 40 MB of text) and a
wide, 900-level-deep-in-one-branch value written by the application's INSERT, timed with the CHECK
and again with it dropped (same writer, same values). The check walks every item to level 1000.

Held (1 run): 3.05 s with the check and 1.99 s without for the shallow value, 0.45 s and 0.29 s for
the wide one: about 50 % more, not pathological. A measurement, so a long probe
(FRAISEQL_LONG_PROBES=1): timings do not gate CI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.model import ConflictPolicy
from tests.redteam.harness import long_probe

EAST = REGIONS[0]
DOCS_POLICY = ConflictPolicy(tables=POLICY.tables, replicated=("items", "docs"))
DOCS_SCHEMA = (*APP_SCHEMA, "CREATE TABLE docs (id int PRIMARY KEY, data jsonb)")

SHALLOW = "SELECT jsonb_agg(jsonb_build_object('k', g, 'v', 'x')) FROM generate_series(1, 2000000) g"
DEEP_WIDE = ("SELECT jsonb_build_array((SELECT jsonb_agg(g) FROM generate_series(1, 500000) g), "
             "(repeat('[', 900) || repeat(']', 900))::jsonb)")


@pytest.fixture(scope="module")
def one() -> Iterator[Mesh]:
    with mesh(DOCS_POLICY, DOCS_SCHEMA, regions=(EAST,), delays=False) as running:
        yield running


def _time(m: Mesh, rid: int, value_sql: str) -> float:
    with m.connect(EAST) as c:
        c.execute("CREATE TEMP TABLE v AS " + value_sql)
        t0 = time.monotonic()
        c.execute("INSERT INTO docs (id, data) SELECT %s, v.* FROM v", (rid,))
        c.commit()
        return time.monotonic() - t0


@long_probe
def test_the_check_costs_little_on_large_shallow_values(one: Mesh) -> None:
    m = one
    with_check = {name: _time(m, i, sql) for i, (name, sql) in enumerate((("shallow", SHALLOW), ("deep_wide", DEEP_WIDE)), 1)}
    m.execute(EAST, "ALTER TABLE fraiseql_repl.changes DROP CONSTRAINT changes_image_nested_under_1000_levels")
    without = {name: _time(m, i, sql) for i, (name, sql) in enumerate((("shallow", SHALLOW), ("deep_wide", DEEP_WIDE)), 11)}
    print(f"\nwith the check {with_check}; without {without}")
    for name in with_check:
        assert with_check[name] < 2 * without[name] + 1.0, (name, with_check[name], without[name])
