"""Issue 20, items 4 and 7: the creation order AWS needs, as dependency edges of the real program.

- An ECS task whose database secret has no value yet fails to start (ResourceInitializationError);
  the circuit breaker then stops the deployment and, without waiting, `pulumi up` reports success
  with no task running. Each service is created after the bootstrap run that generates its secret's
  value, and `up` waits for its tasks to be steady.
- Routing controls created in parallel on one ARC control panel fail with a 409 ConflictException
  (hashicorp/terraform-provider-aws#48311): they are created one after another.

Edges are read as the engine reads them: `dependsOn` plus every input's property dependencies.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.mocks import Registration
from infra.synth import Synthesis
from tests.conftest import synth_variant, synthesized

SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
INVOCATION = "aws:lambda/invocation:Invocation"
CONTROL = "aws:route53recoverycontrol/routingControl:RoutingControl"


def direct_edges(reg: Registration) -> set[str]:
    return set(reg.dependencies) | {u for urns in reg.property_dependencies.values() for u in urns}


def waits_for(syn: Synthesis, reg: Registration, target: Registration) -> bool:
    """Whether the engine creates `reg` only after `target` (a path of dependency edges)."""
    by_urn = {r.urn: r for r in syn.registrations}
    seen, todo = set(), [reg.urn]
    while todo:
        urn = todo.pop()
        if urn == target.urn:
            return True
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        todo += direct_edges(by_urn[urn])
    return False


def secret_of(syn: Synthesis, service: Registration) -> str:
    task = next(t for t in syn.of_type(TASK) if t.outputs.get("arn") == service.inputs["taskDefinition"])
    (container,) = json.loads(task.inputs["containerDefinitions"])
    return container["secrets"][0]["valueFrom"].split(":password::")[0].split(":username::")[0]


def fillers(syn: Synthesis, secret_arn: str) -> list[Registration]:
    """Bootstrap runs that generate a value into the secret (its own ARN, or the one it is replicated from)."""
    def secrets_in(inv: Registration) -> set[str]:
        event: dict[str, Any] = json.loads(inv.inputs["input"])
        return set((event.get("role_secrets") or {}).values())

    base = secret_arn.split(":")
    found = []
    for inv in syn.of_type(INVOCATION):
        for arn in secrets_in(inv):
            parts = arn.split(":")
            if arn == secret_arn or (parts[:3] + parts[4:] == base[:3] + base[4:]):  # same secret, replica region
                found.append(inv)
    return found


@pytest.fixture(scope="module", params=["phase-a", "phase-b", "phase-c"])
def stack(request) -> Synthesis:
    return synthesized(request, request.param)


def test_each_service_starts_after_the_run_that_fills_its_secret(stack):
    services = stack.of_type(SERVICE)
    assert services
    for svc in services:
        runs = fillers(stack, secret_of(stack, svc))
        assert runs, f"nothing fills the secret of {svc.name}"
        assert any(waits_for(stack, svc, run) for run in runs), f"{svc.name} may start before its secret has a value"
        assert svc.inputs["waitForSteadyState"] is True, f"`up` would report success with {svc.name} not running"
        assert svc.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_a_seeding_region_runs_no_task_until_its_bootstrap_exists():
    """A→B step 1: the copies' secrets stay empty until they are promoted and join (no bootstrap run)."""
    def seed(v):
        for rc in v["regions"][1:]:
            rc["seed_from"] = "us-east-1"

    syn = synth_variant("phase-b", seed)
    for svc in syn.of_type(SERVICE):
        region = svc.inputs["region"]
        target = next(t for t in syn.of_type("aws:appautoscaling/target:Target") if t.name == svc.name.replace("service", "scaling-target"))
        if region == "us-east-1":
            assert svc.inputs["desiredCount"] == 2 and svc.inputs["waitForSteadyState"] is True
            assert fillers(syn, secret_of(syn, svc))
        else:
            assert not fillers(syn, secret_of(syn, svc))
            assert (svc.inputs["desiredCount"], target.inputs["minCapacity"]) == (0, 0)
            assert svc.inputs["waitForSteadyState"] is False


@pytest.mark.parametrize("regions", [3, 5])
def test_routing_controls_on_one_panel_are_created_in_a_chain(regions, request):
    if regions == 3:
        syn = synthesized(request, "phase-b")
    else:
        extra = [{"name": "eu-central-1", "role": "active", "cidr": "10.40.0.0/16"},
                 {"name": "us-east-2", "role": "active", "cidr": "10.50.0.0/16"}]
        syn = synth_variant("phase-b", lambda v: v["regions"].extend(extra))
    controls = syn.of_type(CONTROL)
    assert len(controls) == regions
    panels = {c.inputs["controlPanelArn"] for c in controls}
    assert len(panels) == 1
    # a total order: every pair is ordered one way, so no two are ever created at once
    for i, a in enumerate(controls):
        for b in controls[i + 1:]:
            assert waits_for(syn, a, b) or waits_for(syn, b, a), f"{a.name} and {b.name} may be created in parallel"
