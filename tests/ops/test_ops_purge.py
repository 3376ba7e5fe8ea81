"""Phase C purge against a loopback HTTP server standing in for Cloudflare's API (127.0.0.1 only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops.purge import MAX_TAGS_PER_REQUEST, batches, parse_tags
from tests.ops.conftest import Harness, run_cli
from tests.ops.test_ops_arc import phase_b_outputs

TOKEN = "cf-test-token-0123456789"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


@pytest.fixture
def outputs_c(tmp_path: Path) -> Path:
    data = {**phase_b_outputs(), "phase": "c", "cloudflareZoneId": ZONE, "apiHostname": "api.example.com"}
    path = tmp_path / "outputs-c.json"
    path.write_text(json.dumps(data))
    return path


def env(loopback: Any, token: str = TOKEN) -> dict[str, str]:
    out = {"CLOUDFLARE_API_BASE": f"{loopback.url}/client/v4"}
    if token:
        out["CLOUDFLARE_API_TOKEN"] = token
    return out


def test_tags_are_batched_at_the_per_request_limit_with_exact_bodies(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    tags = [f"Type:{i}" for i in range(1, 251)]
    arg = ",".join(tags[:120]) + ", ,Type:3"  # blanks and duplicates are dropped
    rt = harness.runtime(environ=env(loopback))
    result = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--tags", arg, "--tags", ",".join(tags[120:])], rt)

    assert result.code == 0, result.text
    assert MAX_TAGS_PER_REQUEST == 100
    assert [r["body"] for r in loopback.requests] == [{"tags": tags[:100]}, {"tags": tags[100:200]}, {"tags": tags[200:]}]
    for r in loopback.requests:
        assert r["path"] == f"/client/v4/zones/{ZONE}/purge_cache"
        assert r["headers"]["Authorization"] == f"Bearer {TOKEN}"
        assert r["headers"]["Content-Type"] == "application/json"
    assert TOKEN not in result.text
    assert result.last("purge")["detail"].startswith("done: 250 tags purged")


def test_batch_size_option(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    rt = harness.runtime(environ=env(loopback))
    result = run_cli(["purge", "--outputs", str(outputs_c), "--tags", "Type:1,Type:2,Type:3", "--batch-size", "2"], rt)
    assert result.code == 0
    assert [r["body"] for r in loopback.requests] == [{"tags": ["Type:1", "Type:2"]}, {"tags": ["Type:3"]}]


def test_429_is_retried_honouring_retry_after(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    loopback.replies += [
        (429, {"Retry-After": "3"}, {"success": False, "errors": [{"code": 10000, "message": "rate limited"}]}),
        (200, {}, {"success": True, "errors": [], "messages": [], "result": {"id": "abc"}}),
    ]
    rt = harness.runtime(environ=env(loopback))
    result = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--tags", "Type:1"], rt)
    assert result.code == 0, result.text
    assert [r["body"] for r in loopback.requests] == [{"tags": ["Type:1"]}] * 2
    assert harness.clock.sleeps == [3.0]


def test_api_error_fails_and_names_the_tags_left(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    loopback.replies += [
        (200, {}, {"success": True, "result": {"id": "1"}}),
        (400, {}, {"success": False, "errors": [{"code": 1134, "message": "Purge by tag is not allowed"}]}),
    ]
    rt = harness.runtime(environ=env(loopback))
    result = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--tags", "a,b,c", "--batch-size", "2"], rt)
    assert result.code == 1
    failed = [e for e in result.events if e["status"] == "failed" and e["step"] == "purge"][0]
    assert failed["data"]["remaining_tags"] == ["c"]
    assert "1134: Purge by tag is not allowed" in failed["detail"]
    assert len(loopback.requests) == 2


def test_everything_requires_yes(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    rt = harness.runtime(environ=env(loopback))
    refused = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--everything"], rt)
    assert refused.code == 3
    assert loopback.requests == []

    rt = harness.runtime(environ=env(loopback))
    done = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--everything", "--yes"], rt)
    assert done.code == 0, done.text
    assert [r["body"] for r in loopback.requests] == [{"purge_everything": True}]


def test_dry_run_sends_nothing(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    rt = harness.runtime(environ=env(loopback))
    result = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--dry-run", "--tags", ",".join(f"T:{i}" for i in range(150))], rt)
    assert result.code == 0
    assert loopback.requests == []
    would = [e["data"]["body"] for e in result.events if e["status"] == "would"]
    assert [len(b["tags"]) for b in would] == [100, 50]


def test_missing_token_is_a_usage_error(loopback: Any, harness: Harness, outputs_c: Path) -> None:
    rt = harness.runtime(environ=env(loopback, token=""))
    result = run_cli(["purge", "--outputs", str(outputs_c), "--json", "--tags", "a"], rt)
    assert result.code == 2
    assert "CLOUDFLARE_API_TOKEN" in result.last("result")["detail"]
    assert loopback.requests == []


def test_purge_needs_phase_c_outputs(loopback: Any, harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(phase_b_outputs()))
    result = run_cli(["purge", "--outputs", str(path), "--json", "--tags", "a"], harness.runtime(environ=env(loopback)))
    assert result.code == 2
    assert "phase c" in result.last("result")["detail"]


def test_parse_tags_and_batches() -> None:
    assert parse_tags(["Type:1, Type:2", "Type:1,,Type:3"]) == ("Type:1", "Type:2", "Type:3")
    assert batches(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batches([], 100) == []
