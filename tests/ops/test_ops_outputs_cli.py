"""Stack-output validation, the CLI's exit codes, and the retry policy on its own."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ops.errors import UsageError
from ops.outputs import PhaseAOutputs, PhaseBOutputs, parse_outputs
from ops.retry import RetryPolicy, is_throttle
from tests.ops.conftest import Harness, run_cli
from tests.ops.test_ops_arc import phase_b_outputs

ROOT = Path(__file__).resolve().parents[2]


def phase_a_outputs() -> dict:
    return {
        "phase": "a",
        "regions": {"us-east-1": "primary", "us-west-2": "standby"},
        "primaryRegion": "us-east-1",
        "standbyRegion": "us-west-2",
        "primaryDbIdentifier": "p",
        "primaryDbAddress": "p.x.us-east-1.rds.amazonaws.com",
        "replicaDbIdentifiers": {"us-west-2": "r"},
        "replicaDbAddresses": {"us-west-2": "r.x.us-west-2.rds.amazonaws.com"},
        "healthCheckIds": {"us-east-1": "hc1", "us-west-2": "hc2"},
        "replicaLagAlarmArns": {"us-west-2": "arn:aws:cloudwatch:us-west-2:1:alarm:lag"},
        "zoneId": "Z1",
        "recordName": "api.example.com",
        "dbPrivateZoneId": "Z2",
        "dbWriterHostname": "writer.db.phase-a.fraiseql.internal",
        "dbSecurityGroupIds": {"us-east-1": "sg-1", "us-west-2": "sg-2"},
        "fenceSecurityGroupIds": {"us-east-1": "sg-f1", "us-west-2": "sg-f2"},
        "slo": {"rtoSeconds": 300, "rpoSeconds": 60, "lagAlarmSeconds": 30},
        "alertTopicArns": {"us-east-1": "arn:aws:sns:us-east-1:1:a", "us-west-2": "arn:aws:sns:us-west-2:1:a"},
        "apiUrl": "https://api.example.com",  # extra keys are fine
    }


def test_valid_outputs_parse_per_phase() -> None:
    assert isinstance(parse_outputs(phase_a_outputs()), PhaseAOutputs)
    b = parse_outputs(phase_b_outputs())
    assert isinstance(b, PhaseBOutputs) and b.quorum == 2 and b.arcClusterEndpoints[0].region == "us-west-2"


@pytest.mark.parametrize("key", ["dbWriterHostname", "fenceSecurityGroupIds", "slo", "healthCheckIds"])
def test_a_missing_phase_a_key_is_named(key: str) -> None:
    data = phase_a_outputs()
    del data[key]
    with pytest.raises(UsageError, match=f"missing key '{key}'"):
        parse_outputs(data)


def test_every_missing_key_is_named_in_one_message() -> None:
    data = phase_a_outputs()
    del data["dbPrivateZoneId"], data["dbWriterHostname"]
    with pytest.raises(UsageError) as e:
        parse_outputs(data)
    assert "missing keys 'dbPrivateZoneId', 'dbWriterHostname'" in str(e.value)


def test_inconsistent_outputs_are_explained() -> None:
    data = phase_a_outputs()
    data["fenceSecurityGroupIds"] = {"us-west-2": "sg-f2"}
    with pytest.raises(UsageError, match="fenceSecurityGroupIds has no entry for us-east-1"):
        parse_outputs(data)
    b = phase_b_outputs()
    b["quorum"] = 4
    with pytest.raises(UsageError, match="quorum 4 is more than the 3 regions"):
        parse_outputs(b)


def test_phase_b_missing_routing_controls_and_phase_c_keys() -> None:
    b = phase_b_outputs()
    del b["routingControlArns"]
    with pytest.raises(UsageError, match="missing key 'routingControlArns'"):
        parse_outputs(b)
    c = {**phase_b_outputs(), "phase": "c"}
    with pytest.raises(UsageError, match="missing keys 'cloudflareZoneId', 'apiHostname'"):
        parse_outputs(c)


def test_secret_placeholder_hint() -> None:
    data = phase_a_outputs()
    data["slo"] = "[secret]"
    with pytest.raises(UsageError, match="--show-secrets"):
        parse_outputs(data)


def test_missing_phase_is_named() -> None:
    with pytest.raises(UsageError, match="missing key 'phase'"):
        parse_outputs({"regions": {}})


def test_outputs_from_stdin_and_wrong_phase_exit_2(harness: Harness) -> None:
    rt = harness.runtime(stdin=io.StringIO(json.dumps(phase_b_outputs())))
    result = run_cli(["failover", "--outputs", "-", "--json"], rt)
    assert result.code == 2
    assert result.last("result")["detail"].startswith("`failover` is a phase a runbook, but these outputs are phase b")


def test_bad_outputs_file_exit_2(tmp_path: Path, harness: Harness) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_cli(["status", "--outputs", str(bad)], harness.runtime()).code == 2
    assert run_cli(["status", "--outputs", str(tmp_path / "missing.json")], harness.runtime()).code == 2


def test_module_entry_point_help_and_usage_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "ops", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0
    for cmd in ("status", "failover", "region-out", "region-in", "purge"):
        assert cmd in ok.stdout
    assert "3 refused for safety" in ok.stdout
    data = phase_a_outputs()
    del data["dbWriterHostname"]
    path = tmp_path / "o.json"
    path.write_text(json.dumps(data))
    bad = subprocess.run([sys.executable, "-m", "ops", "failover", "--outputs", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "missing key 'dbWriterHostname'" in bad.stdout
    usage = subprocess.run([sys.executable, "-m", "ops", "failover"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--outputs" in usage.stderr


def _err(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize("code", ["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"])
def test_throttle_codes(code: str) -> None:
    assert is_throttle(_err(code))


def test_http_429_is_throttling_whatever_the_code() -> None:
    assert is_throttle(_err("SomethingElse", 429))
    assert not is_throttle(_err("AccessDenied", 403))


def test_retry_policy_is_bounded_and_backs_off_with_jitter() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(sleep=sleeps.append, rng=random.Random(1), attempts=4)
    calls = []

    def always_throttled() -> None:
        calls.append(1)
        raise _err("Throttling")

    with pytest.raises(ClientError):
        policy.call(always_throttled, "Op")
    assert len(calls) == 4 and len(sleeps) == 3
    for wait, d in zip(sleeps, (0.5, 1.0, 2.0)):
        assert d / 2 <= wait <= d


def test_retry_policy_does_not_retry_other_errors_and_bounds_connection_errors() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(sleep=sleeps.append, rng=random.Random(1))
    n = []

    def denied() -> None:
        n.append(1)
        raise _err("AccessDenied", 403)

    with pytest.raises(ClientError):
        policy.call(denied, "Op")
    assert len(n) == 1 and sleeps == []

    def unreachable() -> None:
        n.append(1)
        raise EndpointConnectionError(endpoint_url="https://rds.us-east-1.amazonaws.com")

    n.clear()
    with pytest.raises(EndpointConnectionError):
        policy.call(unreachable, "Op")
    assert len(n) == policy.connection_attempts == 3
