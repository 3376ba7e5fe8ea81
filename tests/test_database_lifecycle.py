"""Issue 20, items 11, 12 and 19: what RDS and Secrets Manager refuse when databases change or go.

- A read replica is deleted without a final snapshot: RDS refuses `FinalDBSnapshotIdentifier` for one.
- A source database's final snapshot id is unique per incarnation of the stack: with a fixed id, the
  second deletion of a re-created stack fails (the first final snapshot holds the id).
- Secrets with generated passwords have no recovery window: a window keeps their fixed names for
  7 to 30 days after a destroy, and re-creating the stack then fails.
- Class, storage and Multi-AZ changes (A -> B) apply during the `up`, not in the maintenance window.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import boto3
import pytest
from moto import mock_aws

import infra.mocks
from core.config import load_config
from infra.synth import Synthesis, synthesize
from tests.conftest import stack_values, synth_variant
from tests.helpers import one

RDS = "aws:rds/instance:Instance"
SECRET = "aws:secretsmanager/secret:Secret"
# RDS snapshot identifiers: a letter first, letters, digits and single hyphens, no hyphen last, <= 255.
SNAPSHOT_ID = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*(?<!-)$")


def sources(syn: Synthesis) -> list:
    return [r for r in syn.of_type(RDS) if "replicateSourceDb" not in r.inputs]


def replicas(syn: Synthesis) -> list:
    return [r for r in syn.of_type(RDS) if "replicateSourceDb" in r.inputs]


@pytest.fixture(scope="module")
def seeding() -> Synthesis:
    """Step 1 of A -> B: us-west-2 and eu-west-1 join as read replicas of us-east-1."""
    def change(v: dict[str, Any]) -> None:
        for rc in v["regions"][1:]:
            rc["seed_from"] = "us-east-1"
    return synth_variant("phase-b", change)


# --- item 11: replicas --------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["phase_a", "seeding"])
def test_read_replicas_are_deleted_without_a_final_snapshot(request, which):
    syn = request.getfixturevalue(which)
    assert replicas(syn)
    for db in replicas(syn):
        assert db.inputs["skipFinalSnapshot"] is True, db.name
        assert "finalSnapshotIdentifier" not in db.inputs, db.name


def test_a_promoted_replica_gets_a_final_snapshot(seeding, phase_b):
    promoted = phase_b  # the same stack after seed_from is removed
    for before in replicas(seeding):
        after = one(promoted, RDS, before.name)
        assert after.urn == before.urn
        assert after.inputs["skipFinalSnapshot"] is False and SNAPSHOT_ID.match(after.inputs["finalSnapshotIdentifier"])


# --- item 19: final snapshots and secrets across destroy and re-create ----------------------------

@pytest.mark.parametrize("stack", ["phase_a", "phase_b"])
def test_source_databases_take_a_final_snapshot_with_a_valid_id(request, stack):
    dbs = sources(request.getfixturevalue(stack))
    assert dbs
    ids = [db.inputs["finalSnapshotIdentifier"] for db in dbs]
    assert all(db.inputs["skipFinalSnapshot"] is False for db in dbs)
    assert all(SNAPSHOT_ID.match(i) and len(i) <= 255 for i in ids), ids
    assert len(set(ids)) == len(ids)


def _incarnation(monkeypatch, n: int) -> Synthesis:
    """The stack as created for the n-th time: AWS gives every new KMS key a new id."""
    class NewKeys(infra.mocks.PlanMocks):
        def new_resource(self, args):
            rid, out = super().new_resource(args)
            if args.typ == "aws:kms/key:Key":
                key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"incarnation-{n}/{args.name}"))
                out.update(keyId=key_id, arn=out["arn"].rsplit("/", 1)[0] + "/" + key_id)
            return rid, out

    monkeypatch.setattr(infra.mocks, "PlanMocks", NewKeys)
    return synthesize("phase-a")


def test_a_recreated_stack_can_be_deleted_again(monkeypatch):
    """Create, destroy (final snapshot), re-create, destroy again: RDS refuses a snapshot id it has."""
    first, second = _incarnation(monkeypatch, 1), _incarnation(monkeypatch, 2)
    with mock_aws():
        for syn in (first, second):
            for db in sources(syn):
                rds = boto3.client("rds", region_name=db.region)
                rds.create_db_instance(DBInstanceIdentifier=db.name, Engine="postgres", EngineVersion=db.inputs["engineVersion"],
                                       DBInstanceClass=db.inputs["instanceClass"], AllocatedStorage=int(db.inputs["allocatedStorage"]),
                                       MasterUsername="fraiseql_admin", MasterUserPassword="not-a-real-one")
                rds.delete_db_instance(DBInstanceIdentifier=db.name, SkipFinalSnapshot=db.inputs["skipFinalSnapshot"],
                                       FinalDBSnapshotIdentifier=db.inputs["finalSnapshotIdentifier"])


def _delete_as_the_provider_does(sm: Any, arn: str, window: int) -> None:
    # terraform-provider-aws: recovery_window_in_days = 0 deletes with ForceDeleteWithoutRecovery.
    if window == 0:
        sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    else:
        sm.delete_secret(SecretId=arn, RecoveryWindowInDays=window)


@pytest.mark.parametrize("stack", ["phase_a", "phase_b"])
def test_secrets_can_be_recreated_right_after_a_destroy(request, stack):
    secrets = request.getfixturevalue(stack).of_type(SECRET)
    assert secrets
    with mock_aws():
        for _ in range(2):  # create, destroy, create again
            created = []
            for s in secrets:
                sm = boto3.client("secretsmanager", region_name=s.region)
                created.append((sm, sm.create_secret(Name=s.inputs["name"])["ARN"], s.inputs["recoveryWindowInDays"]))
            for sm, arn, window in created:
                _delete_as_the_provider_does(sm, arn, window)


# --- item 12: apply_immediately -------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["phase_a", "phase_b"])
def test_database_changes_apply_during_the_up(request, stack):
    dbs = request.getfixturevalue(stack).of_type(RDS)
    assert dbs and all(db.inputs["applyImmediately"] is True for db in dbs)


def test_the_maintenance_window_can_be_chosen_instead():
    assert load_config(stack_values("phase-a"), "phase-a").database.apply_immediately is True
    syn = synth_variant("phase-a", lambda v: v["database"].update(apply_immediately=False))
    assert all(db.inputs["applyImmediately"] is False for db in syn.of_type(RDS))
