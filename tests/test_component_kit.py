"""The component kit (components/_kit.py): children named by one rule, and every taggable AWS child
tagged with the stack's labels without passing them, in the real stacks and in a component of its own."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from components._kit import UNTAGGED_TYPES, Component, Labels
from infra import program
from infra.mocks import Registration
from infra.synth import Synthesis, synthesize
from tests.conftest import stack_values

STACKS = ("phase-a", "phase-b", "phase-c")


def _with_taggable_types(stack: str) -> tuple[Synthesis, dict[str, bool]]:
    """The stack under mocks, and for each type it declares whether that type takes `tags` at all."""
    taggable: dict[str, bool] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if isinstance(args.resource, pulumi.CustomResource):
            taggable[args.type_] = "tags" in args.props
        return None

    def run() -> dict[str, Any]:
        pulumi.runtime.register_stack_transformation(record)
        return program.run()

    return synthesize(stack, run=run), taggable


@pytest.fixture(scope="module")
def stacks() -> dict[str, tuple[Synthesis, dict[str, bool]]]:
    return {stack: _with_taggable_types(stack) for stack in STACKS}


def _names(reg: Registration) -> set[str]:
    """The logical names a resource answers to: its own and its aliases'."""
    return {reg.name, *(urn.rsplit("::", 1)[-1] for urn in reg.aliases)}


@pytest.mark.parametrize("stack", STACKS)
def test_every_taggable_aws_child_of_a_component_carries_the_stack_labels(stacks, stack):
    syn, taggable = stacks[stack]
    values = stack_values(stack)
    checked = 0
    for reg in syn.resources:
        owner = syn.component_of(reg)
        if owner == "program" or not reg.type.startswith("aws:") or not taggable[reg.type] or reg.type in UNTAGGED_TYPES:
            continue
        tags = dict(reg.inputs["tags"])
        assert tags.pop("Name") in _names(reg), reg.urn
        tags.pop("tier", None)  # a subnet's own tag
        assert tags == {**values["tags"], "project": "fraiseql", "phase": values["phase"], "stack": stack,
                        "component": owner.split()[0]}, reg.urn
        checked += 1
    assert checked > 50


def test_the_untagged_types_take_tags_and_get_none(stacks):
    """The exemption list names only types that take tags (so it cannot go stale unseen), and the kit
    leaves those untouched. Growing it drops tags from a whole type: that is a decision, made here."""
    assert UNTAGGED_TYPES == {
        "aws:appautoscaling/target:Target", "aws:lb/listener:Listener",
        "aws:route53recoverycontrol/cluster:Cluster", "aws:route53recoverycontrol/controlPanel:ControlPanel",
        "aws:route53recoverycontrol/safetyRule:SafetyRule",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    }
    declared: dict[str, list[Registration]] = defaultdict(list)
    for syn, taggable in stacks.values():
        assert all(taggable[t] for t in UNTAGGED_TYPES if t in taggable)
        for reg in syn.resources:
            declared[reg.type].append(reg)
    assert UNTAGGED_TYPES <= set(declared)
    assert [r.urn for t in UNTAGGED_TYPES for r in declared[t] if "tags" in r.inputs] == []


# --- the kit on a component of its own --------------------------------------------------------

LABELS = Labels(stack="kit", phase="b", tags={"team": "platform"})


class _Thing(Component):
    def __init__(self, name: str, *, labels: Labels = LABELS) -> None:
        super().__init__("fraiseql:test:Thing", name, labels=labels)
        aws.sns.Topic(self.n("topic", "us-east-1"), region="us-east-1", opts=self.child)
        aws.ec2.Subnet(self.n("subnet"), region="us-east-1", vpc_id="vpc-1", cidr_block="10.0.0.0/24",
                       tags={"tier": "private", "Name": "mine"}, opts=self.child)
        aws.sns.Topic("short", region="us-east-1", opts=self.renamed("long"))
        aws.lb.Listener(self.n("listener"), region="us-east-1", load_balancer_arn="arn:lb", port=80,
                        default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn="arn:tg")],
                        opts=self.child)
        aws.iam.RolePolicy(self.n("policy"), role="r", policy="{}", opts=self.child)
        self.register_outputs({})


@pytest.fixture(scope="module")
def thing() -> Synthesis:
    def run() -> dict[str, Any]:
        _Thing("thing")
        aws.sns.Topic("outside", region="us-east-1")
        return {}

    return synthesize("kit", config={}, run=run)


def _by_name(syn: Synthesis) -> dict[str, Registration]:
    return {r.name: r for r in syn.resources}


def test_a_child_gets_the_user_tags_and_the_reserved_ones_under_its_logical_name(thing):
    topic = _by_name(thing)["thing-topic-us-east-1"]
    assert topic.inputs["tags"] == {"team": "platform", "Name": "thing-topic-us-east-1", "project": "fraiseql",
                                    "phase": "b", "stack": "kit", "component": "Thing"}


def test_a_childs_own_tags_are_kept(thing):
    assert _by_name(thing)["thing-subnet"].inputs["tags"] == {
        "team": "platform", "Name": "mine", "tier": "private", "project": "fraiseql", "phase": "b", "stack": "kit",
        "component": "Thing"}


def test_a_renamed_child_keeps_its_urn_and_its_name_tag(thing):
    short = _by_name(thing)["short"]
    assert short.inputs["tags"]["Name"] == "thing-long"
    assert short.aliases == [short.urn.replace("::short", "::thing-long")]


def test_untaggable_and_exempt_children_and_resources_outside_components_are_left_alone(thing):
    by_name = _by_name(thing)
    assert "tags" not in by_name["thing-listener"].inputs       # an exempt type
    assert "tags" not in by_name["thing-policy"].inputs         # takes no tags
    assert "tags" not in by_name["outside"].inputs              # not a component's child

