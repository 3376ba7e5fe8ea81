"""`python -m ops preflight --stack S`: each item, ok and with its problem.

Route 53 is moto's. RDS engine versions, Lambda account settings and the ARC control plane are
botocore Stubbers (moto 5.2 implements none of DescribeDBEngineVersions, GetAccountSettings and
route53-recovery-control-config). Cloudflare's API and the DNS-over-HTTPS resolver are a stub behind
the runtime's `urlopen`, which refuses any other URL: no test reaches the network.
"""

from __future__ import annotations

import io
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml
from botocore.stub import Stubber
from moto import mock_aws
from moto.route53.models import HostedZoneIdentifier
from moto.utilities.id_generator import moto_id_manager

from infra.paths import REPO
from ops.aws import default_client_factory
from ops.preflight import DOH_URL
from replication.sql import RDS_PARAMETERS
from tests.ops.conftest import ACCOUNT, Harness, Result, run_cli

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
TOKEN = "cf-preflight-token-0123456789"
CF_BASE = "https://cf.test/client/v4"
CF_ZONE = "fedcba9876543210fedcba9876543210"
CF_NS = ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"]
PUBLIC_ZONE_ID, ORIGIN_ZONE_ID = "Z0PUBLICTEST0000000", "Z0ORIGINTEST0000000"
READ_ONLY = ("get_", "list_", "describe_")


class _Resp(io.BytesIO):
    def __enter__(self) -> "_Resp":
        return self

    def __exit__(self, *exc: object) -> bool:
        return False


def default_parameters(**change: dict[str, Any]) -> list[dict[str, Any]]:
    """The family's defaults as RDS lists them, for the parameters the stack sets (plus one it does
    not), each modifiable with a range or list that admits the stack's value; ``change[name]``
    overrides fields of one (``{}`` removes it)."""
    listed = [{"ParameterName": "work_mem", "ParameterValue": "4096", "IsModifiable": True, "ApplyType": "dynamic",
               "AllowedValues": "64-2147483647", "DataType": "integer"}]
    for name, (value, method) in RDS_PARAMETERS.items():
        allowed = f"0-{int(value) * 4 + 10}" if value.isdigit() else value
        entry = {"ParameterName": name, "IsModifiable": True, "AllowedValues": allowed,
                 "ApplyType": "static" if method == "pending-reboot" else "dynamic", "DataType": "integer"}
        if name in change:
            if not change[name]:
                continue
            entry.update(change[name])
        listed.append(entry)
    return listed


@dataclass
class World:
    """What preflight can see: the stubbed AWS APIs, public DNS and the Cloudflare zone."""

    harness: Harness
    tmp: Path
    dns: dict[str, list[str]] = field(default_factory=dict)  # name -> NS answer of public resolvers
    cloudflare: dict[str, Any] = field(default_factory=dict)  # API path -> result
    urls: list[str] = field(default_factory=list)
    stubbers: list[Stubber] = field(default_factory=list)
    zones: dict[str, list[str]] = field(default_factory=dict)  # zone name -> its Route 53 name servers

    # --- AWS ---
    def stub(self, service: str, region: str) -> Stubber:
        client = default_client_factory(service, region)
        stubber = Stubber(client)
        stubber.activate()
        self.harness.stubs[(service, region, None)] = client
        self.stubbers.append(stubber)
        return stubber

    def engines(self, offered: dict[str, list[str]], family: str = "postgres18",
                parameters: Optional[dict[str, list[dict[str, Any]]]] = None) -> None:
        """Each region's engine versions, then (phases b/c) its family's default parameters, in two
        pages: ``parameters[region]`` replaces that region's list (default: every parameter the
        stack sets exists, is modifiable and allows the value)."""
        for region in REGIONS:
            stubber = self.stub("rds", region)
            stubber.add_response(
                "describe_db_engine_versions",
                {"DBEngineVersions": [{"Engine": "postgres", "EngineVersion": v, "DBParameterGroupFamily": family,
                                       "Status": "available"} for v in offered.get(region, [])]},
                {"Engine": "postgres", "DBParameterGroupFamily": family},
            )
            listed = (parameters or {}).get(region, default_parameters())
            half = len(listed) // 2
            stubber.add_response("describe_engine_default_parameters",
                                 {"EngineDefaults": {"DBParameterGroupFamily": family, "Marker": "page-2",
                                                     "Parameters": listed[:half]}},
                                 {"DBParameterGroupFamily": family})
            stubber.add_response("describe_engine_default_parameters",
                                 {"EngineDefaults": {"DBParameterGroupFamily": family, "Parameters": listed[half:]}},
                                 {"DBParameterGroupFamily": family, "Marker": "page-2"})

    def lambdas(self, quotas: dict[str, tuple[int, int]]) -> None:
        for region in REGIONS:
            quota, unreserved = quotas.get(region, (1000, 1000))
            self.stub("lambda", region).add_response("get_account_settings", {
                "AccountLimit": {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                                 "ConcurrentExecutions": quota, "UnreservedConcurrentExecutions": unreserved},
                "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
            }, {})

    def arc(self, error: Optional[str] = None) -> None:
        stubber = self.stub("route53-recovery-control-config", "us-west-2")
        if error:
            stubber.add_client_error("list_clusters", service_error_code=error, service_message="not allowed",
                                     http_status_code=403, expected_params={"MaxResults": 5})
        else:
            stubber.add_response("list_clusters", {"Clusters": []}, {"MaxResults": 5})

    def zone(self, name: str, zone_id: str) -> list[str]:
        moto_id_manager.set_custom_id(HostedZoneIdentifier(ACCOUNT, name + ".", None), zone_id)
        created = default_client_factory("route53", "us-east-1").create_hosted_zone(Name=name, CallerReference=name)
        assert created["HostedZone"]["Id"].endswith(zone_id)
        self.zones[name] = [n.lower() for n in created["DelegationSet"]["NameServers"]]
        return self.zones[name]

    def change(self, zone_id: str, *changes: dict[str, Any]) -> None:
        default_client_factory("route53", "us-east-1").change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": c} for c in changes]})

    # --- the network ---
    def urlopen(self, req: Any, timeout: float) -> _Resp:
        url = req.full_url
        self.urls.append(url)
        parsed = urllib.parse.urlparse(url)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if url.startswith(DOH_URL):
            assert req.headers.get("Accept") == "application/dns-json"
            name = query["name"]
            answer = [{"name": f"{name}.", "type": 2, "TTL": 172800, "data": f"{ns}."} for ns in self.dns.get(name, [])]
            return _Resp(json.dumps({"Status": 0, "Answer": answer}).encode())
        assert url.startswith(CF_BASE), f"preflight tried to reach {url}"
        assert req.headers.get("Authorization") == f"Bearer {TOKEN}" and req.get_method() == "GET"
        path = parsed.path[len(urllib.parse.urlparse(CF_BASE).path):]
        result = self.cloudflare[path]
        if isinstance(result, list):
            result = [r for r in result if all(r.get(k) == query[k] for k in ("type", "name") if k in query)]
        return _Resp(json.dumps({"success": True, "errors": [], "result": result}).encode())

    # --- the stack file and the run ---
    def stack_file(self, stack: str, change: Callable[[dict[str, Any]], None]) -> Path:
        doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
        config = doc["config"]
        config["fraiseql:database"]["engine_version"] = "18"
        change(config)
        path = self.tmp / f"Pulumi.{stack}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def run(self, path: Path, env: Optional[dict[str, str]] = None) -> Result:
        environ = {"CLOUDFLARE_API_BASE": CF_BASE, "CLOUDFLARE_API_TOKEN": TOKEN} if env is None else env
        rt = self.harness.runtime(environ=environ, urlopen=self.urlopen)
        result = run_cli(["preflight", "--stack", path.stem.split(".", 1)[1], "--config-file", str(path), "--json"], rt)
        if result.code != 2:  # a bad stack file stops before any call
            for stubber in self.stubbers:
                stubber.assert_no_pending_responses()
        assert all(c.op.startswith(READ_ONLY) for c in self.harness.calls), [c.op for c in self.harness.calls]
        return result


def lines(result: Result, status: str) -> list[str]:
    return [f"{e['step']}: {e['detail']}" for e in result.events if e["status"] == status]


def problems(result: Result) -> list[str]:
    return lines(result, "problem")


@pytest.fixture
def world(tmp_path: Path, harness: Harness):
    with mock_aws():
        w = World(harness, tmp_path)
        yield w
    for name in w.zones:
        moto_id_manager.unset_custom_id(HostedZoneIdentifier(ACCOUNT, name + ".", None))


def phase_b_world(world: World) -> Path:
    world.engines({r: ["18.1", "18.2"] for r in REGIONS})
    world.lambdas({})
    world.arc()
    world.dns["example.com"] = world.zone("example.com", PUBLIC_ZONE_ID)
    return world.stack_file("phase-b", lambda c: c["fraiseql:dns"].update(zone_id=PUBLIC_ZONE_ID))


def test_phase_b_ready_account_passes_every_item(world: World) -> None:
    result = world.run(phase_b_world(world))
    assert result.code == 0, result.text
    assert problems(result) == []
    oks = lines(result, "ok")
    assert [line.split(":")[0] for line in oks] == ["config", *["engine"] * 3, *["parameters"] * 3, *["lambda"] * 3, "arc",
                                                    "zone", "delegation"]
    assert all(any(f"engine: {r}: PostgreSQL 18 is offered (newest 18.2)" == line for line in oks) for r in REGIONS)
    assert "lambda: eu-west-1: 1000 of 1000 concurrent executions unreserved; the stack reserves 0, leaving 1000" in oks[9]
    assert result.last("preflight")["status"] == "done"
    # every URL it opened was the (stub) resolver: no Cloudflare in phase b
    assert world.urls and all(u.startswith(DOH_URL) for u in world.urls)


def test_phase_b_problems_each_come_with_their_fix(world: World) -> None:
    world.engines({"us-east-1": [], "us-west-2": ["18.1"], "eu-west-1": []})
    world.lambdas({"us-west-2": (10, 10)})
    world.arc(error="AccessDeniedException")
    world.zone("example.com", PUBLIC_ZONE_ID)
    world.dns["example.com"] = ["ns1.old-dns-host.net", "ns2.old-dns-host.net"]
    path = world.stack_file("phase-b", lambda c: (c["fraiseql:dns"].update(zone_id=PUBLIC_ZONE_ID),
                                                  c["fraiseql:quorum"].update(agent_reserved_concurrency=4)))
    result = world.run(path)

    assert result.code == 3, result.text
    found = problems(result)
    assert len(found) == 5, found
    assert any(p.startswith("engine: us-east-1: RDS offers no PostgreSQL 18 here") and "drop the region" in p
               for p in found)
    assert any(p.startswith("engine: eu-west-1: RDS offers no PostgreSQL 18 here") for p in found)
    assert any(p.startswith("lambda: us-west-2: the stack reserves 4") and "Lambda keeps 10" in p
               and "Concurrent executions" in p for p in found)
    assert any(p.startswith("arc: ") and "grant route53-recovery-control-config:ListClusters" in p for p in found)
    delegation = next(p for p in found if p.startswith("delegation:"))
    assert "ns1.old-dns-host.net" in delegation and "point the registrar" in delegation
    assert all(ns in delegation for ns in world.zones["example.com"])
    assert result.last("result")["status"] == "refused" and "5 of" in result.last("result")["detail"]


def test_a_family_that_does_not_let_the_stack_set_a_guard_parameter_is_a_problem_per_region(world: World) -> None:
    # The write guard refuses every write where max_notify_queue_pages or max_prepared_transactions is
    # not what it needs: a family that does not let the stack set them would leave every writer fenced.
    world.engines({r: ["18.1"] for r in REGIONS}, parameters={
        "us-east-1": default_parameters(max_notify_queue_pages={"IsModifiable": False}),
        "eu-west-1": default_parameters(max_notify_queue_pages={"AllowedValues": "1048576-2147483647"},
                                        max_prepared_transactions={}),
    })
    world.lambdas({})
    world.arc()
    world.dns["example.com"] = world.zone("example.com", PUBLIC_ZONE_ID)
    result = world.run(world.stack_file("phase-b", lambda c: c["fraiseql:dns"].update(zone_id=PUBLIC_ZONE_ID)))
    assert result.code == 3, result.text
    east, eu = problems(result)
    assert east.startswith("parameters: us-east-1: max_notify_queue_pages cannot be modified in postgres18")
    assert eu.startswith("parameters: eu-west-1: max_prepared_transactions does not exist in postgres18; "
                         "max_notify_queue_pages = 1024 is outside postgres18's allowed values 1048576-2147483647")
    assert "drop the region" in east and "drop the region" in eu
    assert "parameters: us-west-2: postgres18 lets the stack set all" in "\n".join(lines(result, "ok"))


def test_a_missing_zone_is_a_problem_not_a_crash(world: World) -> None:
    world.engines({r: ["18.1"] for r in REGIONS})
    world.lambdas({})
    world.arc()
    result = world.run(world.stack_file("phase-b", lambda c: c["fraiseql:dns"].update(zone_id="Z0NOSUCHZONE0000000")))
    assert result.code == 3
    (zone,) = problems(result)
    assert zone.startswith("zone: dns.zone_id Z0NOSUCHZONE0000000 does not exist") and "create-hosted-zone" in zone


def test_an_invalid_stack_file_exits_2_naming_the_key(world: World) -> None:
    path = world.stack_file("phase-b", lambda c: c["fraiseql:dns"].update(zone_id="not-a-zone"))
    result = world.run(path)
    assert result.code == 2
    assert "fraiseql:dns.zone_id" in result.last("result")["detail"]
    assert world.harness.calls == [] and world.urls == []


# --- phase C ---------------------------------------------------------------------------------------

def phase_c_world(world: World, authority: str = "cloudflare", **cloudflare: Any) -> Path:
    world.engines({r: ["18.1"] for r in REGIONS})
    world.lambdas({})
    world.arc()
    origin_ns = world.zone("origin.api.example.com", ORIGIN_ZONE_ID)
    world.dns["origin.api.example.com"] = origin_ns
    world.cloudflare.update({
        f"/zones/{CF_ZONE}": {"id": CF_ZONE, "name": "example.com", "status": "active" if authority == "cloudflare" else "pending",
                              "plan": {"legacy_id": "enterprise"}, "name_servers": CF_NS},
        f"/zones/{CF_ZONE}/dns_records": [{"type": "NS", "name": "origin.api.example.com", "content": ns} for ns in origin_ns],
        f"/zones/{CF_ZONE}/rulesets": [{"id": "m1", "name": "Cloudflare Managed Ruleset", "kind": "managed",
                                        "phase": "http_request_firewall_managed"}],
        f"/zones/{CF_ZONE}/settings/ssl": {"id": "ssl", "value": "strict"},
        f"/zones/{CF_ZONE}/ssl/certificate_packs": [{"id": "p1", "type": "advanced", "status": "active",
                                                     "hosts": ["example.com", "*.example.com"]}],
        **cloudflare,
    })

    def change(c: dict[str, Any]) -> None:
        for key in ("cloudflare:apiToken", "fraiseql:edge_purge_token", "fraiseql:origin_auth_token"):
            c[key] = {"secure": "AAABAEncryptedByTheStacksSecretsProvider"}
        c["fraiseql:dns"].update(zone_id=ORIGIN_ZONE_ID)
        if authority == "route53":
            c["fraiseql:edge"].update(dns_authority="route53", route53_public_zone_id=PUBLIC_ZONE_ID)

    if authority == "route53":
        public_ns = world.zone("example.com", PUBLIC_ZONE_ID)
        world.dns["example.com"] = public_ns
        world.change(PUBLIC_ZONE_ID, *[
            {"Name": "api.example.com", "Type": "A", "SetIdentifier": f"latency-{r}", "Region": r,
             "AliasTarget": {"HostedZoneId": "Z35SXDOTRQ7X7K", "DNSName": f"alb-{r}.elb.amazonaws.com",
                             "EvaluateTargetHealth": True}} for r in REGIONS
        ], {"Name": "origin.api.example.com", "Type": "NS", "TTL": 172800,
            "ResourceRecords": [{"Value": ns} for ns in origin_ns]})
    else:
        world.dns["example.com"] = CF_NS
    return world.stack_file("phase-c", change)


def test_phase_c_ready_zone_passes_every_item(world: World) -> None:
    result = world.run(phase_c_world(world))
    assert result.code == 0, result.text
    oks = lines(result, "ok")
    steps = [line.split(":")[0] for line in oks]
    assert steps.count("delegation") == 2 and steps.count("rulesets") == 3
    for step in ("cloudflare", "authority", "ssl", "edge-cert"):
        assert step in steps
    assert "rulesets: http_ratelimit: none yet; the stack creates it" in oks


def test_existing_entry_points_are_reported_and_refused_only_where_the_stack_would_own_them(world: World) -> None:
    rulesets = [
        {"id": "w1", "name": "security team WAF", "kind": "zone", "phase": "http_request_firewall_managed"},
        {"id": "c1", "name": "marketing cache", "kind": "zone", "phase": "http_request_cache_settings"},
        {"id": "r1", "name": "fraiseql phase-c rate limit", "kind": "zone", "phase": "http_ratelimit"},
    ]
    path = phase_c_world(world, **{
        f"/zones/{CF_ZONE}/rulesets": rulesets,
        f"/zones/{CF_ZONE}/rulesets/w1": {"id": "w1", "rules": [{"id": "a"}, {"id": "b"}]},
        f"/zones/{CF_ZONE}/rulesets/c1": {"id": "c1", "rules": [{"id": "a"}]},
    })
    doc = yaml.safe_load(path.read_text())
    doc["config"]["fraiseql:edge"]["owns_entry_points"] = ["waf", "rate_limit"]
    path.write_text(yaml.safe_dump(doc))
    result = world.run(path)

    assert result.code == 3
    (waf,) = problems(result)
    assert waf.startswith("rulesets: http_request_firewall_managed: the zone already has the entry point "
                          "'security team WAF' (w1, 2 rule(s))")
    assert "Remove waf from edge.owns_entry_points" in waf and "A similar configuration with rules already exists" in waf
    oks = lines(result, "ok")
    assert "rulesets: http_ratelimit: 'fraiseql phase-c rate limit' (r1) is this stack's own" in oks
    assert "rulesets: http_request_cache_settings: 'marketing cache' (c1, 1 rule(s)) stays with the zone's owner; " \
           "this stack adds nothing to it" in oks


def test_cloudflare_authority_while_the_registrar_still_points_at_route53_is_refused(world: World) -> None:
    path = phase_c_world(world)
    world.dns["example.com"] = ["ns-1.awsdns-01.com", "ns-2.awsdns-02.net"]
    world.cloudflare[f"/zones/{CF_ZONE}"]["status"] = "pending"
    result = world.run(path)
    assert result.code == 3
    (authority,) = problems(result)
    assert authority.startswith("authority: edge.dns_authority is cloudflare, but example.com is delegated to ns-1.awsdns-01.com")
    assert "would delete the Route 53 records that still answer for api.example.com" in authority
    assert "dns_authority: route53" in authority


def test_moving_from_phase_b_route53_keeps_answering_and_the_edge_certificate_must_exist_first(world: World) -> None:
    path = phase_c_world(world, authority="route53", **{f"/zones/{CF_ZONE}/ssl/certificate_packs": []})
    result = world.run(path)
    assert result.code == 3
    (cert,) = problems(result)
    assert cert.startswith("edge-cert: no active edge certificate covers api.example.com") and "advanced certificate" in cert
    oks = lines(result, "ok")
    assert any(line.startswith(f"authority: Route 53 ({PUBLIC_ZONE_ID}) answers for api.example.com with 3 record(s)")
               and "ada.ns.cloudflare.com" in line for line in oks)
    assert f"delegation: phase b's zone {PUBLIC_ZONE_ID} delegates origin.api.example.com to Route 53 (until Cloudflare answers)" in oks


@pytest.mark.parametrize("override, step, expect", [
    ({"/settings/ssl": {"id": "ssl", "value": "flexible"}}, "ssl", "SSL mode 'flexible'"),
    ({"": {"id": CF_ZONE, "name": "example.com", "status": "active", "plan": {"legacy_id": "pro"}, "name_servers": CF_NS}},
     "cloudflare", "set plan: pro"),
    ({"/dns_records": []}, "delegation", "add NS records origin.api.example.com ->"),
])
def test_phase_c_zone_problems(world: World, override: dict[str, Any], step: str, expect: str) -> None:
    result = world.run(phase_c_world(world, **{f"/zones/{CF_ZONE}{k}": v for k, v in override.items()}))
    assert result.code == 3
    found = problems(result)
    assert len(found) == 1 and found[0].startswith(f"{step}: ") and expect in found[0], found


def test_phase_c_without_a_cloudflare_token_says_so_and_still_checks_aws(world: World) -> None:
    result = world.run(phase_c_world(world), env={})
    assert result.code == 3
    (token,) = problems(result)
    assert token.startswith("cloudflare: set CLOUDFLARE_API_TOKEN")
    assert not any("cf.test" in u for u in world.urls)
    assert [line.split(":")[0] for line in lines(result, "ok")].count("engine") == 3


def test_preflight_lists_the_entry_points_before_the_stack_says_which_it_owns(world: World) -> None:
    """The config refuses a missing edge.owns_entry_points and points at preflight, so preflight runs without it."""
    path = phase_c_world(world, **{
        f"/zones/{CF_ZONE}/rulesets": [{"id": "w1", "name": "security team WAF", "kind": "zone",
                                        "phase": "http_request_firewall_managed"}],
        f"/zones/{CF_ZONE}/rulesets/w1": {"id": "w1", "rules": [{"id": "a"}]},
    })
    doc = yaml.safe_load(path.read_text())
    del doc["config"]["fraiseql:edge"]["owns_entry_points"]
    path.write_text(yaml.safe_dump(doc))
    result = world.run(path)

    assert result.code == 3
    config, waf = problems(result)
    assert config.startswith("config: fraiseql:edge.owns_entry_points is not set") and "[waf, rate_limit, cache]" in config
    assert waf.startswith("rulesets: http_request_firewall_managed: the zone already has the entry point 'security team WAF'")
    assert "rulesets: http_ratelimit: none yet; the stack creates it" in lines(result, "ok")


def test_missing_secrets_are_problems_and_the_other_checks_still_run(world: World) -> None:
    path = phase_c_world(world)
    doc = yaml.safe_load(path.read_text())
    del doc["config"]["fraiseql:edge_purge_token"], doc["config"]["fraiseql:origin_auth_token"]
    path.write_text(yaml.safe_dump(doc))
    result = world.run(path)

    assert result.code == 3
    purge, origin = problems(result)
    assert purge.startswith("config: fraiseql:edge_purge_token: missing") and "pulumi config set --secret" in purge
    assert origin.startswith("config: fraiseql:origin_auth_token: missing") and "pulumi config set --secret" in origin
    assert {line.split(":")[0] for line in lines(result, "ok")} >= {"engine", "lambda", "arc", "zone", "rulesets", "ssl"}


def test_a_secret_in_plain_text_is_still_refused_with_exit_2(world: World) -> None:
    path = phase_c_world(world)
    doc = yaml.safe_load(path.read_text())
    doc["config"]["fraiseql:origin_auth_token"] = "a-plain-value-in-the-stack-file-0123456789"
    path.write_text(yaml.safe_dump(doc))
    result = world.run(path)
    assert result.code == 2
    assert "fraiseql:origin_auth_token: is stored in plain text" in result.last("result")["detail"]
    assert world.urls == [] and world.harness.calls == []
