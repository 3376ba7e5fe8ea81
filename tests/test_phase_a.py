"""Phase A under mocks: what matters about each component, read from what the program registers."""

from __future__ import annotations

import json

import pytest

from core.naming import region_code
from tests.conftest import synth_variant
from tests.helpers import by_output, in_region, one

RDS = "aws:rds/instance:Instance"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
REGIONS = ("us-east-1", "us-west-2")


# --- RegionStack -----------------------------------------------------------------------------

@pytest.mark.parametrize("region", REGIONS)
def test_vpc_spans_two_azs_with_three_tiers(phase_a, region):
    subnets = in_region(phase_a, "aws:ec2/subnet:Subnet", region)
    tiers = sorted(s.inputs["tags"]["tier"] for s in subnets)
    assert tiers == ["database"] * 2 + ["private"] * 2 + ["public"] * 2
    for tier in ("public", "private", "database"):
        azs = {s.inputs["availabilityZone"] for s in subnets if s.inputs["tags"]["tier"] == tier}
        assert len(azs) == 2 and all(az.startswith(region) for az in azs)
    assert not any(s.inputs.get("mapPublicIpOnLaunch") for s in subnets)


@pytest.mark.parametrize("region", REGIONS)
def test_security_groups_chain_alb_to_app_to_db_and_nothing_else_reaches_the_db(phase_a, region):
    sg = {r.name.rsplit("-sg-", 1)[1]: r.outputs["id"] if "id" in r.outputs else f"{r.name}-id"
          for r in in_region(phase_a, SG, region) if r.name.startswith(f"fraiseql-{region}-sg-")}
    ingress = in_region(phase_a, INGRESS, region)
    db_in = [r for r in ingress if r.inputs["securityGroupId"] == sg["db"]]
    # the app's tasks, and on the primary the bootstrap that creates the app's role (issue 13)
    bootstrap = [r.outputs.get("id", f"{r.name}-id") for r in in_region(phase_a, SG, region) if r.name == f"fraiseql-db-bootstrap-sg-{region}"]
    assert sorted(r.inputs["referencedSecurityGroupId"] for r in db_in) == sorted([sg["app"], *bootstrap])
    assert len(bootstrap) == (1 if region == "us-east-1" else 0)
    assert all(r.inputs["fromPort"] == r.inputs["toPort"] == 5432 and "cidrIpv4" not in r.inputs for r in db_in)
    app_in = [r for r in ingress if r.inputs["securityGroupId"] == sg["app"]]
    assert [r.inputs["referencedSecurityGroupId"] for r in app_in] == [sg["alb"]]
    alb_in = [r for r in ingress if r.inputs["securityGroupId"] == sg["alb"]]
    assert sorted(r.inputs["fromPort"] for r in alb_in) == [80, 443]
    assert all(r.inputs["cidrIpv4"] == "0.0.0.0/0" for r in alb_in)
    egress_to_db = [r for r in in_region(phase_a, EGRESS, region) if r.inputs.get("referencedSecurityGroupId") == sg["db"]]
    assert sorted(r.inputs["securityGroupId"] for r in egress_to_db) == sorted([sg["app"], *bootstrap])


def test_database_route_table_has_no_route_to_the_internet(phase_a):
    db_rt = one(phase_a, "aws:ec2/routeTable:RouteTable", "fraiseql-us-east-1-rt-database")
    routes = [r for r in phase_a.of_type("aws:ec2/route:Route") if r.inputs["routeTableId"] == f"{db_rt.name}-id"]
    assert routes == []


def test_nat_mode_single_versus_per_az():
    def per_az(v):
        v["network"]["nat"] = "per_az"

    assert len(in_region(synth_variant("phase-a", lambda v: None), "aws:ec2/natGateway:NatGateway", "us-east-1")) == 1
    assert len(in_region(synth_variant("phase-a", per_az), "aws:ec2/natGateway:NatGateway", "us-east-1")) == 2


def test_https_listener_uses_a_validated_certificate_of_its_region(phase_a):
    listener = one(phase_a, "aws:lb/listener:Listener", "fraiseql-us-west-2-https")
    validation = one(phase_a, "aws:acm/certificateValidation:CertificateValidation", "fraiseql-us-west-2-cert-validation")
    assert listener.inputs["protocol"] == "HTTPS" and listener.inputs["port"] == 443
    assert listener.inputs["certificateArn"] == validation.outputs["certificateArn"]
    cert = one(phase_a, "aws:acm/certificate:Certificate", "fraiseql-us-west-2-cert")
    assert cert.region == "us-west-2"
    assert cert.inputs["domainName"] == "api.example.com"
    assert cert.inputs["subjectAlternativeNames"] == ["read.api.example.com"]
    redirect = one(phase_a, "aws:lb/listener:Listener", "fraiseql-us-west-2-http-redirect")
    assert redirect.inputs["defaultActions"][0]["redirect"]["protocol"] == "HTTPS"


def test_without_https_there_is_no_certificate_and_plain_http():
    syn = synth_variant("phase-a", lambda v: v["dns"].update(https=False))
    assert syn.of_type("aws:acm/certificate:Certificate") == []
    listeners = syn.of_type("aws:lb/listener:Listener")
    assert {l.inputs["protocol"] for l in listeners} == {"HTTP"}


def test_target_group_checks_the_database_aware_health_path(phase_a):
    tg = one(phase_a, "aws:lb/targetGroup:TargetGroup", "fraiseql-tg-use1")
    assert tg.inputs["healthCheck"]["path"] == "/health"
    assert tg.inputs["targetType"] == "ip"


# --- StreamingReplication --------------------------------------------------------------------

def test_replica_is_sourced_from_the_primary_arn(phase_a):
    primary = one(phase_a, RDS, "fraiseql-db-primary-us-east-1")
    replica = one(phase_a, RDS, "fraiseql-db-replica-us-west-2")
    assert replica.inputs["replicateSourceDb"] == primary.outputs["arn"]
    assert primary.urn in replica.property_dependencies["replicateSourceDb"]
    assert replica.region == "us-west-2" and primary.region == "us-east-1"


def test_each_database_is_encrypted_with_a_key_of_its_own_region(phase_a):
    for db in phase_a.of_type(RDS):
        key = by_output(phase_a, "aws:kms/key:Key", "arn", db.inputs["kmsKeyId"])
        assert key.region == db.region
        assert key.inputs["enableKeyRotation"] is True
        assert db.inputs["storageEncrypted"] is True


@pytest.mark.parametrize("name", ["fraiseql-db-primary-us-east-1", "fraiseql-db-replica-us-west-2"])
def test_databases_are_private_protected_and_backed_up(phase_a, name):
    db = one(phase_a, RDS, name)
    assert db.inputs["publiclyAccessible"] is False
    assert db.inputs["deletionProtection"] is True
    assert db.inputs["backupRetentionPeriod"] >= 7
    assert db.inputs["performanceInsightsEnabled"] is True
    assert db.protect is True


def test_primary_password_is_managed_by_secrets_manager_never_in_state(phase_a):
    primary = one(phase_a, RDS, "fraiseql-db-primary-us-east-1")
    assert primary.inputs["manageMasterUserPassword"] is True
    assert "password" not in primary.inputs
    for reg in phase_a.resources:
        assert "password" not in reg.inputs, reg.name


def test_replica_lag_alarm_watches_the_replica_at_30_seconds(phase_a):
    alarm = one(phase_a, "aws:cloudwatch/metricAlarm:MetricAlarm", "fraiseql-db-replica-lag-us-west-2")
    replica = one(phase_a, RDS, "fraiseql-db-replica-us-west-2")
    topic = one(phase_a, "aws:sns/topic:Topic", "fraiseql-us-west-2-alerts")
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == ("AWS/RDS", "ReplicaLag")
    assert alarm.inputs["threshold"] == 30
    assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm.inputs["dimensions"] == {"DBInstanceIdentifier": replica.outputs["identifier"]}
    assert alarm.region == "us-west-2"
    assert alarm.inputs["alarmActions"] == [topic.outputs["arn"]]


def test_lag_alarm_threshold_follows_config():
    syn = synth_variant("phase-a", lambda v: v["slo"].update(lag_alarm_seconds=20))
    alarm = one(syn, "aws:cloudwatch/metricAlarm:MetricAlarm", "fraiseql-db-replica-lag-us-west-2")
    assert alarm.inputs["threshold"] == 20


def test_standby_replica_uses_its_own_size(phase_a):
    assert one(phase_a, RDS, "fraiseql-db-primary-us-east-1").inputs["instanceClass"] == "db.m6g.xlarge"
    assert one(phase_a, RDS, "fraiseql-db-replica-us-west-2").inputs["instanceClass"] == "db.m6g.large"


# --- FraiseqlService -------------------------------------------------------------------------

def _container(syn, region):
    task = one(syn, "aws:ecs/taskDefinition:TaskDefinition", f"fraiseql-app-{region}-task")
    return json.loads(task.inputs["containerDefinitions"])[0]


def _cname(syn, name):
    record = one(syn, "aws:route53/record:Record", name)
    assert record.inputs["type"] == "CNAME"
    return record.inputs["name"], record.inputs["records"]


def test_standby_app_reads_from_its_replica_and_writes_to_the_primary(phase_a):
    env = {e["name"]: e["value"] for e in _container(phase_a, "us-west-2")["environment"]}
    primary = one(phase_a, RDS, "fraiseql-db-primary-us-east-1")
    replica = one(phase_a, RDS, "fraiseql-db-replica-us-west-2")
    assert _cname(phase_a, "fraiseql-db-reader-record-us-west-2") == (env["FRAISEQL_DB_READER_HOST"], [replica.outputs["address"]])
    assert _cname(phase_a, "fraiseql-db-writer-record") == (env["FRAISEQL_DB_WRITER_HOST"], [primary.outputs["address"]])


def test_private_database_zone_is_visible_from_both_vpcs_only(phase_a):
    zone = one(phase_a, "aws:route53/zone:Zone", "fraiseql-db-private-zone")
    vpcs = {(v["vpcRegion"], v["vpcId"]) for v in zone.inputs["vpcs"]}
    assert vpcs == {("us-east-1", "fraiseql-us-east-1-vpc-id"), ("us-west-2", "fraiseql-us-west-2-vpc-id")}
    writer = one(phase_a, "aws:route53/record:Record", "fraiseql-db-writer-record")
    assert writer.inputs["ttl"] <= 10
    assert "records" in writer.ignore_changes


@pytest.mark.parametrize("region", ["us-east-1", "us-west-2"])
def test_each_region_reads_the_apps_own_credentials_from_its_own_region(phase_a, region):
    """Issue 13 item 3: not the primary's master secret, not another region's secret or key."""
    secret = one(phase_a, "aws:secretsmanager/secret:Secret", "fraiseql-db-app-secret")
    assert secret.region == "us-east-1"
    (replica,) = secret.inputs["replicas"]
    standby_key = one(phase_a, "aws:kms/key:Key", "fraiseql-db-kms-us-west-2").outputs["arn"]
    assert replica == {"region": "us-west-2", "kmsKeyId": standby_key}
    secret_arn = secret.outputs["arn"].replace(":us-east-1:", f":{region}:")
    secrets = {s["name"]: s["valueFrom"] for s in _container(phase_a, region)["secrets"]}
    assert secrets == {"FRAISEQL_DB_USER": f"{secret_arn}:username::", "FRAISEQL_DB_PASSWORD": f"{secret_arn}:password::"}
    policy = json.loads(one(phase_a, "aws:iam/rolePolicy:RolePolicy", f"fraiseql-app-{region}-read-db-secret").inputs["policy"])
    key = one(phase_a, "aws:kms/key:Key", f"fraiseql-db-kms-{region}").outputs["arn"]
    assert [st["Resource"] for st in policy["Statement"]] == [secret_arn, key]
    assert policy["Statement"][1]["Condition"] == {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}


def test_the_apps_role_is_created_on_the_primary_so_streaming_carries_it_to_the_standby(phase_a):
    run = one(phase_a, "aws:lambda/invocation:Invocation", "fraiseql-db-bootstrap-roles-us-east-1")
    event = json.loads(run.inputs["input"])
    secret = one(phase_a, "aws:secretsmanager/secret:Secret", "fraiseql-db-app-secret")
    assert event["step"] == "roles" and event["role_secrets"] == {"fraiseql_app": secret.outputs["arn"]}
    assert [n["name"] for n in event["nodes"]] == ["us-east-1"]


def test_the_standby_forwards_writes_to_the_public_api(phase_a):
    """Phase A has no private path between regions: the standby's app sends mutations to the API name."""
    env = {e["name"]: e["value"] for e in _container(phase_a, "us-west-2")["environment"]}
    assert env["FRAISEQL_WRITE_FORWARD_URL"] == "https://api.example.com"
    assert "FRAISEQL_WRITE_FORWARD_URL" not in {e["name"] for e in _container(phase_a, "us-east-1")["environment"]}


def test_service_runs_privately_behind_the_alb_and_autoscales(phase_a):
    svc = one(phase_a, "aws:ecs/service:Service", "fraiseql-app-us-east-1-service")
    assert svc.inputs["networkConfiguration"]["assignPublicIp"] is False
    private = {f"fraiseql-us-east-1-private-{i}-id" for i in range(2)}
    assert set(svc.inputs["networkConfiguration"]["subnets"]) == private
    tg = one(phase_a, "aws:lb/targetGroup:TargetGroup", "fraiseql-tg-use1")
    assert svc.inputs["loadBalancers"][0]["targetGroupArn"] == tg.outputs["arn"]
    assert svc.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    target = one(phase_a, "aws:appautoscaling/target:Target", "fraiseql-app-us-east-1-scaling-target")
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (2, 6)
    assert "/health" in " ".join(_container(phase_a, "us-east-1")["healthCheck"]["command"])


# --- DnsFailover -----------------------------------------------------------------------------

def test_failover_records_are_bound_to_their_regions_health_checks(phase_a):
    for region, role in (("us-east-1", "PRIMARY"), ("us-west-2", "SECONDARY")):
        record = one(phase_a, "aws:route53/record:Record", f"fraiseql-dns-api-{role.lower()}-{region}")
        hc = one(phase_a, "aws:route53/healthCheck:HealthCheck", f"fraiseql-dns-health-{region}")
        alb = one(phase_a, "aws:lb/loadBalancer:LoadBalancer", f"fraiseql-alb-{region_code(region)}")
        assert record.inputs["failoverRoutingPolicies"] == [{"type": role}]
        assert record.inputs["healthCheckId"] == f"hc-{hc.name}"
        assert record.inputs["aliases"][0]["name"] == alb.outputs["dnsName"]
        assert hc.inputs["fqdn"] == alb.outputs["dnsName"]
        assert (hc.inputs["resourcePath"], hc.inputs["requestInterval"], hc.inputs["failureThreshold"]) == ("/health", 10, 3)


def test_health_check_timing_follows_config():
    syn = synth_variant("phase-a", lambda v: v["dns"].update(health_check_interval=30, failure_threshold=2))
    hc = one(syn, "aws:route53/healthCheck:HealthCheck", "fraiseql-dns-health-us-east-1")
    assert (hc.inputs["requestInterval"], hc.inputs["failureThreshold"]) == (30, 2)


def test_read_record_points_at_the_standby(phase_a):
    read = one(phase_a, "aws:route53/record:Record", "fraiseql-dns-read-us-west-2")
    alb = one(phase_a, "aws:lb/loadBalancer:LoadBalancer", "fraiseql-alb-usw2")
    assert read.inputs["name"] == "read.api.example.com"
    assert read.inputs["aliases"][0]["name"] == alb.outputs["dnsName"]


# --- The program -----------------------------------------------------------------------------

def test_every_resource_is_tagged_with_the_reserved_tags(phase_a):
    for reg in phase_a.resources:
        tags = reg.inputs.get("tags")
        if tags is None:
            continue
        assert {"Name", "project", "phase", "stack", "component"} <= set(tags), reg.name
        assert tags["stack"] == "phase-a" and tags["phase"] == "a" and tags["owner"] == "platform"


def test_every_resource_is_parented_to_a_component_except_budget_and_manifest(phase_a):
    top_level = sorted(r.name for r in phase_a.resources if phase_a.component_of(r) == "program")
    assert top_level == ["fraiseql-budget", "fraiseql-manifest"]


def test_manifest_declares_slo_budget_and_usage_from_config(phase_a):
    manifest = json.loads(one(phase_a, "aws:ssm/parameter:Parameter", "fraiseql-manifest").inputs["insecureValue"])
    assert manifest["phase"] == "a" and manifest["write_regions"] == ["us-east-1"]
    assert manifest["slo"]["rpo_seconds"] == 60 and manifest["budget"]["monthly_usd"] == 3450
    assert manifest["dns"] == {"interval_s": 10, "threshold": 3, "ttl_s": 60}


def test_budget_carries_the_configured_amount(phase_a):
    budget = one(phase_a, "aws:budgets/budget:Budget", "fraiseql-budget")
    assert budget.inputs["limitAmount"] == "3450.00"
    kinds = sorted((n["notificationType"], n["threshold"]) for n in budget.inputs["notifications"])
    assert kinds == [("ACTUAL", 100), ("FORECASTED", 90)]


def test_exports_what_operators_need(phase_a):
    out = phase_a.outputs
    assert out["primaryDbIdentifier"] == "fraiseql-db-primary-us-east-1"
    assert set(out["replicaDbIdentifiers"]) == {"us-west-2"}
    assert set(out["healthCheckIds"]) == {"us-east-1", "us-west-2"}
    assert out["replicaLagAlarmArns"]["us-west-2"].startswith("arn:aws:cloudwatch:us-west-2:")
    assert out["apiUrl"] == "https://api.example.com"


def test_logical_names_are_stable_across_runs(phase_a):
    again = synth_variant("phase-a", lambda v: None)
    assert sorted(r.urn for r in again.registrations) == sorted(r.urn for r in phase_a.registrations)
