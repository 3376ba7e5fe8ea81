"""Every Lambda's IAM policy against the AWS calls its real code makes (issue 13 item 6, issue 10).

The bootstrap (both deploy steps, in every region), the rotation function (the four rotation steps,
which run each region's bootstrap through Lambda) and the fence agent (its real handler, for a few
probes) run against the loopback AWS of drills/localaws.py (moto, plus an ARC data plane) and three
real PostgreSQL 18 writers. Every call is recorded under the function that made it, mapped to the
IAM request AWS would authorize (with the KMS request Secrets Manager makes for a secret under a
customer key) and evaluated by a maintained IAM simulator against the policy that function's
component declares (`bootstrap_policy`, `rotation_policy`, `agent_policy`, fed the resources' real
ARNs). A denied call fails the suite, and so does a permission no call needed.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from components._database import bootstrap_policy, rotation_policy
from components.quorum import agent_policy
from drills.localaws import local_aws
from drills.mesh import MESH_SETTINGS
from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from tests.iam.evaluator import ACCOUNT, Request, evaluate, recording, requests_for, unused_statements

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
FIRST = REGIONS[0]
REPL = "fraiseql/test/replication"
LOG_GROUP = f"arn:aws:logs:{FIRST}:{ACCOUNT}:log-group:/aws/lambda/fraiseql-test-replication-rotation"



def fn_arn(kind: str, region: str) -> str:
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:fraiseql-test-{kind}-{region}"


def _policy():
    return {"default": "lww", "replicated": list(POLICY.replicated),
            "tables": [{"table": t.table, "strategy": t.strategy, "columns": list(t.columns)} for t in POLICY.tables]}


@pytest.fixture(scope="module")
def world() -> Iterator[dict]:
    saved = dict(os.environ)
    with cluster(REGIONS, settings=MESH_SETTINGS) as pg, local_aws(REGIONS) as aws:
        os.environ.update(aws.env())
        os.environ["AWS_DEFAULT_REGION"] = FIRST
        try:
            for n in pg.values():
                for stmt in APP_SCHEMA:
                    n.execute(stmt)
            keys = {r: aws.client("kms", r).create_key()["KeyMetadata"]["Arn"] for r in REGIONS}
            arns: dict[str, dict[str, str]] = {r: {} for r in REGIONS}
            for r in REGIONS:
                sm = aws.client("secretsmanager", r)
                arns[r]["master"] = sm.create_secret(Name=f"rds!db-writer-{r}", KmsKeyId=keys[r], SecretString=json.dumps(
                    {"username": "postgres", "password": "unused"}))["ARN"]
                for short in ("app", "agent"):
                    arns[r][short] = sm.create_secret(Name=f"fraiseql/test/{r}/{short}", KmsKeyId=keys[r])["ARN"]
            repl_arn = aws.client("secretsmanager", FIRST).create_secret(
                Name=REPL, KmsKeyId=keys[FIRST],
                AddReplicaRegions=[{"Region": r, "KmsKeyId": keys[r]} for r in REGIONS[1:]])["ARN"]
            yield {"pg": pg, "aws": aws, "keys": keys, "arns": arns, "repl_arn": repl_arn}
        finally:
            os.environ.clear()
            os.environ.update(saved)


def base_event(w, region):
    return {"node": region, "sslmode": "disable", "policy": _policy(), "wait_s": 30,
            "nodes": [{"name": r, "region": r, "host": "127.0.0.1", "port": w["pg"][r].port, "dbname": "postgres",
                       "user": "fraiseql_repl"} for r in REGIONS],
            "master_secret_arn": w["arns"][region]["master"], "replication_secret": REPL,
            "create_replication_secret": region == FIRST,
            "role_secrets": {"fraiseql_app": w["arns"][region]["app"], "fraiseql_agent": w["arns"][region]["agent"]}}


def policies(w) -> dict[str, list[dict]]:
    out = {}
    for r in REGIONS:
        a = w["arns"][r]
        out[f"bootstrap-{r}"] = [json.loads(bootstrap_policy(
            r, master_secret_arn=a["master"], replication_secret_arn=w["repl_arn"], kms_key_arn=w["keys"][r],
            role_secret_arns=[a["app"], a["agent"]], writes_replication_secret=r == FIRST))]
        res = w["aws"].regions[r]
        out[f"agent-{r}"] = [json.loads(agent_policy(
            r, secret_arn=a["agent"], kms_key_arn=w["keys"][r], routing_control_arn=res.routing_control_arn,
            fence_rule_arn=res.fence_rule_arn))]
    out["rotation"] = [json.loads(rotation_policy(FIRST, secret_arn=w["repl_arn"], kms_key_arn=w["keys"][FIRST],
                                                  log_group_arn=LOG_GROUP,
                                                  function_arns=[fn_arn("bootstrap", r) for r in REGIONS]))]
    return out


def run_bootstrap(rec, w, region, event):
    """The bootstrap Lambda in `region`: its environment, its event, its identity."""
    from replication.bootstrap import handler

    saved = dict(os.environ)
    # what the Lambda runtime sets: the function's own region
    os.environ.update(FRAISEQL_BOOTSTRAP=json.dumps(base_event(w, region)), AWS_REGION=region, AWS_DEFAULT_REGION=region)
    try:
        with rec.acting_as(f"bootstrap-{region}"):
            return handler(event, None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def begin_rotation(secret_name: str) -> str:
    """Secrets Manager's own part of RotateSecret: a version labelled AWSPENDING, no value yet."""
    from moto.secretsmanager.models import secretsmanager_backends

    token = str(uuid.uuid4())
    secret = secretsmanager_backends[ACCOUNT][FIRST].secrets[secret_name]
    secret.versions[token] = {"createdate": int(time.time()), "version_id": token, "version_stages": ["AWSPENDING"]}
    secret.rotation_requested = secret.rotation_enabled = True
    return token


def run_agent(rec, w, region):
    """The fence agent's real Lambda handler for a few probes, configured as the stack configures it."""
    from replication import agent

    res = w["aws"].regions[region]
    env = agent.Settings(
        region=region, regions=REGIONS, probe_s=0.3, stale_after_s=1, lease_s=1, unfence_after=1,
        db_host="127.0.0.1", db_port=w["pg"][region].port, db_name="postgres", db_sslmode="disable",
        db_secret_arn=w["arns"][region]["agent"], arc_endpoints=tuple(w["aws"].arc_endpoints()),
        routing_control_arn=res.routing_control_arn, fence_rule_arn=res.fence_rule_arn, health_path="/health",
        metrics_every_s=0.3, stop_margin_s=0.5,
    ).to_env()
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with rec.acting_as(f"agent-{region}"):
            return agent.handler({}, agent.LocalContext(deadline=time.monotonic() + 3.0))
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def recorded(world):
    from replication import rotation

    w = world
    with recording() as rec:
        for step in ("local", "subscribe"):
            for r in REGIONS:
                out = run_bootstrap(rec, w, r, {**base_event(w, r), "step": step})
                assert out["ok"], out

        def invoke(params, region):
            r = next(r for r in REGIONS if params["FunctionName"] == fn_arn("bootstrap", r))
            try:
                body, error = run_bootstrap(rec, w, r, json.loads(params["Payload"])), None
            except Exception as e:  # noqa: BLE001 - reported like Lambda reports a function error
                body, error = {"errorMessage": str(e)}, "Unhandled"
            return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(body).encode()),
                    **({"FunctionError": error} if error else {})}

        rec.intercept[("lambda", "Invoke")] = invoke
        token = begin_rotation(REPL)
        os.environ["FRAISEQL_BOOTSTRAP_FUNCTIONS"] = json.dumps({r: fn_arn("bootstrap", r) for r in REGIONS})
        try:
            for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
                with rec.acting_as("rotation"):
                    rotation.handler({"SecretId": REPL, "ClientRequestToken": token, "Step": step}, None)
        finally:
            os.environ.pop("FRAISEQL_BOOTSTRAP_FUNCTIONS")
        for r in REGIONS:
            run_agent(rec, w, r)
    return rec.calls, requests_for(rec.calls, w["aws"].client, {(REPL, r): w["keys"][r] for r in REGIONS[1:]})


def test_every_call_each_function_makes_is_allowed_by_its_policy(world, recorded):
    calls, requests = recorded
    verdicts = evaluate(sorted(set(requests), key=Request.describe), policies(world))
    denied = [f"{r.describe()}: {v}" for r, v in verdicts if v != "Allowed"]
    assert denied == []
    # the scenario exercised every function and every kind of call
    made = {(c.principal.split("-")[0], c.service, c.operation) for c in calls}
    assert {("bootstrap", "secretsmanager", "GetSecretValue"), ("bootstrap", "secretsmanager", "PutSecretValue"),
            ("rotation", "secretsmanager", "UpdateSecretVersionStage"), ("rotation", "lambda", "Invoke"),
            ("agent", "monitoring", "PutMetricData"), ("agent", "elasticloadbalancing", "ModifyRule"),
            ("agent", "route53-recovery-cluster", "GetRoutingControlState")} <= made
    namespaces = {dict(r.context).get("cloudwatch:namespace") for r in requests if r.action == "cloudwatch:PutMetricData"}
    assert namespaces == {"FraiseQL/Quorum", "FraiseQL/Replication"}


def test_no_policy_allows_what_no_call_needed(world, recorded):
    _, requests = recorded
    assert unused_statements(requests, policies(world)) == []


def test_each_region_reads_only_its_own_region(recorded):
    _, requests = recorded
    for r in requests:
        region = r.principal.split("-", 1)[1] if "-" in r.principal else FIRST
        if r.action.startswith(("secretsmanager:", "kms:")):
            assert f":{region}:" in r.resource, r.describe()


def test_the_checker_catches_a_missing_permission(world, recorded):
    """The issue-10 bug: metrics allowed only in FraiseQL/Quorum. The replication lag call is denied."""
    _, requests = recorded
    pols = policies(world)
    for st in pols["agent-us-east-1"][0]["Statement"]:
        if st["Action"] == "cloudwatch:PutMetricData":
            st["Condition"]["StringEquals"]["cloudwatch:namespace"] = ["FraiseQL/Quorum"]
    verdicts = evaluate([r for r in set(requests) if r.principal == "agent-us-east-1"], pols)
    denied = [r for r, v in verdicts if v != "Allowed"]
    assert [dict(r.context)["cloudwatch:namespace"] for r in denied] == ["FraiseQL/Replication"]


def test_the_checker_catches_a_key_of_another_region(world, recorded):
    _, requests = recorded
    pols = policies(world)
    st = next(s for s in pols["bootstrap-us-west-2"][0]["Statement"] if s["Sid"] == "UseOwnKeyThroughSecretsManager")
    st["Condition"]["StringEquals"]["kms:ViaService"] = "secretsmanager.us-east-1.amazonaws.com"
    verdicts = evaluate([r for r in set(requests) if r.principal == "bootstrap-us-west-2"], pols)
    assert {r.action for r, v in verdicts if v != "Allowed"} == {"kms:Decrypt", "kms:GenerateDataKey"}


def test_the_program_declares_exactly_these_policies():
    """The synthesized stack's role policies are the component functions' output for its ARNs."""
    from infra.synth import synthesize

    syn = synthesize("phase-b")
    by_name = {r.name: r for r in syn.resources}
    for r in REGIONS:
        doc = json.loads(by_name[f"fraiseql-db-bootstrap-policy-{r}"].inputs["policy"])
        master = by_name[f"fraiseql-db-writer-{r}"].outputs["masterUserSecrets"][0]["secretArn"]
        assert doc == json.loads(bootstrap_policy(
            r, master_secret_arn=master, replication_secret_arn=by_name["fraiseql-db-replication-secret"].outputs["arn"],
            kms_key_arn=by_name[f"fraiseql-db-kms-{r}"].outputs["arn"],
            role_secret_arns=[by_name[f"fraiseql-db-{s}-secret-{r}"].outputs["arn"] for s in ("app", "agent")],
            writes_replication_secret=r == FIRST))
        fn = by_name[f"fraiseql-quorum-fence-agent-{r}"]
        assert fn.inputs["environment"]["variables"]["FRAISEQL_DB_SECRET_ARN"] == \
            by_name[f"fraiseql-db-agent-secret-{r}"].outputs["arn"]
    roles = {r.name: r for r in syn.of_type("aws:iam/role:Role")}
    assert "fraiseql-db-bootstrap-role" not in roles  # one role per region and function
    assert {f"fraiseql-db-bootstrap-role-{r}" for r in REGIONS} <= set(roles)
