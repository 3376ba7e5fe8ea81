"""Run the pack over a stack synthesized under mocks, exactly as the CLI would run it on a preview.

The pack's policy objects are called directly with `StackValidationArgs` / `ResourceValidationArgs`
built from what the program registered: same validators, no Pulumi CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import PolicyCustomTimeouts

from infra.mocks import Registration
from policies import rules
from policies.cost import CostReport
from policies.pack import POLICIES


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    message: str
    urn: Optional[str]

    @property
    def mandatory(self) -> bool:
        return self.level == EnforcementLevel.MANDATORY.value


@dataclass
class PackResult:
    violations: list[Violation]
    cost: Optional[CostReport]
    bounds: list
    facts: rules.StackFacts

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.mandatory]


def _opts(reg: Registration) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=reg.protect,
        ignore_changes=list(reg.ignore_changes),
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=reg.parent or None,
    )


def policy_resources(registrations: list[Registration]) -> list[PolicyResource]:
    """PolicyResources with parents and property dependencies wired, as the engine hands them over."""
    made: dict[str, PolicyResource] = {}
    for reg in registrations:
        props: dict[str, Any] = {**reg.inputs, **reg.outputs} if reg.custom else {}
        made[reg.urn] = PolicyResource(
            resource_type=reg.type, props=props, urn=reg.urn, name=reg.name, opts=_opts(reg),
            provider=None, parent=None, dependencies=[], property_dependencies={},
        )
    for reg in registrations:
        res = made[reg.urn]
        res.parent = made.get(reg.parent)
        res.property_dependencies = {
            prop: [made[u] for u in urns if u in made] for prop, urns in reg.property_dependencies.items()
        }
        deps = {d.urn: d for ds in res.property_dependencies.values() for d in ds}
        deps.update({u: made[u] for u in reg.dependencies if u in made})
        res.dependencies = sorted(deps.values(), key=lambda d: d.urn)
    return [made[reg.urn] for reg in registrations]


def evaluate(resources: list[PolicyResource], config: Optional[dict[str, Any]] = None) -> list[Violation]:
    """Every policy of the pack over these resources, as the engine would call them."""
    violations: list[Violation] = []
    for policy in POLICIES:
        level = (policy.enforcement_level or EnforcementLevel.MANDATORY).value

        def report(message: str, urn: Optional[str] = None, *, _p=policy.name, _l=level) -> None:
            violations.append(Violation(_p, _l, message, urn))

        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, None, config=config)
                policy.validate(args, lambda m, u=None, _r=r: report(m, u or _r.urn))  # type: ignore[misc]
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(resources, config=config), report)
    return violations


def run_pack(registrations: list[Registration], config: Optional[dict[str, Any]] = None) -> PackResult:
    resources = policy_resources(registrations)
    violations = evaluate(resources, config)
    facts = rules.StackFacts.read(resources, config)
    try:
        cost = rules.cost_report(resources, facts)
    except Exception:  # noqa: BLE001 - the monthly-budget policy already reported why
        cost = None
    return PackResult(violations, cost, rules.slo_bounds(facts), facts)
