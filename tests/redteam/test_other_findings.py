"""Other findings (not one of claims A-E).

The agent's handover between invocations cannot wait: ``_connect`` sets ``statement_timeout = 5s`` on
the agent's connection, and ``acquire_loop`` waits for the holder with ``lock_timeout`` =
handoff_wait_s + 10 s (85 s by default) inside that connection, so the wait is cut at 5 s. An
invocation that starts within handoff_wait_s of the holder's end gives up unless the holder ends within
5 s; with the per-minute schedule the region then has no agent (and no lease) until the next one.

    .venv/bin/python -m pytest -q tests/redteam/test_other_findings.py
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest

from drills.mesh import Mesh
from replication.agent import acquire_loop, probe
from tests.redteam.harness import EAST, agent_conn, red_mesh, settings


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh() as running:
        yield running


def test_a_new_invocation_cannot_wait_for_the_holder_to_hand_over(m: Mesh) -> None:
    s = dataclasses.replace(settings(EAST), handoff_wait_s=75.0)  # the deployed default
    holder = agent_conn(m, EAST)  # as _connect makes it: statement_timeout 5 s
    assert acquire_loop(holder, s) is None
    # the holder's invocation ends in 8 s (well inside the 75 s handoff window)
    probe(holder, s, control_on=True, holder_until_s=8.0)
    threading.Timer(8.0, holder.close).start()
    nxt = agent_conn(m, EAST)
    t0 = time.monotonic()
    skipped = acquire_loop(nxt, s)
    waited = time.monotonic() - t0
    nxt.close()
    print(f"\nnext invocation: {skipped!r} after {waited:.1f} s (holder released 8 s after it started waiting)")
    assert skipped is None, f"the next invocation gave up after {waited:.1f} s: {skipped}"
