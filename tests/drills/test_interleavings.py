"""Hypothesis on real PostgreSQL 18: random interleavings of insert, update and delete on the same keys
from three writers, over links with asymmetric delays, converge to what a pure model of the policy
computes from the acknowledged operations alone.

The links are set so that causally related changes arrive out of order: us-east-1's changes reach
eu-west-1 directly much later than they reach it through us-west-2's later updates (an EU link
slower than us-east-1 -> us-west-2 plus us-west-2 -> eu-west-1). Operations are spaced by random
pauses shorter than that gap, so updates and deletes routinely overtake the inserts they depend on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drills.convergence import execute_retrying
from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY

EAST, WEST, EU = REGIONS
#: one-way delay of each directed link (listener, speaker), ms
DELAYS = {(WEST, EAST): 5, (EU, EAST): 120, (EU, WEST): 10, (EAST, WEST): 5, (EAST, EU): 60, (WEST, EU): 15}
_example = itertools.count(1)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        for (listener, speaker), ms in DELAYS.items():
            running.links[(listener, speaker)].set_delay(up_ms=ms / 2, down_ms=ms)
        yield running


@dataclass(frozen=True)
class Image:
    ts: datetime
    node: str
    born: float  # epoch seconds; -inf for the first incarnation
    v: str

    @property
    def version(self) -> tuple[datetime, bytes]:
        return (self.ts, self.node.encode())  # node names compare in C collation


def model(images: list[Image], deleted_borns: list[float]) -> Optional[str]:
    """The policy's result for one key: a delete removes the incarnations up to the one it saw
    (remove-wins against concurrent updates); among the rest the latest incarnation, then the newest
    version, wins."""
    dead = max(deleted_borns, default=None)
    alive = [i for i in images if dead is None or i.born > dead]
    return max(alive, key=lambda i: (i.born, *i.version)).v if alive else None


ops = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "update", "delete", "add", "remove"]),
        st.sampled_from(REGIONS),
        st.integers(1, 3),  # key
        st.sampled_from([0.0, 0.005, 0.02, 0.05]),  # pause before the next operation, s
    ),
    min_size=2,
    max_size=14,
)


# Derandomized: CI runs the same ten scripts every time (a random example found the open finding
# below in one CI run and not in the others). Explore with a seed: pytest --hypothesis-seed=N -p
# no:randomly after removing derandomize.
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True)
@given(ops)
def test_random_interleavings_converge_to_the_policy_result(m: Mesh, script: list[tuple[str, str, int, float]]) -> None:
    base = next(_example) * 100
    images: dict[int, list[Image]] = {}
    deleted: dict[int, list[float]] = {}
    tag_adds: dict[int, list[Image]] = {}
    tag_removes: dict[int, list[float]] = {}
    for step, (op, node, key, pause) in enumerate(script):
        k = base + key
        v = f"{node}#{step}"
        if op == "upsert":
            rows = execute_retrying(m, node, "INSERT INTO items VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v "
                                   "RETURNING _repl_ts, _repl_node, extract(epoch FROM _repl_born)::float8", (k, v))
            images.setdefault(k, []).extend(Image(*r, v) for r in rows)
        elif op == "update":
            rows = execute_retrying(m, node, "UPDATE items SET v = %s WHERE id = %s RETURNING _repl_ts, _repl_node, extract(epoch FROM _repl_born)::float8", (v, k))
            images.setdefault(k, []).extend(Image(*r, v) for r in rows)
        elif op == "delete":
            rows = execute_retrying(m, node, "DELETE FROM items WHERE id = %s RETURNING extract(epoch FROM _repl_born)::float8", (k,))
            deleted.setdefault(k, []).extend(r[0] for r in rows)
        elif op == "add":
            rows = execute_retrying(m, node, "INSERT INTO tags VALUES (%s, %s) ON CONFLICT DO NOTHING "
                                   "RETURNING _repl_ts, _repl_node, extract(epoch FROM _repl_born)::float8", (base, f"t{key}"))
            tag_adds.setdefault(key, []).extend(Image(*r, f"t{key}") for r in rows)
        else:
            rows = execute_retrying(m, node, "DELETE FROM tags WHERE item = %s AND tag = %s RETURNING extract(epoch FROM _repl_born)::float8", (base, f"t{key}"))
            tag_removes.setdefault(key, []).extend(r[0] for r in rows)
        time.sleep(pause)
    # Every change merged everywhere first: equal tables alone can be a moment while changes are in
    # flight (us-east-1 inserted and deleted a key; us-west-2 merged both; eu-west-1 had neither yet,
    # its slow link delivering the insert next and the delete after).
    m.wait_applied(timeout=30)
    m.wait_converged(["items", "tags"], timeout=30)
    for n in REGIONS:
        for k in images.keys() | deleted.keys():
            got = m.execute(n, "SELECT v FROM items WHERE id = %s", (k,))
            assert (got[0][0] if got else None) == model(images.get(k, []), deleted.get(k, [])), (n, k, script)
        tags = {r[0] for r in m.execute(n, "SELECT tag FROM tags WHERE item = %s", (base,))}
        expected = {f"t{key}" for key in tag_adds.keys() | tag_removes.keys()
                    if model(tag_adds.get(key, []), tag_removes.get(key, [])) is not None}
        assert tags == expected, (n, script)
    assert all(m.execute(n, "SELECT count(*) FROM fraiseql_repl.parked") == [(0,)] for n in REGIONS)
    assert all(m.subscriptions_healthy().values())


#: Found by the random test in a fresh-clone CI run: us-east-1 inserts key 1 and deletes it 70 ms
#: later, and eu-west-1 was seen with the row. The writers were not apart: the test took a moment when
#: no writer had the row (eu-west-1 had not got the insert yet) for convergence, then read eu-west-1
#: between the insert and the delete. Kept as the regression test of the wait above.
FOUND = [("upsert", EAST, 3, 0.02), ("update", WEST, 3, 0.005), ("upsert", EU, 2, 0.05), ("delete", EAST, 3, 0.005),
         ("add", EU, 3, 0.005), ("add", EU, 2, 0.05), ("upsert", EU, 3, 0.005), ("upsert", EAST, 1, 0.0),
         ("add", EAST, 2, 0.05), ("delete", EAST, 1, 0.02)]


def test_the_script_found_in_ci_converges_to_the_policy_result(m: Mesh) -> None:
    for _ in range(4):
        test_random_interleavings_converge_to_the_policy_result.hypothesis.inner_test(m, FOUND)  # type: ignore[attr-defined]
