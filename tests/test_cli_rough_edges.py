"""The command-line rough edges a first user meets (issue 22, item 7): each one as it should behave.

- `python -m policies --help` prints help and exits; the CLI's own way of running the pack still serves.
- `python -m infra cloudflare-ips` without a network says so and exits 3, never 1 ("stale").
- `python -m ops status` without credentials is a setup problem (exit 2), not a step to resume.
- `python -m ops status` with AWS unreachable reports the replica's state as unknown, never "not a replica".
- A quorum or seeding error never suggests a value the validator refuses.
- `.gitignore` keeps out the pack's virtualenv, exported outputs (they hold secrets) and runbook state.
- The project has a license, and says which.
"""

from __future__ import annotations

import copy
import io
import json
import re
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
import yaml

from core.config import ConfigError
from infra.paths import REPO
from ops.aws import Runtime, default_client_factory
from ops.cli import main as ops_main
from tests.conftest import config_variant


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- policies --------------------------------------------------------------------------------------


def test_policies_help_prints_usage_and_exits():
    out = subprocess.run([sys.executable, "-m", "policies", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pulumi preview" in out.stdout and "--policy-pack policies" in out.stdout
    assert not re.search(r"^\d+$", out.stdout, flags=re.M), "no analyzer port: nothing was served"


def test_policies_without_arguments_is_a_usage_error_not_a_server():
    out = subprocess.run([sys.executable, "-m", "policies"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "pulumi preview" in out.stderr


def test_the_cli_still_gets_an_analyzer_when_it_runs_the_pack():
    """What the Pulumi CLI's shim runs: `python -m pulumi.policy <engine> <folder>`: the pack serves
    and prints its port."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(REPO / "policies")],
                            cwd=REPO / "policies", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.isdigit(), (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        assert proc.poll() is None  # serving, as the engine expects
    finally:
        proc.kill()
        proc.wait(timeout=30)


# --- infra cloudflare-ips ----------------------------------------------------------------------------


def test_cloudflare_ips_offline_says_it_could_not_check_with_its_own_exit_code():
    from infra.__main__ import EXIT_UNCHECKED, EXIT_VIOLATION, cloudflare_ips_command
    from infra.cloudflare_ips import DATA

    before = DATA.read_text()

    def offline(*_a: Any, **_k: Any) -> Any:
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    out, err = io.StringIO(), io.StringIO()
    code = cloudflare_ips_command(write=True, urlopen=offline, out=out, err=err)
    assert code == EXIT_UNCHECKED != EXIT_VIOLATION
    assert "Traceback" not in err.getvalue() and "cannot be reached" in err.getvalue() and "unchanged" in err.getvalue()
    assert DATA.read_text() == before


def test_cloudflare_ips_command_offline_exits_3_without_a_traceback():
    """The command as a user runs it, with the network unreachable (every HTTPS request goes to a proxy
    port nothing listens on): one line saying it could not check, exit 3, and not the 1 of 'stale'."""
    from infra.cloudflare_ips import DATA

    before = DATA.read_text()
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in __import__("os").environ.items() if k.lower() not in ("no_proxy", "https_proxy", "http_proxy", "all_proxy")}
    env |= {"HTTPS_PROXY": proxy, "https_proxy": proxy}
    out = subprocess.run([sys.executable, "-m", "infra", "cloudflare-ips"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 3, (out.returncode, out.stderr)
    assert "cannot be reached" in out.stderr and DATA.read_text() == before


def test_cloudflare_ips_answer_that_is_not_ranges_is_unchecked_too():
    from infra.__main__ import EXIT_UNCHECKED, cloudflare_ips_command

    class Body:
        def __enter__(self) -> "Body":
            return self

        def __exit__(self, *_: Any) -> None:
            return None

        def read(self) -> bytes:
            return b"<html>captive portal</html>"

    err = io.StringIO()
    assert cloudflare_ips_command(write=False, urlopen=lambda *a, **k: Body(), out=io.StringIO(), err=err) == EXIT_UNCHECKED
    assert "other than Cloudflare's ranges" in err.getvalue()


# --- ops status ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phase_a_outputs(tmp_path_factory: pytest.TempPathFactory, phase_a) -> Path:
    path = tmp_path_factory.mktemp("outputs") / "outputs.json"
    path.write_text(json.dumps(phase_a.outputs, default=str))
    return path


def _run(argv: list[str], rt: Runtime) -> tuple[int, list[dict[str, Any]]]:
    code = ops_main(argv, rt)
    return code, [json.loads(line) for line in rt.out.getvalue().splitlines() if line.strip()]  # type: ignore[attr-defined]


def test_status_without_credentials_is_a_setup_problem_not_a_resume(phase_a_outputs: Path, monkeypatch, tmp_path):
    for key in [k for k in list(__import__("os").environ) if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # boto3's default session keeps the credentials it resolved first: one an earlier test made (tests/ops
    # run with fake keys) would answer for this environment.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    rt = Runtime(out=io.StringIO(), sleep=lambda s: None)
    code, events = _run(["status", "--outputs", str(phase_a_outputs), "--json"], rt)
    result = events[-1]
    assert code == 2 and result["step"] == "result"
    assert "credentials" in result["detail"] and "AWS_PROFILE" in result["detail"]
    assert "resume" not in result["detail"] and "nothing was changed" in result["detail"]


def test_status_with_aws_unreachable_reports_unknown_never_not_a_replica(phase_a_outputs: Path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    port = _closed_port()

    def nowhere(service: str, region: str, endpoint_url: Any = None) -> Any:
        return default_client_factory(service, region, f"http://127.0.0.1:{port}")

    rt = Runtime(out=io.StringIO(), sleep=lambda s: None, client_factory=nowhere)
    code, events = _run(["status", "--outputs", str(phase_a_outputs), "--json"], rt)
    lag = next(e for e in events if e["step"] == "lag")
    assert "not a replica" not in lag["detail"] and "unknown" in lag["detail"] and lag["status"] == "warn"
    writer = next(e for e in events if e["step"] == "writer")
    assert "unknown" in writer["detail"]
    assert not any(e["step"] == "alarms" and e["status"] == "ok" for e in events), "no alarm was read: none is 'ok'"
    assert code == 1 and events[-1]["step"] == "result" and "resume" not in events[-1]["detail"]


# --- config suggestions -----------------------------------------------------------------------------

EXTRA = [dict(name="ap-northeast-1", role="active", cidr="10.40.0.0/16"), dict(name="sa-east-1", role="active", cidr="10.50.0.0/16")]


def _quorum(**kw: Any) -> Callable[[dict[str, Any]], None]:
    return lambda v: v.update(quorum={**v["quorum"], **kw})


def _then(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(v: dict[str, Any]) -> None:
        for c in changes:
            c(v)
    return change


def _grow(v: dict[str, Any]) -> None:
    v["regions"] += copy.deepcopy(EXTRA)
    for r in v["regions"][3:]:
        r["seed_from"] = "us-east-1"


BAD = {
    "a member that is not a region": _quorum(members=["us-east-1", "us-west-2", "xx-east-9"]),
    "a member list of four writers": _then(lambda v: v["regions"].append(dict(EXTRA[0])),
                                           _quorum(members=["us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1"])),
    "an unknown region among four writers": _then(lambda v: v["regions"].append(dict(EXTRA[0])),
                                                  _quorum(members=["us-east-1", "us-west-2", "xx-east-9"])),
    "growing to five, a typo in next_members": _then(_grow, _quorum(next_members=["us-east-1", "us-west-2", "eu-west-1",
                                                                                  "ap-northeast-1", "sa-east-9"])),
    "an empty next_members": _quorum(next_members=[]),
    "two members": _quorum(members=["us-east-1", "us-west-2"]),
    "one member while others write": _quorum(members=["us-east-1"]),
    "stale_after too short": _quorum(stale_after_seconds=1),
    "lease too short": _quorum(lease_seconds=5),
    "two regions seeding from each other": lambda v: (v["regions"][1].update(seed_from="eu-west-1"),
                                                      v["regions"][2].update(seed_from="us-west-2")),
}


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key.split(":", 1)[1])
    cur: Any = values
    for p in parts[:-1]:
        cur = cur[int(p[1:-1])] if p.startswith("[") else cur.setdefault(p, {})
    last = parts[-1]
    if last.startswith("["):
        cur[int(last[1:-1])] = value
    else:
        cur[last] = value


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_quorum_or_seeding_error_suggests_only_a_value_the_validator_accepts(case: str):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-b", BAD[case])
    suggested = 0
    for key, message in info.value.problems:
        m = re.search(r"e\.g\. (\w+): (\[[^\]]*\]|[^\s,;()]+)", message)
        if m is None:
            continue
        suggested += 1
        value = yaml.safe_load(m.group(2).replace("'", '"'))

        def follow(v: dict[str, Any], key: str = key, value: Any = value) -> None:
            BAD[case](v)
            _set(v, key, value)

        try:
            config_variant("phase-b", follow)
        except ConfigError as again:
            still = [msg for k, msg in again.problems if k == key]
            assert still == [], f"{key}: the fix it gives ({m.group(0)}) is refused too: {still}"
    assert suggested or case == "an empty next_members", "each of these errors names a fix"


# --- repository hygiene -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["policies/venv/bin/python", "out.json", "outputs.json", "prod.outputs.json",
                                  "fraiseql-transition.json", "fraiseql-adopt.json", "fraiseql-adopt.json.tmp"])
def test_git_ignores_what_the_tools_leave_behind(path: str):
    out = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO, capture_output=True, timeout=30)
    assert out.returncode == 0, f"{path} would be committed by `git add -A`"


def test_the_project_has_a_license_and_declares_it():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text and "TERMS AND CONDITIONS" in text
    import tomllib

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
