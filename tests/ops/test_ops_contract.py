"""Contract: what infra/program.py really exports validates against the runbook's output models.

Runs the real program under the repo's Pulumi mocks. If the program renames or drops a key the
runbooks need, this fails here rather than in an incident.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.synth import Synthesis
from ops.outputs import PhaseAOutputs, PhaseBOutputs, parse_outputs


def _outputs(syn: Synthesis) -> dict:
    return json.loads(json.dumps(syn.outputs, default=str))


def test_phase_a_program_outputs_satisfy_the_failover_runbook(phase_a: Synthesis) -> None:
    outputs = parse_outputs(_outputs(phase_a))
    assert isinstance(outputs, PhaseAOutputs)
    assert outputs.standbyRegion in outputs.replicaDbIdentifiers
    assert outputs.primaryRegion in outputs.fenceSecurityGroupIds


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / "Pulumi.phase-b.yaml").exists(), reason="no phase-b stack file in this checkout")
def test_phase_b_program_outputs_satisfy_the_region_runbooks(phase_b: Synthesis) -> None:
    raw = _outputs(phase_b)
    # The mocks cannot compute an ARC cluster's endpoints (AWS assigns them); a deployment has them.
    if raw.get("arcClusterEndpoints") is None:
        raw["arcClusterEndpoints"] = [{"region": "us-west-2", "endpoint": "https://host-aaaa.us-west-2.example.aws/v1"}]
    outputs = parse_outputs(raw)
    assert isinstance(outputs, PhaseBOutputs)
    assert set(outputs.routingControlArns) == set(outputs.regions)
    assert 1 <= outputs.quorum <= len(outputs.regions)
