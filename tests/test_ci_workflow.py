"""The pull-request workflow cannot run here; check the jobs and inputs it relies on."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from infra.synth import REPO

WORKFLOW = REPO / ".github" / "workflows" / "pull-request.yml"


def load():
    doc = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def test_runs_on_pull_requests():
    assert "pull_request" in load()["on"]


# --- the scripts, run in a copy of the repository with every tool they call replaced by a recorder ---

RECORDER = r"""#!/usr/bin/env bash
printf '%s\n' "$(basename "$0") $*" >> "$CALLS"
if [ "$(basename "$0")" = curl ]; then  # build-lambda-deps.sh fetches the RDS CA bundle with -o FILE
  while [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo "-----BEGIN CERTIFICATE-----" > "$2"; fi; shift; done
fi
"""
#: What scripts/python.sh leaves behind: the virtualenv's tools (here recorders) and its Python's version.
PYTHON_SH = 'PY_VERSION="$(tr -d \'[:space:]\' < .python-version)"; VENV=.venv\n'
RECORDED = ("python", "ruff", "mypy", "zizmor")


def _sandbox(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """A copy of what the CI scripts read, with recorders for the tools they run (the virtualenv's, npm,
    curl, python3, pulumi): a script runs as on a runner and leaves the list of commands it ran."""
    root = tmp_path / "repo"
    for item in (".ci", "scripts", ".github", ".python-version", "requirements.lock", "tests/iam/package.json",
                 "tests/iam/package-lock.json", *[p.name for p in REPO.glob("Pulumi.*.yaml")]):
        src, dst = REPO / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    (root / "scripts" / "python.sh").write_text(PYTHON_SH)
    bin_dir = tmp_path / "bin"
    for tool in [*(root / ".venv" / "bin" / t for t in RECORDED), *(bin_dir / t for t in ("npm", "curl", "python3", "pulumi"))]:
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text(RECORDER)
        tool.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls)}
    env.pop("BUILD_DIR", None)
    env.pop("FRAISEQL_STAGE_TIMES", None)  # a timed run of the suite must not time the sandbox's runs
    return root, calls, env


def _run(tmp_path, command: list[str]) -> list[str]:
    """Run `command` at the root of a fresh sandbox: the commands it ran, in order."""
    root, calls, env = _sandbox(tmp_path)
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return calls.read_text().splitlines()


def _run_script(tmp_path, script: str) -> list[str]:
    return _run(tmp_path, ["bash", script])


def _offline_job(tmp_path) -> list[str]:
    """Every `run` step of the offline job, in order, as the runner runs them (bash -e, from the checkout)."""
    steps = [s["run"] for s in load()["jobs"]["offline"]["steps"] if "run" in s]
    return _run(tmp_path, ["bash", "-e", "-c", "\n".join(f"( {run}\n)" for run in steps)])


def _tools(calls: list[str]) -> list[str]:
    return [c.split()[0] for c in calls]


def test_the_test_command_runs_the_linters_zizmor_and_the_suite(tmp_path):
    calls = _run(tmp_path, ["bash", "scripts/test.sh", "--all"])
    assert "ruff check ." in calls and "mypy" in _tools(calls)
    assert "zizmor --offline --min-severity medium .github/workflows" in calls  # nothing above low severity
    assert "npm ci --no-audit --no-fund --loglevel=error" in calls  # the IAM simulator's locked packages
    assert any(c.startswith("python -m pytest") for c in calls)


def test_the_offline_job_runs_what_ci_runs_then_plans_every_stack_file(tmp_path):
    job = _offline_job(tmp_path / "job")
    plans = [c for c in job if c.startswith("python -m infra plan")]
    stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))
    assert sorted(plans) == [f"python -m infra plan --stack {s}" for s in stacks]
    ci = _run_script(tmp_path / "ci", ".ci/run")
    assert _tools([c for c in job if c not in plans]) == _tools(ci) and "python" in _tools(ci)


def test_preview_job_uses_pulumi_actions_with_the_policy_pack():
    job = load()["jobs"]["preview"]
    assert job["needs"] == "offline"
    action = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")
                  and s.get("with", {}).get("command"))
    w = action["with"]
    assert w["command"] == "preview" and w["policyPacks"] == "policies" and w["comment-on-pr"] is True
    assert w["stack-name"] == "${{ matrix.stack }}"
    assert "PULUMI_ACCESS_TOKEN" in action["env"]


def matrix() -> list[dict]:
    return load()["jobs"]["preview"]["strategy"]["matrix"]["include"]


def test_preview_matrix_covers_every_stack_file():
    stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))
    assert sorted(m["stack"] for m in matrix()) == stacks


# --- issue 20: a preview job that can pass ------------------------------------------------------

def _steps(job: str = "preview") -> list[dict]:
    return load()["jobs"][job]["steps"]


def _index(pred) -> int:
    return next(i for i, s in enumerate(_steps()) if pred(s))


def test_the_layer_the_program_deploys_is_built_before_the_preview(tmp_path):
    from infra.paths import LAMBDA_DEPS

    build = _index(lambda s: s.get("run") == "scripts/build-lambda-deps.sh")
    preview = _index(lambda s: s.get("with", {}).get("command") == "preview")
    assert build < preview
    # by default the script writes the very file the program hands Lambda
    calls = _run_script(tmp_path, "scripts/build-lambda-deps.sh")
    archive = next(c for c in calls if c.startswith("python3 -m infra.lambda_archive"))
    assert archive.split()[-1] == str(LAMBDA_DEPS.relative_to(REPO))


def test_the_cli_is_installed_before_the_stack_is_set_up():
    install = _index(lambda s: str(s.get("uses", "")).startswith("pulumi/actions@") and "command" not in s.get("with", {}))
    setup = _index(lambda s: "scripts/ci-stack.sh" in s.get("run", ""))
    preview = _index(lambda s: s.get("with", {}).get("command") == "preview")
    assert install < setup < preview


def test_each_matrix_entry_sets_exactly_the_secrets_its_phase_needs():
    from core.config import PHASE_SECRETS
    from tests.conftest import stack_values

    for entry in matrix():
        phase = stack_values(entry["stack"])["phase"]
        assert sorted((entry.get("secrets") or "").split()) == sorted(PHASE_SECRETS[phase]), entry["stack"]


FAKE_PULUMI = r"""#!/bin/sh
stdin=""
if [ "$1 $2" = "config set" ]; then stdin="$(cat)"; fi
printf '%s|%s\n' "$*" "$stdin" >> "$PULUMI_CALLS"
"""


def _run_stack_setup(tmp_path, entry: dict, env_values: dict[str, str]):
    import os
    import subprocess

    step = next(s for s in _steps() if "scripts/ci-stack.sh" in s.get("run", ""))
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_PULUMI)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    # the step's environment, with GitHub's expressions replaced by what the runner would put there
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAISEQL_")}
    for name, expr in step["env"].items():
        if expr == "${{ matrix.stack }}":
            env[name] = entry["stack"]
        elif expr == "${{ matrix.secrets }}":
            env[name] = entry.get("secrets") or ""
        else:
            env[name] = env_values.get(expr.removeprefix("${{ secrets.").removesuffix(" }}"), "")
    env.update(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", PULUMI_CALLS=str(calls))
    result = subprocess.run(["bash", "-c", step["run"]], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    return result, [line.split("|", 1) for line in calls.read_text().splitlines()]


def test_the_stack_is_selected_or_created_and_given_its_secrets_through_stdin(tmp_path):
    values = {"FRAISEQL_EDGE_PURGE_TOKEN": "purge-value-0123456789", "FRAISEQL_ORIGIN_AUTH_TOKEN": "origin-value-0123456789"}
    for entry in matrix():
        result, calls = _run_stack_setup(tmp_path, entry, values)
        assert result.returncode == 0, result.stderr
        commands = [c for c, _ in calls]
        assert commands[0] == f"stack select --create {entry['stack']}"
        assert commands.count("install") == 2  # the program and the policy pack
        sets = {c.split()[-1]: stdin for c, stdin in calls if c.startswith("config set")}
        assert sets == {f"fraiseql:{k}": values[f"FRAISEQL_{k.upper()}"] for k in (entry.get("secrets") or "").split()}
        assert all("--secret" in c for c, _ in calls if c.startswith("config set"))
        assert not any(v in c for c, _ in calls for v in values.values())  # never on a command line


def test_a_missing_secret_stops_the_job_before_it_touches_the_stack(tmp_path):
    entry = next(m for m in matrix() if m.get("secrets"))
    result, calls = _run_stack_setup(tmp_path, entry, {"FRAISEQL_EDGE_PURGE_TOKEN": "purge-value-0123456789"})
    assert result.returncode != 0 and "FRAISEQL_ORIGIN_AUTH_TOKEN" in result.stderr
    assert calls == []


def _readme_ci_section() -> str:
    """The continuous integration section of the docs (docs/testing.md: its one home)."""
    text = (REPO / "docs" / "testing.md").read_text()
    return text.split("## Continuous integration", 1)[1].split("\n## ", 1)[0]


def test_the_readme_names_exactly_the_secrets_role_and_environment_the_job_uses():
    import re

    workflow = WORKFLOW.read_text()
    used = set(re.findall(r"\$\{\{ secrets\.([A-Z0-9_]+) \}\}", workflow))
    section = _readme_ci_section()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.M))
    assert used == documented, (used ^ documented)
    assert f"environment `{load()['jobs']['preview']['environment']}`" in section
    assert "environment:preview" in section and "token.actions.githubusercontent.com" in section


def test_policy_pack_layout_is_what_the_cli_expects():
    pack = REPO / "policies"
    meta = yaml.safe_load((pack / "PulumiPolicy.yaml").read_text())
    assert meta["runtime"]["name"] == "python"
    assert (pack / "__main__.py").exists() and (pack / "requirements.txt").exists()


def test_ci_runs_the_python_of_the_lambda_runtime(tmp_path):
    # The bootstrap and fence-agent Lambdas run `replication/` on this Python; CI tests it on the same,
    # and the layer carries packages built for it.
    from components._lambda import LAMBDA_RUNTIME

    version = (REPO / ".python-version").read_text().strip()
    assert LAMBDA_RUNTIME == f"python{version}"
    pip = next(c.split() for c in _run_script(tmp_path, "scripts/build-lambda-deps.sh")
               if c.startswith("python3 -m pip install"))
    assert pip[pip.index("--python-version") + 1] == version
    for job in load()["jobs"].values():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/setup-python@"):
                assert step["with"] == {"python-version-file": ".python-version"}


# --- issue 13, item 8: the workflows' own security --------------------------------------------

def test_every_action_is_pinned_to_a_commit_sha():
    import re

    for job in load()["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_the_preview_job_skips_forks_and_uses_oidc_in_a_reviewed_environment():
    doc = load()
    assert doc["permissions"] == {}  # nothing by default; each job asks for what it uses
    job = doc["jobs"]["preview"]
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert job["permissions"]["id-token"] == "write" and job["permissions"]["contents"] == "read"
    assert job["environment"] == "preview"
    aws = next(s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert set(aws["with"]) == {"role-to-assume", "aws-region"}  # OIDC: no access keys
    assert "id-token" not in doc["jobs"]["offline"].get("permissions", {})


def test_no_checkout_persists_its_token():
    for job in load()["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_zizmor_reports_nothing_above_low():
    # the test command runs it: test_the_test_command_runs_the_linters_zizmor_and_the_suite
    import subprocess
    import sys
    from pathlib import Path

    zizmor = Path(sys.executable).with_name("zizmor")
    res = subprocess.run([str(zizmor), "--offline", "--min-severity", "medium", "--format", "plain",
                          str(WORKFLOW.parent)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
