"""`python -m infra diff --from A --to B`: what a `pulumi up` from one stack file to the next would do.

It plans both under one stack name, lists what is created, updated, replaced and deleted, refuses
(exit 1) when a protected resource would be replaced, deleted or unprotected, and gives the monthly
cost change line by line.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from infra.__main__ import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION, diff
from infra.diff import CREATE, DELETE, REPLACE, UPDATE, diff_files
from infra.paths import REPO

EXAMPLES = REPO / "examples"


def variant(tmp_path: Path, base: str, change: Callable[[dict[str, Any]], None], name: str = "variant") -> Path:
    doc = yaml.safe_load((REPO / base).read_text())
    change(doc["config"])
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(before: Path | str, after: Path | str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = diff(str(before), str(after), stack="prod", as_json=False, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def a_to_b():
    return diff_files(str(EXAMPLES / "2-phase-a.yaml"), str(EXAMPLES / "3-b-seed.yaml"))


def test_the_first_step_of_a_to_b_creates_updates_replaces_and_deletes_but_keeps_every_database(a_to_b):
    kinds = {k: {c.name for c in a_to_b.of_kind(k)} for k in (CREATE, UPDATE, REPLACE, DELETE)}
    assert "fraiseql-db-writer-eu-west-1" in kinds[CREATE]  # the new copy
    assert {"fraiseql-db-writer-us-east-1", "fraiseql-db-writer-us-west-2"} <= kinds[UPDATE]  # same databases, new names by alias
    assert "fraiseql-db-params-us-east-1" in kinds[REPLACE]  # logical-replication parameters: a new group
    assert "fraiseql-dns-api-primary-us-east-1" in kinds[DELETE]  # failover records give way to latency records
    assert a_to_b.refused == []


def test_the_cost_change_is_every_line_that_changes_and_adds_up(a_to_b):
    deltas = a_to_b.cost_deltas()
    assert sum(d.delta for d in deltas) == pytest.approx(a_to_b.cost_after.total - a_to_b.cost_before.total, abs=0.05)
    writer = next(d for d in deltas if d.item == "fraiseql-db-writer-us-east-1")  # matched across its rename
    assert writer.before > 0 and writer.after > writer.before
    assert "db.m6g.xlarge" in writer.before_basis and "db.r6g.xlarge" in writer.after_basis
    arc = next(d for d in deltas if d.item == "fraiseql-quorum-arc-cluster")
    assert arc.before == 0 and arc.after == pytest.approx(2.5 * 730)


def test_the_command_prints_the_changes_and_the_cost_and_exits_0():
    code, out, _ = run(EXAMPLES / "2-phase-a.yaml", EXAMPLES / "3-b-seed.yaml")
    assert code == EXIT_OK
    for section in ("created:", "updated:", "replaced:", "deleted:"):
        assert section in out
    assert re.search(r"monthly cost: [\d,]+\.\d\d -> [\d,]+\.\d\d \(\+[\d,]+\.\d\d USD/month\)", out)
    assert "fraiseql-db-writer-eu-west-1" in out and "no protected resource is replaced or deleted" in out


def test_a_create_only_change_to_the_primary_is_refused(tmp_path):
    renamed = variant(tmp_path, "Pulumi.phase-a.yaml", lambda c: c["fraiseql:database"].update(db_name="fraiseql2"))
    code, out, _ = run(REPO / "Pulumi.phase-a.yaml", renamed)
    assert code == EXIT_VIOLATION
    assert "REFUSED" in out and "fraiseql-db-primary-us-east-1" in out and "dbName" in out


def test_moving_the_standby_to_another_region_deletes_a_protected_database_and_is_refused(tmp_path):
    def move(c: dict[str, Any]) -> None:
        c["fraiseql:regions"][1].update(name="us-east-2")

    moved = variant(tmp_path, "Pulumi.phase-a.yaml", move)
    result = diff_files(str(REPO / "Pulumi.phase-a.yaml"), str(moved))
    refused = {c.name: c.kind for c in result.refused}
    assert refused["fraiseql-db-replica-us-west-2"] == DELETE and refused["fraiseql-db-kms-us-west-2"] == DELETE
    assert "fraiseql-db-replica-us-east-2" in {c.name for c in result.of_kind(CREATE)}


def test_a_change_that_keeps_every_resource_is_an_update_only_and_ignore_changes_is_honoured(tmp_path):
    bigger = variant(tmp_path, "Pulumi.phase-a.yaml", lambda c: c["fraiseql:app"].update(desired_count=3, max_count=6))
    result = diff_files(str(REPO / "Pulumi.phase-a.yaml"), str(bigger))
    # The services' desiredCount belongs to autoscaling (ignore_changes): only the scaling targets' floor moves.
    assert {(c.kind, c.name, c.properties) for c in result.changes} == {
        (UPDATE, "fraiseql-app-us-east-1-scaling-target", ("minCapacity",)),
        (UPDATE, "fraiseql-app-us-west-2-scaling-target", ("minCapacity",)),
    }
    deltas = result.cost_deltas()
    assert {d.item for d in deltas} == {"fraiseql-app-us-east-1-service", "fraiseql-app-us-west-2-service"}
    assert all(d.after == pytest.approx(d.before * 1.5, abs=0.02) for d in deltas)


def test_an_invalid_stack_file_is_exit_2_with_the_key(tmp_path):
    bad = variant(tmp_path, "Pulumi.phase-a.yaml", lambda c: c["fraiseql:database"].update(backup_retention_days=1))
    code, _, err = run(REPO / "Pulumi.phase-a.yaml", bad)
    assert code == EXIT_INVALID and "database.backup_retention_days" in err


def test_skipping_the_budget_of_phase_b_shows_the_refusal_of_the_pack(tmp_path):
    """The first `pulumi up` of A -> B needs phase B's budget: with phase A's, the pack refuses it."""
    tight = variant(tmp_path, "examples/3-b-seed.yaml", lambda c: c["fraiseql:budget"].update(monthly_usd=3450))
    code, out, _ = run(EXAMPLES / "2-phase-a.yaml", tight)
    assert code == EXIT_OK  # no protected resource is lost ...
    assert "the policy pack refuses the target" in out and "monthly-budget" in out  # ... but the preview would stop
