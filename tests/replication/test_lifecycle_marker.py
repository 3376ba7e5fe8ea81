"""The marker of a membership change (`replication.lifecycle.Runner`): before a joining or rebuilt
writer is seeded from a copy of the source, the source must have applied every transaction each
peer committed before the peer's new slot existed. Everything after is in the slots; anything
between an older watermark and the slot would be in neither, and the new writer would miss it for
good. On a real three-writer mesh, with the peer's link to the source cut after a watermark was
merged and a transaction committed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.lifecycle import Runner

SOURCE, PEER, _ = REGIONS


class _MeshBackend:
    """The one thing the marker needs from a backend: a connection to a writer."""

    def __init__(self, m: Mesh) -> None:
        self.m = m

    def connect(self, region: str) -> Any:
        return self.m.connect(region)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        yield running


def _clock(m: Mesh, region: str) -> float:
    return float(m.execute(region, "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0])


def test_a_watermark_older_than_the_slots_does_not_count_as_the_marker(m: Mesh) -> None:
    runner = Runner(backend=_MeshBackend(m), policy=POLICY, order=REGIONS)  # type: ignore[arg-type]
    m.execute(PEER, "SELECT fraiseql_repl.emit_watermark()")
    merged = _clock(m, PEER)
    deadline = time.monotonic() + 30
    while not m.execute(SOURCE, "SELECT coalesce(max(extract(epoch FROM at)), 0) >= %s - 0.5 FROM fraiseql_repl.applied "
                                "WHERE origin = %s", (merged, PEER))[0][0]:
        assert time.monotonic() < deadline, "the source never merged the peer's watermark"
        time.sleep(0.05)
    m.links[(SOURCE, PEER)].partition()  # the source stops hearing the peer
    try:
        m.execute(PEER, "INSERT INTO items (id, v) VALUES (990001, 'committed before the slot')")
        at = _clock(m, PEER)  # the moment after the slot: the marker's
        assert at - merged < 1.0, "too slow to show the slack: the old watermark is a second older"
        assert not runner._has_applied(SOURCE, PEER, at), (
            "a watermark merged before the peer's last commit was taken for the marker: a writer seeded from the "
            "source now would miss that commit")
        assert not m.execute(SOURCE, "SELECT count(*) FROM items WHERE id = 990001")[0][0]
    finally:
        m.links[(SOURCE, PEER)].heal()
    deadline = time.monotonic() + 30
    while not runner._has_applied(SOURCE, PEER, at):
        assert time.monotonic() < deadline, "the marker never counted once the link was back"
        time.sleep(0.1)
    assert m.execute(SOURCE, "SELECT count(*) FROM items WHERE id = 990001")[0][0] == 1


class _FencingBackend(_MeshBackend):
    """A writer's fence agent ending the runner's session in the middle of a watermark: the leaving
    writer is fenced from the shrink's membership step on, and ``end_writes`` ends every transaction
    that writes to the change log, a watermark included (seen in CI: the drain failed)."""

    def __init__(self, m: Mesh, ended: int) -> None:
        super().__init__(m)
        self.ended = ended

    def connect(self, region: str) -> Any:
        c = self.m.connect(region)
        if self.ended:
            self.ended -= 1
            self.m.execute(region, "SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
        return c


def test_a_watermark_the_fence_agent_ends_is_emitted_again(m: Mesh) -> None:
    backend = _FencingBackend(m, ended=2)
    logged: list[dict[str, Any]] = []
    runner = Runner(backend=backend, policy=POLICY, order=REGIONS, log=logged.append)  # type: ignore[arg-type]
    at = _clock(m, PEER)
    deadline = time.monotonic() + 30
    while not runner._has_applied(SOURCE, PEER, at):
        assert time.monotonic() < deadline, "the marker never counted after the agent ended two watermarks"
        time.sleep(0.1)
    assert backend.ended == 0
    # what `python -m ops transition` prints of each record (its step, where, what and how long)
    assert [(r["step"], r["region"], r["seconds"]) for r in logged] == [("watermark", PEER, 0.0)] * 2 and all(
        r["detail"] for r in logged)
