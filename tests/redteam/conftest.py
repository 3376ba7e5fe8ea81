"""The fixtures most red-team probes share: one real three-writer mesh per module with the real
roles (``harness.red_mesh``), and agent connections that put the agents back to a cold start after
each test. A module that needs another mesh defines its own ``m``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from tests.redteam.harness import agent_conn, red_mesh, reset_agents


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh() as running:
        yield running


@pytest.fixture
def agents(m: Mesh) -> Iterator[dict[str, psycopg.Connection[Any]]]:
    conns = {r: agent_conn(m, r) for r in REGIONS}
    yield conns
    for c in conns.values():
        c.close()
    reset_agents(m)
