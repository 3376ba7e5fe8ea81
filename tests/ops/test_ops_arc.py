"""Phase B region-out/region-in against the ARC data plane, with botocore Stubber (moto has no ARC).

Each cluster endpoint gets its own stubbed client; a call to an endpoint with no queued response
fails the test, so "no update was sent" is checked by Stubber itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from ops.aws import default_client_factory
from tests.ops.conftest import Harness, run_cli

CONTROL_PANEL = "arn:aws:route53-recovery-control::123456789012:controlpanel/0123456789abcdef"
ARNS = {r: f"{CONTROL_PANEL}/routingcontrol/{r.replace('-', '')}" for r in ("us-east-1", "us-west-2", "eu-west-1")}
SAFETY_RULE = f"{CONTROL_PANEL}/safetyrule/min-two-on"
ENDPOINTS = [
    {"region": "us-west-2", "endpoint": "https://host-aaaa.us-west-2.example-arc.aws/v1"},
    {"region": "eu-west-1", "endpoint": "https://host-bbbb.eu-west-1.example-arc.aws/v1"},
    {"region": "ap-northeast-1", "endpoint": "https://host-cccc.ap-northeast-1.example-arc.aws/v1"},
]
ORDER = sorted(ARNS)  # the runbook reads every routing control, in region order


def phase_b_outputs() -> dict[str, Any]:
    return {
        "phase": "b",
        "regions": {r: "active" for r in ARNS},
        "writerDbIdentifiers": {r: f"fraiseql-db-writer-{r}" for r in ARNS},
        "healthCheckIds": {r: f"hc-{r}" for r in ARNS},
        "routingControlArns": ARNS,
        "arcClusterEndpoints": ENDPOINTS,
        "quorum": 2,
        "replicationLagAlarmArns": {
            "us-east-1->us-west-2": "arn:aws:cloudwatch:us-west-2:123456789012:alarm:fraiseql-lag-us-east-1-us-west-2",
        },
        "slo": {"rtoSeconds": 1, "rpoSeconds": 0.1},
    }


class Arc:
    """Stubbed data-plane clients, one per cluster endpoint, plugged into a Harness."""

    def __init__(self, harness: Harness):
        self.stubbers: dict[str, Stubber] = {}
        for ep in ENDPOINTS:
            client = default_client_factory("route53-recovery-cluster", ep["region"], ep["endpoint"])
            assert client.meta.region_name == ep["region"] and client.meta.endpoint_url == ep["endpoint"]
            stubber = Stubber(client)
            stubber.activate()
            harness.stubs[("route53-recovery-cluster", ep["region"], ep["endpoint"])] = client
            self.stubbers[ep["region"]] = stubber

    def get(self, region: str, states: dict[str, str]) -> None:
        """Queue the reads of every routing control on the endpoint in `region`."""
        for r in ORDER:
            self.stubbers[region].add_response(
                "get_routing_control_state",
                {"RoutingControlArn": ARNS[r], "RoutingControlState": states[r], "RoutingControlName": r},
                {"RoutingControlArn": ARNS[r]},
            )

    def get_one(self, region: str, r: str, state: str) -> None:
        self.stubbers[region].add_response(
            "get_routing_control_state",
            {"RoutingControlArn": ARNS[r], "RoutingControlState": state, "RoutingControlName": r},
            {"RoutingControlArn": ARNS[r]},
        )

    def error(self, region: str, op: str, code: str, status: int = 400, expected: Any = None) -> None:
        self.stubbers[region].add_client_error(op, service_error_code=code, service_message=f"injected {code}", http_status_code=status, expected_params=expected)

    def verify(self) -> None:
        for s in self.stubbers.values():
            s.assert_no_pending_responses()


@pytest.fixture
def arc(harness: Harness) -> Arc:
    return Arc(harness)


@pytest.fixture
def outputs_b(tmp_path: Path) -> Path:
    path = tmp_path / "outputs-b.json"
    path.write_text(json.dumps(phase_b_outputs()))
    return path


ALL_ON = {r: "On" for r in ARNS}


def args(cmd: str, path: Path, *extra: str) -> list[str]:
    return [cmd, "--outputs", str(path), "--json", *extra]


def test_region_out_refuses_to_break_quorum(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", {"eu-west-1": "On", "us-east-1": "On", "us-west-2": "Off"})
    result = run_cli(args("region-out", outputs_b, "us-east-1"), harness.runtime())
    assert result.code == 3
    refusal = result.last("region-out")
    assert refusal["status"] == "refused"
    assert "would leave 1 region On (eu-west-1), below the quorum of 2" in refusal["detail"]
    arc.verify()  # only the three reads: an update would have hit an empty stub queue


def test_region_out_sets_the_routing_control_off_without_overriding_safety_rules(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", ALL_ON)
    arc.stubbers["us-west-2"].add_response(
        "update_routing_control_state", {}, {"RoutingControlArn": ARNS["us-east-1"], "RoutingControlState": "Off"}
    )
    arc.get_one("us-west-2", "us-east-1", "Off")
    result = run_cli(args("region-out", outputs_b, "us-east-1"), harness.runtime())
    assert result.code == 0, result.text
    assert result.last("region-out")["status"] == "done"
    assert result.steps("region-out")[0]["data"]["states"] == {"eu-west-1": "On", "us-east-1": "Off", "us-west-2": "On"}
    arc.verify()


def test_override_safety_is_sent_only_when_named(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", ALL_ON)
    arc.stubbers["us-west-2"].add_response(
        "update_routing_control_state",
        {},
        {"RoutingControlArn": ARNS["eu-west-1"], "RoutingControlState": "Off", "SafetyRulesToOverride": [SAFETY_RULE]},
    )
    arc.get_one("us-west-2", "eu-west-1", "Off")
    result = run_cli(args("region-out", outputs_b, "eu-west-1", "--override-safety", SAFETY_RULE), harness.runtime())
    assert result.code == 0, result.text
    assert any("overriding ARC safety rules" in e["detail"] for e in result.events)
    arc.verify()


def test_a_safety_rule_conflict_is_a_refusal(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", ALL_ON)
    arc.error("us-west-2", "update_routing_control_state", "ConflictException", 409,
              expected={"RoutingControlArn": ARNS["us-west-2"], "RoutingControlState": "Off"})
    result = run_cli(args("region-out", outputs_b, "us-west-2"), harness.runtime())
    assert result.code == 3
    assert "--override-safety" in result.last("result")["detail"]
    arc.verify()


def test_unavailable_endpoint_moves_on_to_the_next_cluster_endpoint(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.error("us-west-2", "get_routing_control_state", "EndpointTemporarilyUnavailableException", 503,
              expected={"RoutingControlArn": ARNS["eu-west-1"]})
    arc.get("eu-west-1", ALL_ON)
    arc.stubbers["eu-west-1"].add_response(
        "update_routing_control_state", {}, {"RoutingControlArn": ARNS["us-west-2"], "RoutingControlState": "Off"}
    )
    arc.get_one("eu-west-1", "us-west-2", "Off")
    result = run_cli(args("region-out", outputs_b, "us-west-2"), harness.runtime())
    assert result.code == 0, result.text
    assert "trying eu-west-1" in result.steps("arc")[0]["detail"]
    arc.verify()


def test_arc_throttling_is_retried_on_the_same_endpoint(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.error("us-west-2", "get_routing_control_state", "ThrottlingException", 429, expected={"RoutingControlArn": ARNS["eu-west-1"]})
    arc.get("us-west-2", ALL_ON)
    arc.stubbers["us-west-2"].add_response(
        "update_routing_control_state", {}, {"RoutingControlArn": ARNS["us-east-1"], "RoutingControlState": "Off"}
    )
    arc.get_one("us-west-2", "us-east-1", "Off")
    result = run_cli(args("region-out", outputs_b, "us-east-1"), harness.runtime())
    assert result.code == 0, result.text
    assert [e["data"]["error"] for e in result.steps("retry")] == ["ThrottlingException"]
    assert len(harness.clock.sleeps) == 1
    arc.verify()


def test_several_regions_go_in_one_batch_update(arc: Arc, harness: Harness, outputs_b: Path, tmp_path: Path) -> None:
    five = phase_b_outputs()
    extra = {r: f"{CONTROL_PANEL}/routingcontrol/{r.replace('-', '')}" for r in ("ap-southeast-2", "sa-east-1")}
    five["routingControlArns"] = {**ARNS, **extra}
    five["regions"] = {r: "active" for r in five["routingControlArns"]}
    five["writerDbIdentifiers"] = {r: f"w-{r}" for r in five["regions"]}
    five["quorum"] = 3
    path = tmp_path / "five.json"
    path.write_text(json.dumps(five))
    stub = arc.stubbers["us-west-2"]
    for r in sorted(five["routingControlArns"]):
        stub.add_response("get_routing_control_state", {"RoutingControlArn": five["routingControlArns"][r], "RoutingControlState": "On"},
                          {"RoutingControlArn": five["routingControlArns"][r]})
    stub.add_response(
        "update_routing_control_states",
        {},
        {"UpdateRoutingControlStateEntries": [
            {"RoutingControlArn": extra["sa-east-1"], "RoutingControlState": "Off"},
            {"RoutingControlArn": extra["ap-southeast-2"], "RoutingControlState": "Off"},
        ]},
    )
    for r in ("sa-east-1", "ap-southeast-2"):
        stub.add_response("get_routing_control_state", {"RoutingControlArn": extra[r], "RoutingControlState": "Off"}, {"RoutingControlArn": extra[r]})
    result = run_cli(args("region-out", path, "sa-east-1", "ap-southeast-2"), harness.runtime())
    assert result.code == 0, result.text
    arc.verify()


def test_region_out_already_off_is_done_and_sends_no_update(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", {"eu-west-1": "On", "us-east-1": "Off", "us-west-2": "On"})
    result = run_cli(args("region-out", outputs_b, "us-east-1"), harness.runtime())
    assert result.code == 0
    assert result.last("region-out")["detail"].startswith("done: nothing to do")
    arc.verify()


def test_region_in_turns_a_region_back_on(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", {"eu-west-1": "On", "us-east-1": "Off", "us-west-2": "On"})
    arc.stubbers["us-west-2"].add_response(
        "update_routing_control_state", {}, {"RoutingControlArn": ARNS["us-east-1"], "RoutingControlState": "On"}
    )
    arc.get_one("us-west-2", "us-east-1", "On")
    result = run_cli(args("region-in", outputs_b, "us-east-1"), harness.runtime())
    assert result.code == 0, result.text
    arc.verify()


def test_region_out_dry_run_reads_but_sends_no_update(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", ALL_ON)
    result = run_cli(args("region-out", outputs_b, "us-east-1", "--dry-run"), harness.runtime())
    assert result.code == 0
    would = result.last("region-out")
    assert would["status"] == "would"
    assert would["data"]["params"] == {"RoutingControlArn": ARNS["us-east-1"], "RoutingControlState": "Off"}
    arc.verify()


def test_force_allows_going_below_quorum(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    arc.get("us-west-2", {"eu-west-1": "On", "us-east-1": "On", "us-west-2": "Off"})
    arc.stubbers["us-west-2"].add_response(
        "update_routing_control_state", {}, {"RoutingControlArn": ARNS["us-east-1"], "RoutingControlState": "Off"}
    )
    arc.get_one("us-west-2", "us-east-1", "Off")
    result = run_cli(args("region-out", outputs_b, "us-east-1", "--force"), harness.runtime())
    assert result.code == 0, result.text
    assert any(e["status"] == "warn" and "FORCED below quorum" in e["detail"] for e in result.events)
    arc.verify()


def test_all_endpoints_down_fails(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    for ep in ENDPOINTS:
        arc.error(ep["region"], "get_routing_control_state", "EndpointTemporarilyUnavailableException", 503)
    result = run_cli(args("region-out", outputs_b, "us-east-1"), harness.runtime())
    assert result.code == 1
    assert "every ARC cluster endpoint failed" in result.last("result")["detail"]
    arc.verify()


def test_unknown_region_is_a_usage_error(arc: Arc, harness: Harness, outputs_b: Path) -> None:
    result = run_cli(args("region-out", outputs_b, "mars-north-1"), harness.runtime())
    assert result.code == 2
    assert "unknown region mars-north-1" in result.last("result")["detail"]
