"""Issue 20, item 10: every autoname fits its type's limit, in every region the config accepts.

pulumi-aws names an ALB or a target group `<logical name>-<7 hex>`, at most 32 characters: with
`fraiseql-ap-northeast-1-alb` that is 35, and the real preview fails. The mocks refuse such names the
way the provider does (`infra.mocks.AUTONAMED`), so synthesizing the stacks in the regions with the
longest names proves they fit.
"""

from __future__ import annotations

import pulumi_aws as aws
import pytest

from core.naming import region_code
from core.regions import REGIONS
from infra.mocks import AUTONAME_SUFFIX, AUTONAMED, AutonameTooLong
from infra.synth import synthesize
from tests.conftest import synth_variant

LONGEST = max(len(r) for r in REGIONS)


def _synth_one(typ: type, logical: str, **kwargs) -> None:
    def program() -> dict:
        typ(logical, **kwargs)
        return {}

    synthesize("phase-a", config={}, run=program)


@pytest.mark.parametrize("typ, token", [(aws.lb.LoadBalancer, "aws:lb/loadBalancer:LoadBalancer"),
                                        (aws.lb.TargetGroup, "aws:lb/targetGroup:TargetGroup")])
def test_the_mocks_refuse_an_autoname_over_the_limit(typ, token):
    limit = AUTONAMED[token][1]
    fits = "x" * (limit - AUTONAME_SUFFIX)
    _synth_one(typ, fits, region="us-east-1")
    with pytest.raises(Exception) as info:
        _synth_one(typ, fits + "x", region="us-east-1")
    assert isinstance(info.value, AutonameTooLong) or "over the 32" in str(info.value)
    # an explicit name is not an autoname: the provider takes it as given
    _synth_one(typ, fits + "x", region="us-east-1", name="short")


def _regions(names: list[str], role_of) -> list[dict]:
    return [{"name": n, "role": role_of(i), "cidr": f"10.{10 * (i + 1)}.0.0/16"} for i, n in enumerate(names)]


def _autonamed(syn) -> list[tuple[str, str, int]]:
    return [(r.type, r.name, AUTONAMED[r.type][1]) for r in syn.resources
            if r.type in AUTONAMED and r.inputs.get(AUTONAMED[r.type][0]) is None]


@pytest.mark.parametrize("stack, names", [
    ("phase-a", ["ap-northeast-1", "ap-northeast-3"]),
    ("phase-b", ["ap-northeast-1", "ap-northeast-2", "ap-northeast-3"]),
    ("phase-c", ["ap-southeast-1", "ap-southeast-2", "ap-northeast-1"]),
])
def test_stacks_in_the_longest_region_names_fit_every_limit(stack, names):
    assert max(len(n) for n in names) == LONGEST  # the longest names the config accepts
    phase_a = stack == "phase-a"

    def change(v):
        v["regions"] = _regions(names, lambda i: ("primary" if i == 0 else "standby") if phase_a else "active")

    syn = synth_variant(stack, change)  # the mocks raise on any autoname over its limit
    albs = syn.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert {a.region for a in albs} == set(names)
    for typ, name, limit in _autonamed(syn):
        assert len(name) + AUTONAME_SUFFIX <= limit, (typ, name)


def test_region_codes_are_distinct():
    codes = {region_code(r) for r in REGIONS}
    assert len(codes) == len(REGIONS)
