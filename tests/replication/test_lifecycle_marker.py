"""The marker of a membership change (`replication.lifecycle.Runner`): before a joining or rebuilt
writer is seeded from a copy of the source, the source must have applied every transaction each
peer committed before the peer's new slot existed. Everything after is in the slots; anything
between an older watermark and the slot would be in neither, and the new writer would miss it for
good. On a real three-writer mesh, with the peer's link to the source cut after a watermark was
merged and a transaction committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.lifecycle import Runner, Step
from replication.sql import control_subscription_name

SOURCE, PEER, _ = REGIONS


class _MeshBackend:
    """The one thing the marker needs from a backend: a connection to a writer."""

    def __init__(self, m: Mesh) -> None:
        self.m = m

    def connect(self, region: str) -> Any:
        return self.m.connect(region)

    def node(self, region: str) -> Any:
        return self.m.nodes[region]


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


def test_the_last_step_waits_until_every_writer_hears_every_other_and_names_the_link_that_does_not(m: Mesh) -> None:
    # Equal data is not enough: a writer whose control link from a peer stopped never hears it
    # again, and that peer stays fenced (CI saw the runbook end with the phase A primary fenced).
    stop = threading.Event()

    def beat() -> None:  # what the agents do every probe (this mesh runs none)
        seq = 0
        while not stop.wait(0.2):
            seq += 1
            for r in REGIONS:
                with m.connect(r) as c:
                    c.execute("DELETE FROM fraiseql_repl.heartbeats WHERE node = %s", (r,))
                    c.execute("INSERT INTO fraiseql_repl.heartbeats (node, seq, sent_at) VALUES (%s, %s, clock_timestamp())",
                              (r, seq))

    sub = control_subscription_name(m.nodes[PEER], m.nodes[SOURCE])
    runner = Runner(backend=_MeshBackend(m), policy=POLICY, order=REGIONS, timeout_s=3)  # type: ignore[arg-type]
    runner.state["agents"] = set(REGIONS)
    last = Step("verify", tuple(REGIONS), "every replicated table equal on every writer")
    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        m.wait_converged(["items"])
        m.execute(PEER, f"ALTER SUBSCRIPTION {sub} DISABLE")
        time.sleep(0.5)
        with pytest.raises(TimeoutError, match=f"{PEER} hears {SOURCE}: .*subscription {sub} disabled"):
            runner._verify(last, None)
        m.execute(PEER, f"ALTER SUBSCRIPTION {sub} ENABLE")
        runner._verify(last, None)
        assert runner.state["verify"]["diverged_rows"] == 0
    finally:
        stop.set()
        beating.join()
        m.execute(PEER, f"ALTER SUBSCRIPTION {sub} ENABLE")
