"""The offline plan command: the README's main job, with no credentials and no Pulumi CLI."""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
from pathlib import Path

import yaml

from infra.__main__ import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION, plan
from infra.synth import REPO


def run_plan(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ns = list(args)
    stack = ns[ns.index("--stack") + 1]
    cfg = Path(ns[ns.index("--config-file") + 1]) if "--config-file" in ns else None
    code = plan(stack, "--json" in ns, cfg, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_plan_groups_resources_by_region_and_component():
    code, out, _ = run_plan("--stack", "phase-a")
    assert code == EXIT_OK
    assert "us-east-1  (" in out and "us-west-2  (" in out and "global  (" in out
    assert "StreamingReplication fraiseql-db" in out
    assert "aws:rds/instance:Instance" in out
    assert "protected (pulumi protect): " in out and "fraiseql-db-primary-us-east-1" in out


def test_plan_json_counts_match_the_resource_list():
    code, out, _ = run_plan("--stack", "phase-a", "--json")
    doc = json.loads(out)
    assert code == EXIT_OK
    assert doc["total"] == len(doc["resources"])
    grouped = sum(n for comps in doc["groups"].values() for types in comps.values() for n in types.values())
    assert grouped == doc["total"]
    types = {r["type"] for r in doc["resources"]}
    for required in (
        "aws:ec2/vpc:Vpc",
        "aws:ec2/natGateway:NatGateway",
        "aws:lb/loadBalancer:LoadBalancer",
        "aws:ecs/service:Service",
        "aws:rds/instance:Instance",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:route53/healthCheck:HealthCheck",
        "aws:route53/record:Record",
        "aws:budgets/budget:Budget",
    ):
        assert required in types


def test_plan_on_bad_config_exits_non_zero_with_the_message(tmp_path):
    doc = yaml.safe_load((REPO / "Pulumi.phase-a.yaml").read_text())
    doc["config"]["fraiseql:regions"][1]["name"] = "us-moon-1"
    bad = tmp_path / "Pulumi.phase-a.yaml"
    bad.write_text(yaml.safe_dump(doc))
    code, out, err = run_plan("--stack", "phase-a", "--config-file", str(bad))
    assert code == EXIT_INVALID
    assert out == ""
    assert "fraiseql:regions[1].name: unknown AWS region 'us-moon-1'" in err


def test_unknown_stack_lists_the_known_ones():
    code, _, err = run_plan("--stack", "phase-z")
    assert code == EXIT_INVALID and "phase-a" in err


def test_module_entry_point_runs_in_a_fresh_interpreter():
    proc = subprocess.run(
        [sys.executable, "-m", "infra", "plan", "--stack", "phase-a", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["phase"] == "a"


def _variant_file(tmp_path, change) -> Path:
    doc = yaml.safe_load((REPO / "Pulumi.phase-a.yaml").read_text())
    change(doc["config"])
    path = tmp_path / "Pulumi.phase-a.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_plan_prints_cost_table_within_budget_and_no_mandatory_violation():
    code, out, _ = run_plan("--stack", "phase-a")
    assert code == EXIT_OK
    assert "monthly cost estimate:" in out and "budget" in out and "3,450.00" in out
    assert "policy pack: 0 mandatory violation(s)" in out
    assert "SLO floors" in out and "RTO: target 300 s vs floor 150 s" in out


def test_plan_fails_on_a_100_dollar_budget_naming_the_cause(tmp_path):
    path = _variant_file(tmp_path, lambda c: c["fraiseql:budget"].update(monthly_usd=100))
    code, out, _ = run_plan("--stack", "phase-a", "--config-file", str(path))
    assert code == EXIT_VIOLATION
    assert "[mandatory] monthly-budget: estimated $" in out and "exceeds the $100.00 budget" in out


def test_a_lag_alarm_slower_than_half_the_rpo_is_refused_before_any_resource(tmp_path):
    # The pack's replica-lag-alarm rule would reject it after planning; validation says it first, by key.
    path = _variant_file(tmp_path, lambda c: c["fraiseql:slo"].update(lag_alarm_seconds=45))
    code, out, err = run_plan("--stack", "phase-a", "--config-file", str(path))
    assert code == EXIT_INVALID and out == ""
    assert "fraiseql:slo.lag_alarm_seconds: 45 s is above the ceiling min(30 s, RPO 60 s / 2) = 30 s" in err


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text("config:\n  fraiseql:phase: a\n   fraiseql:regions: [\n")
    code, _, err = run_plan("--stack", "broken", "--config-file", str(path))
    assert code == EXIT_INVALID
    assert f"{path}:3:" in err and "not valid YAML" in err and "fraiseql:phase: a" in err


HANG_PROGRAM = """
import sys
from infra import common, program
from infra.__main__ import main

def broken():
    # Region stacks asking for more AZs than us-west-2 has, past validation: the AZ lookup fails
    # inside outputs, Pulumi re-raises that error as its own cause, and plan used to loop forever.
    cfg = program.read_stack_config()
    cfg = cfg.model_copy(update={"network": cfg.network.model_copy(update={"az_count": 6})})
    common.region_stacks(cfg, "phase-a")
    return {}

program.run = broken
sys.exit(main(["plan", "--stack", "phase-a"]))
"""


def test_plan_exits_promptly_on_an_error_raised_inside_an_output():
    # The timeout only catches the old endless loop; a plan on a loaded machine may take a minute.
    done = subprocess.run([sys.executable, "-c", HANG_PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode in (1, 2)
    assert "plan failed: the program raised" in done.stderr


def test_config_problem_stops_on_an_exception_that_is_its_own_cause():
    from infra.__main__ import _config_problem

    e = RuntimeError("boom")
    e.__cause__ = e
    assert _config_problem(e) is None


def test_plan_json_carries_cost_slo_and_violations():
    code, out, _ = run_plan("--stack", "phase-a", "--json")
    doc = json.loads(out)
    assert doc["cost"]["budget_usd"] == 3450 and 0 < doc["cost"]["total_usd"] < 3450
    assert {b["name"] for b in doc["slo"]} == {"RTO", "RPO", "latency p95 (miss)"}
    assert all(v["level"] != "mandatory" for v in doc["violations"])


def test_plan_leaves_the_collector_as_it_found_it(tmp_path):
    """plan() raises the GC thresholds while it runs; callers in the same process (tests, benches) get theirs back."""
    bad = _variant_file(tmp_path, lambda c: c["fraiseql:regions"][1].update(name="us-moon-1"))
    before = gc.get_threshold(), gc.get_freeze_count()
    for stack, cfg in (("phase-a", None), ("phase-a", bad)):
        run_plan("--stack", stack, *(["--config-file", str(cfg)] if cfg else []))
        assert (gc.get_threshold(), gc.get_freeze_count()) == before
