"""Regions that start from a copy, and quorum membership changes (issue 12), under mocks.

A region with `seed_from` is declared as a cross-region read replica of that region's writer: its
functions exist, but it takes part in nothing that needs a writable database until the operator
removes `seed_from`. Membership goes through `quorum.members` and, during a change, `next_members`.
"""

from __future__ import annotations

import json
from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import SEQUENCE_STRIDE, ConfigError
from core.membership import majority, routing_rule
from replication.agent import Settings
from tests.conftest import config_variant, synth_variant
from tests.helpers import by_output, one

RDS = "aws:rds/instance:Instance"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
FN = "aws:lambda/function:Function"
INVOKE = "aws:lambda/invocation:Invocation"
RULE = "aws:route53recoverycontrol/safetyRule:SafetyRule"
CONTROL = "aws:route53recoverycontrol/routingControl:RoutingControl"
E1, W2, EU = "us-east-1", "us-west-2", "eu-west-1"
FOUR = {"name": "eu-central-1", "role": "active", "cidr": "10.40.0.0/16"}
FIVE = {"name": "ap-northeast-1", "role": "active", "cidr": "10.50.0.0/16"}


def growing(v, *, joint: bool = False):
    """Phase B growing from 3 to 5: two regions seeding from us-east-1 (and, with `joint`, the change)."""
    v["regions"] += [dict(FOUR, seed_from=E1), dict(FIVE, seed_from=E1)]
    if joint:
        v["quorum"]["next_members"] = [E1, W2, EU, FOUR["name"], FIVE["name"]]


@pytest.fixture(scope="module")
def grow():
    return synth_variant("phase-b", growing)


@pytest.fixture(scope="module")
def grow_joint():
    return synth_variant("phase-b", lambda v: growing(v, joint=True))


def _env(syn, region):
    return one(syn, FN, f"fraiseql-quorum-fence-agent-{region}").inputs["environment"]["variables"]


def _event(syn, region):
    return json.loads(one(syn, FN, f"fraiseql-db-bootstrap-{region}").inputs["environment"]["variables"]["FRAISEQL_BOOTSTRAP"])


# --- the copy -----------------------------------------------------------------------------------

@pytest.mark.parametrize("region", [FOUR["name"], FIVE["name"]])
def test_a_seeding_region_is_a_protected_replica_of_its_source_under_its_own_key(grow, region):
    db = one(grow, RDS, f"fraiseql-db-writer-{region}")
    source = one(grow, RDS, f"fraiseql-db-writer-{E1}")
    assert db.protect and db.region == region
    assert db.inputs["replicateSourceDb"] == source.outputs["arn"]
    assert source.urn in db.property_dependencies["replicateSourceDb"]
    assert by_output(grow, "aws:kms/key:Key", "arn", db.inputs["kmsKeyId"]).region == region
    # RDS refuses these on a replica: it takes them from its source.
    assert not {"dbName", "username", "engine", "engineVersion", "manageMasterUserPassword", "allocatedStorage"} & set(db.inputs)
    lag = one(grow, ALARM, f"fraiseql-db-replica-lag-{region}")
    assert (lag.inputs["metricName"], lag.inputs["dimensions"]) == ("ReplicaLag", {"DBInstanceIdentifier": db.outputs["identifier"]})


def test_a_seeding_region_has_its_functions_but_no_part_in_the_mesh(grow):
    seeding = {FOUR["name"], FIVE["name"]}
    mesh = [E1, W2, EU]
    runs = {r.name for r in grow.of_type(INVOKE)}
    assert runs == {f"fraiseql-db-bootstrap-{step}-{r}" for step in ("local", "subscribe") for r in mesh}
    for region in seeding:
        one(grow, FN, f"fraiseql-db-bootstrap-{region}")
        one(grow, FN, f"fraiseql-quorum-fence-agent-{region}")
        # Its own function describes the mesh it joins, itself included, with its own fixed index.
        assert [n["name"] for n in _event(grow, region)["nodes"]] == [*mesh, region]
    for region in mesh:
        assert [n["name"] for n in _event(grow, region)["nodes"]] == mesh
    rotation = json.loads(one(grow, FN, "fraiseql-db-rotation").inputs["environment"]["variables"]["FRAISEQL_BOOTSTRAP_FUNCTIONS"])
    assert sorted(rotation) == sorted(mesh)
    pairs = {a.name for a in grow.of_type(ALARM) if a.inputs["metricName"] == "LagSeconds"}
    assert pairs == {f"fraiseql-db-replication-lag-{p}-to-{s}" for p in mesh for s in mesh if p != s}
    assert set(grow.outputs["writerSecretArns"]) == set(mesh)
    assert grow.outputs["seedingRegions"] == {r: E1 for r in seeding}


def test_writer_indexes_stay_with_their_region():
    """An index decides which identity values a writer hands out: it must survive a region's removal."""
    def shrink(v):
        v["regions"][1:] = [{**v["regions"][2], "index": 3}, {**FOUR, "index": 4}]
        v["quorum"]["members"] = [E1, EU, FOUR["name"]]

    syn = synth_variant("phase-b", shrink)
    assert {n["name"]: n["index"] for n in _event(syn, E1)["nodes"]} == {E1: 1, EU: 3, FOUR["name"]: 4}
    assert SEQUENCE_STRIDE == __import__("replication.model", fromlist=["x"]).ConflictPolicy().sequence_stride
    with pytest.raises(ConfigError, match=r"regions\[2\].index: eu-central-1 would have index 3, which eu-west-1"):
        config_variant("phase-b", lambda v: v["regions"].__setitem__(1, {**v["regions"][2], "index": 3}) or
                       v["regions"].__setitem__(2, FOUR))


def test_promotion_is_the_removal_of_seed_from_and_keeps_the_resource(grow):
    promoted = synth_variant("phase-b", lambda v: (growing(v), [r.pop("seed_from", None) for r in v["regions"]],
                                                   v["quorum"].update(members=[E1, W2, EU])))
    before, after = one(grow, RDS, "fraiseql-db-writer-eu-central-1"), one(promoted, RDS, "fraiseql-db-writer-eu-central-1")
    assert before.urn == after.urn and "replicateSourceDb" not in after.inputs
    assert after.inputs["manageMasterUserPassword"] is True and after.inputs["kmsKeyId"] == before.inputs["kmsKeyId"]


# --- membership ---------------------------------------------------------------------------------

def test_agents_get_the_members_in_config_order_and_the_next_list_only_during_a_change(grow, grow_joint):
    for region in (E1, FOUR["name"]):
        agent = Settings.from_env(_env(grow, region))
        assert agent.regions == (E1, W2, EU) and agent.regions_next == ()
        joint = Settings.from_env(_env(grow_joint, region))
        assert joint.regions == (E1, W2, EU)
        assert joint.regions_next == (E1, W2, EU, FOUR["name"], FIVE["name"])


def test_members_listed_out_of_order_reach_the_agents_in_config_order():
    syn = synth_variant("phase-b", lambda v: v["quorum"].update(members=[EU, E1, W2]))
    assert Settings.from_env(_env(syn, W2)).regions == (E1, W2, EU)


def _rule(syn):
    rule = one(syn, RULE, "fraiseql-quorum-at-least-quorum")
    arns = {c.outputs["arn"]: c.name.rsplit("-", 3)[-3:] for c in syn.of_type(CONTROL)}
    regions = sorted("-".join(arns[a]) for a in rule.inputs["assertedControls"])
    return regions, rule.inputs["ruleConfig"]["threshold"]


def test_the_safety_rule_asserts_only_members_and_during_a_change_holds_a_majority_of_both(grow, grow_joint):
    assert _rule(grow) == (sorted([E1, W2, EU]), 2)
    # 3 -> 5: any 4 routed of the 5 hold 2 of the old 3 and 3 of the new 5; 3 routed could be 2 newcomers + 1.
    assert _rule(grow_joint) == (sorted([E1, W2, EU, FOUR["name"], FIVE["name"]]), 4)


def test_the_phase_a_to_b_start_has_one_member_and_a_rule_of_one():
    def start(v):
        v["regions"][1]["seed_from"] = v["regions"][2]["seed_from"] = E1

    syn = synth_variant("phase-b", start)
    assert _rule(syn) == ([E1], 1)
    assert Settings.from_env(_env(syn, W2)).regions == (E1,) and syn.outputs["quorum"] == 1
    assert syn.outputs["quorumMembers"] == [E1]


lists = st.lists(st.sampled_from([f"r{i}" for i in range(7)]), min_size=1, max_size=7, unique=True)


@given(lists, st.one_of(st.none(), lists))
def test_every_routed_set_the_rule_allows_holds_a_majority_of_each_list(members, nxt):
    order = [f"r{i}" for i in range(7)]
    asserted, threshold = routing_rule(order, members, nxt)
    for routed in combinations(asserted, threshold):
        for lst in [members] + ([nxt] if nxt else []):
            assert len(set(routed) & set(lst)) >= majority(len(lst))
    # Not stricter than needed: one region fewer can leave some list without its majority.
    if threshold > 1:
        assert any(len(set(routed) & set(lst)) < majority(len(lst))
                   for routed in combinations(asserted, threshold - 1) for lst in [members] + ([nxt] if nxt else []))


def test_the_larger_threshold_alone_would_let_a_minority_of_the_old_members_be_routed():
    old, new = ["a", "b", "c"], ["a", "b", "c", "d", "e"]
    naive = max(majority(len(old)), majority(len(new)))
    routed = {"a", "d", "e"}
    assert len(routed) >= naive and len(routed & set(old)) < majority(len(old))
    assert routing_rule(new, old, new)[1] > naive


@pytest.mark.parametrize("n, expected", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(n, expected):
    assert majority(n) == expected


# --- validation ---------------------------------------------------------------------------------

def problems(change, stack="phase-b") -> str:
    with pytest.raises(ConfigError) as info:
        config_variant(stack, change)
    return str(info.value)


@pytest.mark.parametrize("source, expected", [
    ("us-moon-1", "'us-moon-1' is not a region of this stack"),
    (EU, "eu-west-1 cannot seed from itself"),
])
def test_seed_from_names_a_region_of_the_stack(source, expected):
    msg = problems(lambda v: v["regions"][2].update(seed_from=source))
    assert "fraiseql:regions[2].seed_from" in msg and expected in msg and "e.g. seed_from: us-east-1" in msg


def test_seed_from_a_region_that_is_itself_seeding_is_refused():
    msg = problems(lambda v: (v["regions"][2].update(seed_from=E1), v["regions"].append(dict(FOUR, seed_from=EU))))
    assert "fraiseql:regions[3].seed_from: eu-west-1 is itself seeding (seed_from: us-east-1)" in msg
    assert "e.g. seed_from: us-east-1" in msg


def test_seed_from_and_quorum_lists_belong_to_phases_b_and_c():
    msg = problems(lambda v: (v["regions"][1].update(seed_from=E1), v.update(quorum={"members": [E1, W2]})), "phase-a")
    assert "fraiseql:regions[1].seed_from: belongs to phases b and c" in msg
    assert "fraiseql:quorum.members: belongs to phases b and c" in msg


def test_a_rebuilt_writer_keeps_its_membership_explicitly():
    """Replace: the lost writer seeds again; left to the default, the members would shrink to 2."""
    msg = problems(lambda v: v["regions"][2].update(seed_from=W2))
    assert "fraiseql:quorum.members: by default every region without seed_from (us-east-1, us-west-2)" in msg
    assert "members: ['us-east-1', 'us-west-2', 'eu-west-1']" in msg
    cfg = config_variant("phase-b", lambda v: (v["regions"][2].update(seed_from=W2), v["quorum"].update(members=[E1, W2, EU])))
    assert cfg.quorum_members == [E1, W2, EU] and cfg.writers == [E1, W2]


def test_an_even_member_list_only_during_a_change():
    msg = problems(lambda v: v["regions"].append(FOUR))
    assert "fraiseql:quorum.members" in msg and "an even count is only for a membership change" in msg
    cfg = config_variant("phase-b", lambda v: (v["regions"].append(FOUR), v["quorum"].update(
        members=[E1, W2, EU], next_members=[E1, W2, EU, FOUR["name"]])))
    assert cfg.quorum_next_members == [E1, W2, EU, FOUR["name"]]


@pytest.mark.parametrize("change, expected", [
    (lambda q: q.update(members=[E1, "us-moon-1", W2]), "fraiseql:quorum.members: ['us-moon-1'] are not regions of this stack"),
    (lambda q: q.update(members=[E1, E1, W2]), "fraiseql:quorum.members: lists ['us-east-1'] twice"),
    (lambda q: q.update(members=[E1, W2]), "has 2 regions; a write quorum needs at least 3"),
    (lambda q: q.update(next_members=[E1, W2]), "fraiseql:quorum.next_members: ['us-east-1', 'us-west-2']: has 2 regions"),
    (lambda q: q.update(next_members=[EU, W2, E1]), "fraiseql:quorum.next_members: is the same as members"),
    (lambda q: q.update(members=[E1]), "a single member is only for the start of the A -> B transition"),
])
def test_member_lists_are_checked_with_the_key_and_a_fix(change, expected):
    assert expected in problems(lambda v: change(v["quorum"]))
