"""Every stack file in the repository plans offline and passes the policy pack."""

from __future__ import annotations

import pytest

from infra.pack import run_pack
from infra.synth import REPO
from tests.conftest import synthesized

STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))


def test_the_repo_ships_stacks():
    assert "phase-a" in STACKS


@pytest.mark.parametrize("stack", STACKS)
def test_stack_passes_the_pack(stack, request):
    result = run_pack(synthesized(request, stack).registrations)
    assert [v.message for v in result.mandatory] == []
    assert result.cost is not None and result.cost.total <= result.facts.budget_usd
    assert all(b.feasible for b in result.bounds)
