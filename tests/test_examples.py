"""`examples/`: one stack file per step of the journey, each the stack file of the step before plus what
that step changes, and nothing else. Each is planned, passed through the pack and diffed against the
step before in tests/test_phase_transitions.py; here: that the steps differ by exactly what the
documentation says, so no example drifts from the stack files it is made of."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from infra.paths import REPO

EXAMPLES = REPO / "examples"
JOURNEY = ["1-adopt", "2-phase-a", "3-b-seed", "4-b-joint", "5-phase-b", "6-c-route53", "7-phase-c"]


def config(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["config"])


def test_there_is_one_file_per_step_and_nothing_else():
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == JOURNEY


@pytest.mark.parametrize("step, stack", [("2-phase-a", "phase-a"), ("5-phase-b", "phase-b"), ("7-phase-c", "phase-c")])
def test_the_phases_are_the_repository_stacks_themselves(step, stack):
    assert (EXAMPLES / f"{step}.yaml").resolve() == (REPO / f"Pulumi.{stack}.yaml").resolve()


def _without(c: dict[str, Any], *paths: tuple[Any, ...]) -> dict[str, Any]:
    c = copy.deepcopy(c)
    for path in paths:
        node: Any = c
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return c


def test_adopt_is_phase_a_with_the_adopt_block():
    c = config("1-adopt")
    assert set(c["fraiseql:database"]["adopt"]) == {"source_vpc_id", "source_cidr", "source_port"}
    assert _without(c, ("fraiseql:database", "adopt")) == config("2-phase-a")


def test_the_first_up_of_a_to_b_is_phase_b_with_the_copies_seeding_from_the_primary():
    c = config("3-b-seed")
    assert [r.get("seed_from") for r in c["fraiseql:regions"]] == [None, "us-east-1", "us-east-1"]
    assert _without(c, ("fraiseql:regions", 1, "seed_from"), ("fraiseql:regions", 2, "seed_from")) == config("5-phase-b")
    # The budget is phase B's: the pack refuses phase A's (tests/test_infra_diff.py shows the refusal).
    assert c["fraiseql:budget"]["monthly_usd"] == config("5-phase-b")["fraiseql:budget"]["monthly_usd"] > \
        config("2-phase-a")["fraiseql:budget"]["monthly_usd"]


def test_the_joint_step_adds_only_the_two_member_lists():
    c = config("4-b-joint")
    assert c["fraiseql:quorum"]["members"] == ["us-east-1"]
    assert c["fraiseql:quorum"]["next_members"] == ["us-east-1", "us-west-2", "eu-west-1"]
    assert _without(c, ("fraiseql:quorum", "members"), ("fraiseql:quorum", "next_members")) == config("3-b-seed")


def test_the_first_up_of_b_to_c_keeps_route53_answering():
    c = config("6-c-route53")
    edge = c["fraiseql:edge"]
    assert edge["dns_authority"] == "route53" and edge["route53_public_zone_id"] == config("5-phase-b")["fraiseql:dns"]["zone_id"]
    back = _without(c, ("fraiseql:edge", "route53_public_zone_id"))
    back["fraiseql:edge"]["dns_authority"] = "cloudflare"
    assert back == config("7-phase-c")
