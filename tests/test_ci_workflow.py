"""The pull-request workflow cannot run here; check the jobs and inputs it relies on."""

from __future__ import annotations

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


def test_offline_job_runs_the_readme_test_command_and_plans_every_stack():
    steps = load()["jobs"]["offline"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "scripts/test.sh" in runs
    assert "python -m infra plan --stack" in runs and "Pulumi.*.yaml" in runs
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_preview_job_uses_pulumi_actions_with_the_policy_pack():
    job = load()["jobs"]["preview"]
    assert job["needs"] == "offline"
    action = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@"))
    w = action["with"]
    assert w["command"] == "preview" and w["policyPacks"] == "policies" and w["comment-on-pr"] is True
    assert w["stack-name"] == "${{ matrix.stack }}"
    assert "PULUMI_ACCESS_TOKEN" in action["env"]


def test_preview_matrix_covers_every_stack_file():
    stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))
    assert sorted(load()["jobs"]["preview"]["strategy"]["matrix"]["stack"]) == stacks


def test_policy_pack_layout_is_what_the_cli_expects():
    pack = REPO / "policies"
    meta = yaml.safe_load((pack / "PulumiPolicy.yaml").read_text())
    assert meta["runtime"]["name"] == "python"
    assert (pack / "__main__.py").exists() and (pack / "requirements.txt").exists()


def test_ci_runs_the_python_of_the_lambda_runtime():
    # The bootstrap and fence-agent Lambdas run `replication/` on this Python; CI tests it on the same.
    from components import _database, quorum

    version = (REPO / ".python-version").read_text().strip()
    assert _database.LAMBDA_RUNTIME == quorum.LAMBDA_RUNTIME == f"python{version}"
    assert f"--python-version {version}" in (REPO / "scripts" / "build-lambda-deps.sh").read_text()
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
    aws = next(s for s in job["steps"] if s["uses"].startswith("aws-actions/configure-aws-credentials@"))
    assert set(aws["with"]) == {"role-to-assume", "aws-region"}  # OIDC: no access keys
    assert "id-token" not in doc["jobs"]["offline"].get("permissions", {})


def test_no_checkout_persists_its_token():
    for job in load()["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_zizmor_reports_nothing_above_low_and_the_suite_runs_it():
    import subprocess
    import sys
    from pathlib import Path

    zizmor = Path(sys.executable).with_name("zizmor")
    res = subprocess.run([str(zizmor), "--offline", "--min-severity", "medium", "--format", "plain",
                          str(WORKFLOW.parent)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "zizmor\" --offline --min-severity medium .github/workflows" in (REPO / "scripts" / "test.sh").read_text()
