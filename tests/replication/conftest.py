"""A 3-node PostgreSQL 18 mesh bootstrapped with replication.sql, shared by this package's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY

A, B, C = REGIONS


@pytest.fixture(scope="package")
def m() -> Iterator[Mesh]:
    # No link delay here: these tests check decisions, not timings; concurrency
    # is forced by freezing the links (Mesh.paused).
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        yield running


@pytest.fixture(autouse=True)
def _healthy_after(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "m" in request.fixturenames:
        mm: Mesh = request.getfixturevalue("m")
        mm.heal()
        for n in mm.names:
            mm.set_fence(n, False)
