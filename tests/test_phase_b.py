"""Phase B under mocks: mesh, multi-master writers and their bootstrap, quorum, latency routing, alarms.

Each of the seed's phase B edge cases is answered by something declared here:
- split brain -> ARC safety rule ATLEAST quorum + a fence agent per region (test_quorum_*),
- concurrent writes -> the conflict policy shipped to the bootstrap (test_bootstrap_*),
- stale reads -> every region reads and writes its own writer (test_read_your_writes_*),
- cascade failure -> "quorum reduced" alarms (test_quorum_reduced_alarm_*).
"""

from __future__ import annotations

import json

import pytest

from replication.agent import Settings
from replication.quorum import majority_of, quorum_size
from tests.conftest import synth_variant
from tests.helpers import in_region, one

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
RDS = "aws:rds/instance:Instance"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def test_three_regions_in_a_mesh_of_three_links(phase_b):
    assert sorted(phase_b.outputs["networkLinks"]) == sorted(
        ["eu-west-1--us-east-1", "eu-west-1--us-west-2", "us-east-1--us-west-2"]
    )
    assert len(phase_b.of_type("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")) == 3
    assert len(phase_b.of_type("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter")) == 3


@pytest.mark.parametrize("region", REGIONS)
def test_each_region_routes_to_both_peers_from_app_and_database_tables(phase_b, region):
    cidrs = {"us-east-1": "10.10.0.0/16", "us-west-2": "10.20.0.0/16", "eu-west-1": "10.30.0.0/16"}
    routes = [r for r in in_region(phase_b, "aws:ec2/route:Route", region) if r.inputs.get("vpcPeeringConnectionId")]
    for peer, cidr in cidrs.items():
        if peer == region:
            continue
        tables = {r.inputs["routeTableId"] for r in routes if r.inputs["destinationCidrBlock"] == cidr}
        assert f"fraiseql-{region}-rt-database-id" in tables
        assert {f"fraiseql-{region}-rt-private-{i}-id" for i in range(2)} <= tables


@pytest.mark.parametrize("region", REGIONS)
def test_one_protected_writer_per_region_with_logical_replication(phase_b, region):
    writer = one(phase_b, RDS, f"fraiseql-db-writer-{region}")
    assert writer.region == region and writer.protect
    assert "replicateSourceDb" not in writer.inputs
    assert writer.inputs["storageEncrypted"] and not writer.inputs["publiclyAccessible"]
    params = one(phase_b, "aws:rds/parameterGroup:ParameterGroup", f"fraiseql-db-params-{region}")
    values = {p["name"]: (p["value"], p["applyMethod"]) for p in params.inputs["parameters"]}
    assert values["rds.logical_replication"] == ("1", "pending-reboot")
    assert values["track_commit_timestamp"] == ("1", "pending-reboot")
    assert writer.inputs["parameterGroupName"] == params.outputs["name"]


def _event(syn, region, step="local"):
    inv = one(syn, "aws:lambda/invocation:Invocation", f"fraiseql-db-bootstrap-{step}-{region}")
    return inv, json.loads(inv.inputs["input"])


def test_bootstrap_runs_in_every_region_with_all_writers_and_the_configured_policy(phase_b):
    hosts = {r: one(phase_b, RDS, f"fraiseql-db-writer-{r}").outputs["address"] for r in REGIONS}
    for region in REGIONS:
        inv, event = _event(phase_b, region)
        assert event["node"] == region
        assert {n["name"]: n["host"] for n in event["nodes"]} == hosts
        assert event["policy"]["default"] == "lww"
        strategies = {t["table"]: t["strategy"] for t in event["policy"]["tables"]}
        assert strategies == {"tb_post_stats": "counter", "tb_post_tag": "set", "tb_payment": "app"}
        assert event["policy"]["replicated"] == ["tb_user", "tb_post", "tb_comment"]
        fn = one(phase_b, "aws:lambda/function:Function", f"fraiseql-db-bootstrap-{region}")
        assert inv.inputs["functionName"] == fn.outputs["name"] and fn.region == region
        assert fn.inputs["handler"] == "replication.bootstrap.handler"


def test_bootstrap_waits_for_every_writer_and_the_first_region_creates_the_password(phase_b):
    inv_e1, ev_e1 = _event(phase_b, "us-east-1")
    inv_w2, ev_w2 = _event(phase_b, "us-west-2")
    assert ev_e1["create_replication_secret"] is True and ev_w2["create_replication_secret"] is False
    writer_urns = {one(phase_b, RDS, f"fraiseql-db-writer-{r}").urn for r in REGIONS}
    assert writer_urns <= set(inv_e1.dependencies)
    assert inv_e1.urn in inv_w2.dependencies


def test_every_subscribe_step_waits_for_every_local_step(phase_b):
    local_urns = {_event(phase_b, r)[0].urn for r in REGIONS}
    for r in REGIONS:
        inv, event = _event(phase_b, r, "subscribe")
        assert event["step"] == "subscribe" and event["create_replication_secret"] is False
        assert local_urns <= set(inv.dependencies)


def test_bootstrap_reruns_when_the_conflict_policy_changes(phase_b):
    changed = synth_variant("phase-b", lambda v: v["replication"]["replicated"].append("tb_extra"))
    before = one(phase_b, "aws:lambda/invocation:Invocation", "fraiseql-db-bootstrap-subscribe-us-east-1").inputs["triggers"]
    after = one(changed, "aws:lambda/invocation:Invocation", "fraiseql-db-bootstrap-subscribe-us-east-1").inputs["triggers"]
    assert before["policy"] != after["policy"] and before["peers"] == after["peers"]


def test_bootstrap_reruns_when_the_fixed_sql_changes(phase_b, monkeypatch):
    # A release that adds objects (a column the agents read, a trigger) must reach every writer.
    import replication.sql as sql
    from infra.synth import synthesize

    real = sql._schema_file
    monkeypatch.setattr(sql, "_schema_file", lambda name: real(name) + ("\n-- changed" if name == "control.sql" else ""))
    changed = synthesize("phase-b")
    before = one(phase_b, "aws:lambda/invocation:Invocation", "fraiseql-db-bootstrap-local-us-east-1").inputs["triggers"]
    after = one(changed, "aws:lambda/invocation:Invocation", "fraiseql-db-bootstrap-local-us-east-1").inputs["triggers"]
    assert before["schema"] != after["schema"] and before["policy"] == after["policy"]


def test_fence_agents_are_deployed_after_every_bootstrap_run(phase_b):
    # The agents of a release use what its SQL installs (e.g. the heartbeat apply trigger): never before.
    runs = {r.urn for r in phase_b.of_type("aws:lambda/invocation:Invocation")}
    assert len(runs) == 2 * len(REGIONS)
    for r in REGIONS:
        agent = one(phase_b, "aws:lambda/function:Function", f"fraiseql-quorum-fence-agent-{r}")
        assert runs <= set(agent.dependencies)


def test_replication_password_never_passes_through_state(phase_b):
    secret = one(phase_b, "aws:secretsmanager/secret:Secret", "fraiseql-db-replication-secret")
    assert {r["region"] for r in secret.inputs["replicas"]} == {"us-west-2", "eu-west-1"}
    assert phase_b.of_type("aws:secretsmanager/secretVersion:SecretVersion") == []
    def keys(value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield from keys(v)
        elif isinstance(value, list):
            for v in value:
                yield from keys(v)

    for reg in phase_b.resources:
        offending = [k for k in keys(reg.inputs) if k in ("password", "masterPassword", "secretString", "secretBinary")]
        assert offending == [], reg.name


def test_quorum_safety_rule_keeps_at_least_two_of_three_routing_controls_on(phase_b):
    rule = one(phase_b, "aws:route53recoverycontrol/safetyRule:SafetyRule", "fraiseql-quorum-at-least-quorum")
    assert rule.inputs["ruleConfig"] == {"type": "ATLEAST", "threshold": 2, "inverted": False}
    controls = {c.outputs["arn"] for c in phase_b.of_type("aws:route53recoverycontrol/routingControl:RoutingControl")}
    assert set(rule.inputs["assertedControls"]) == controls and len(controls) == 3


def test_every_statement_of_the_write_quorum_is_the_one_definition(phase_b):
    """`replication.quorum` defines the write quorum once: the stack's output, the manifest the policy
    pack reads, the ARC safety rule and the majority each agent computes from its members agree with it."""
    q = quorum_size(len(REGIONS))
    manifest = json.loads(one(phase_b, "aws:ssm/parameter:Parameter", "fraiseql-manifest").inputs["insecureValue"])
    rule = one(phase_b, "aws:route53recoverycontrol/safetyRule:SafetyRule", "fraiseql-quorum-at-least-quorum")
    agents = [Settings.from_env(one(phase_b, "aws:lambda/function:Function", f"fraiseql-quorum-fence-agent-{r}")
                                .inputs["environment"]["variables"]) for r in REGIONS]
    assert phase_b.outputs["quorum"] == manifest["quorum"] == rule.inputs["ruleConfig"]["threshold"] == q == 2
    assert {majority_of(len(a.regions)) for a in agents} == {q}


@pytest.mark.parametrize("region", REGIONS)
def test_quorum_fence_agent_per_region_runs_continuously_with_only_its_own_region(phase_b, region):
    fn = one(phase_b, "aws:lambda/function:Function", f"fraiseql-quorum-fence-agent-{region}")
    env = fn.inputs["environment"]["variables"]
    agent = Settings.from_env(env)  # what the agent in that region runs with
    # every variable the stack writes is one the agent reads, and reads back as written
    assert agent.to_env() == env
    assert agent.region == region and agent.regions_next == ()
    assert agent.regions == REGIONS  # the order is the tie-break: the same everywhere
    control = one(phase_b, "aws:route53recoverycontrol/routingControl:RoutingControl", f"fraiseql-quorum-routing-control-{region}")
    assert agent.routing_control_arn == control.outputs["arn"]
    rule = one(phase_b, "aws:lb/listenerRule:ListenerRule", f"fraiseql-quorum-fence-rule-{region}")
    assert agent.fence_rule_arn == rule.outputs["arn"]
    assert agent.db_host == one(phase_b, RDS, f"fraiseql-db-writer-{region}").outputs["address"]
    # 3 probes of 5 s by default: a dead agent fences its region within 15 s
    assert (agent.probe_s, agent.lease_s, agent.stale_after_s) == (5, 15, 15)
    assert fn.inputs["handler"] == "replication.agent.handler"
    schedule = one(phase_b, "aws:cloudwatch/eventRule:EventRule", f"fraiseql-quorum-agent-schedule-{region}")
    assert schedule.inputs["scheduleExpression"] == "rate(1 minute)"
    # each run holds the loop for up to 15 minutes; hand-overs: tests/test_agent_handover.py
    assert fn.inputs["timeout"] == 900


@pytest.mark.parametrize("region", REGIONS)
def test_a_fenced_region_can_leave_the_traffic_path_through_its_own_listener_rule(phase_b, region):
    rule = one(phase_b, "aws:lb/listenerRule:ListenerRule", f"fraiseql-quorum-fence-rule-{region}")
    listener = one(phase_b, "aws:lb/listener:Listener", f"fraiseql-{region}-https")
    assert rule.inputs["listenerArn"] == listener.outputs["arn"] and rule.inputs["priority"] == 1
    (action,) = rule.inputs["actions"]
    assert action["type"] == "fixed-response" and action["fixedResponse"]["statusCode"] == "503"
    (cond,) = rule.inputs["conditions"]
    assert "httpHeader" in cond  # matches nothing while in service; the agent switches it to the health path
    assert rule.ignore_changes == ["conditions"]  # `pulumi up` never puts a fenced region back


@pytest.mark.parametrize("region", REGIONS)
def test_the_agent_may_touch_only_its_own_region(phase_b, region):
    (policy,) = [p for p in phase_b.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"fraiseql-quorum-agent-policy-{region}"]
    doc = json.loads(policy.inputs["policy"])
    resources = {st["Resource"] for st in doc["Statement"] if st["Resource"] != "*"}
    # its own role's secret, not the writer's master secret (issue 13)
    assert resources == {
        one(phase_b, "aws:secretsmanager/secret:Secret", f"fraiseql-db-agent-secret-{region}").outputs["arn"],
        one(phase_b, "aws:kms/key:Key", f"fraiseql-db-kms-{region}").outputs["arn"],
        one(phase_b, "aws:route53recoverycontrol/routingControl:RoutingControl",
            f"fraiseql-quorum-routing-control-{region}").outputs["arn"],
        one(phase_b, "aws:lb/listenerRule:ListenerRule", f"fraiseql-quorum-fence-rule-{region}").outputs["arn"],
    }
    assert all(st["Condition"] for st in doc["Statement"] if st["Resource"] == "*")


@pytest.mark.parametrize("region", REGIONS)
def test_separate_alarms_say_what_happened(phase_b, region):
    by_metric = {a.inputs["metricName"]: a for a in phase_b.of_type(ALARM)
                 if a.region == region and a.inputs.get("dimensions") == {"Region": region}}
    assert set(by_metric) >= {"AgentAlive", "Fenced", "VisibleRegions", "ApplyErrors", "SubscriptionsDown"}
    # an agent that does not run publishes nothing: that is the one alarm where silence is the failure
    assert by_metric["AgentAlive"].inputs["treatMissingData"] == "breaching"
    assert all(a.inputs["treatMissingData"] == "notBreaching" for m, a in by_metric.items() if m != "AgentAlive")
    reduced = by_metric["VisibleRegions"]
    assert reduced.inputs["threshold"] == 3 and reduced.inputs["comparisonOperator"] == "LessThanThreshold"


@pytest.mark.parametrize("region", REGIONS)
def test_a_lost_slot_on_any_writer_alarms_and_says_the_way_back_is_a_reseed(phase_b, region):
    alarm = one(phase_b, ALARM, f"fraiseql-quorum-slots-lost-{region}")
    topic = one(phase_b, "aws:sns/topic:Topic", f"fraiseql-{region}-alerts")
    assert alarm.region == region and alarm.inputs["alarmActions"] == [topic.outputs["arn"]]
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"], alarm.inputs["dimensions"]) == (
        "FraiseQL/Replication", "SlotsLost", {"Region": region})
    assert (alarm.inputs["threshold"], alarm.inputs["comparisonOperator"]) == (0, "GreaterThanThreshold")
    assert "reseed" in alarm.inputs["alarmDescription"] and "never recreate the slot" in alarm.inputs["alarmDescription"]


def test_replication_lag_alarm_for_every_directed_pair(phase_b):
    alarms = [a for a in phase_b.of_type(ALARM) if a.inputs.get("metricName") == "LagSeconds"]
    pairs = {(a.inputs["dimensions"]["Publisher"], a.inputs["dimensions"]["Subscriber"]) for a in alarms}
    assert pairs == {(a, b) for a in REGIONS for b in REGIONS if a != b}
    assert all(a.inputs["threshold"] == 0.5 and a.region == a.inputs["dimensions"]["Publisher"] for a in alarms)


@pytest.mark.parametrize("region", REGIONS)
def test_latency_record_needs_both_endpoint_health_and_routing_control(phase_b, region):
    record = one(phase_b, "aws:route53/record:Record", f"fraiseql-dns-api-latency-{region}")
    assert record.inputs["latencyRoutingPolicies"] == [{"region": region}]
    calc = one(phase_b, "aws:route53/healthCheck:HealthCheck", f"fraiseql-dns-health-and-control-{region}")
    assert record.inputs["healthCheckId"] == f"hc-{calc.name}"
    assert calc.inputs["type"] == "CALCULATED" and calc.inputs["childHealthThreshold"] == 2
    assert set(calc.inputs["childHealthchecks"]) == {
        f"hc-fraiseql-dns-health-{region}", f"hc-fraiseql-quorum-control-health-{region}"
    }
    control = one(phase_b, "aws:route53/healthCheck:HealthCheck", f"fraiseql-quorum-control-health-{region}")
    assert control.inputs["type"] == "RECOVERY_CONTROL"


@pytest.mark.parametrize("region", REGIONS)
def test_read_your_writes_every_region_reads_and_writes_its_own_writer(phase_b, region):
    task = one(phase_b, "aws:ecs/taskDefinition:TaskDefinition", f"fraiseql-app-{region}-task")
    env = {e["name"]: e["value"] for e in json.loads(task.inputs["containerDefinitions"])[0]["environment"]}
    assert env["FRAISEQL_DB_WRITER_HOST"] == env["FRAISEQL_DB_READER_HOST"]
    # the instance endpoint, which the RDS certificate names, so the app verifies it (issue 13 item 7)
    assert env["FRAISEQL_DB_WRITER_HOST"] == one(phase_b, RDS, f"fraiseql-db-writer-{region}").outputs["address"]
    assert env["FRAISEQL_DB_SSLMODE"] == "verify-full"


def test_exports_what_the_runbooks_need(phase_b):
    out = phase_b.outputs
    assert out["quorum"] == 2 and set(out["routingControlArns"]) == set(REGIONS)
    assert set(out["writerDbIdentifiers"]) == set(REGIONS)
    assert len(out["replicationLagAlarmArns"]) == 6


def test_hub_and_spoke_is_a_config_switch():
    syn = synth_variant("phase-b", lambda v: v["network"].update(topology="hub-and-spoke", hub_region="us-east-1"))
    assert syn.of_type("aws:ec2/vpcPeeringConnection:VpcPeeringConnection") == []
    assert len(syn.of_type("aws:ec2transitgateway/transitGateway:TransitGateway")) == 3
    assert len(syn.of_type("aws:ec2transitgateway/peeringAttachment:PeeringAttachment")) == 2


@pytest.mark.parametrize("region", REGIONS)
def test_fence_agent_and_bootstrap_share_one_dependency_layer_per_region(phase_b, region):
    layers = [l for l in phase_b.of_type("aws:lambda/layerVersion:LayerVersion") if l.region == region]
    assert len(layers) == 1
    agent = one(phase_b, "aws:lambda/function:Function", f"fraiseql-quorum-fence-agent-{region}")
    bootstrap = one(phase_b, "aws:lambda/function:Function", f"fraiseql-db-bootstrap-{region}")
    assert agent.inputs["layers"] == bootstrap.inputs["layers"] == [layers[0].outputs["arn"]]


def test_the_agents_verify_rounds_take_the_replication_config() -> None:
    # the runbook's fix for `verify_capped` (docs/runbooks.md): more buckets, or a larger cap
    synth = synth_variant("phase-b", lambda v: v["replication"].update(verify_buckets=4096, verify_max_keys=2500))
    agents = [Settings.from_env(one(synth, "aws:lambda/function:Function", f"fraiseql-quorum-fence-agent-{r}")
                                .inputs["environment"]["variables"]) for r in REGIONS]
    assert {(a.verify_buckets, a.verify_max_keys) for a in agents} == {(4096, 2500)}
