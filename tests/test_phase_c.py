"""Phase C under mocks: phase B behind the Cloudflare edge.

The seed's phase C edge cases, each answered here and shown by a test:
- cache invalidation across regions -> the worker purges by tag through the API (workerd tests in
  worker/test) with the zone and a secret purge token bound here (test_worker_*),
- cache bypass during writes -> the cache rule never caches non-GET, and the worker never caches
  mutations (test_cache_rule_*; worker/test/mutations.test.mjs),
- regional failure behind the edge -> monitored pools per region, zero-downtime failover across
  pools, stale-if-error in the worker (test_load_balancer_*; worker/test/staleness.test.mjs).
"""

from __future__ import annotations

import json

import pytest

from core.config import ConfigError
from infra.synth import REPO
from tests.conftest import config_variant
from tests.helpers import one

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
WORKER = REPO / "worker"
SECRET_SIG = "4dabf18193072939515e22adb298388d"


@pytest.fixture(scope="module")
def phase_c():
    from infra.synth import synthesize

    return synthesize("phase-c")


def _bindings(script):
    raw = script.inputs["bindings"]
    if isinstance(raw, dict) and SECRET_SIG in raw:
        raw = raw["value"]
    return {b["name"]: b for b in raw}


def test_worker_is_deployed_from_the_tested_package(phase_c):
    config = json.loads((WORKER / "worker.config.json").read_text())
    script = one(phase_c, "cloudflare:index/workersScript:WorkersScript", "fraiseql-edge-worker")
    assert script.inputs["content"] == (WORKER / config["main"]).read_text()
    assert script.inputs["mainModule"] == config["main_module"]
    assert script.inputs["compatibilityDate"] == config["compatibility_date"]
    bindings = _bindings(script)
    for key, value in config["vars"].items():
        assert bindings[key] == {"name": key, "type": "plain_text", "text": value}
    for key in config["deployment_bindings"] + config["secret_bindings"]:
        assert key in bindings


def test_worker_purges_through_the_zone_with_a_secret_token(phase_c):
    script = one(phase_c, "cloudflare:index/workersScript:WorkersScript", "fraiseql-edge-worker")
    assert SECRET_SIG in script.inputs["bindings"], "bindings carrying the token must be secret in state"
    bindings = _bindings(script)
    assert bindings["PURGE_API_TOKEN"]["type"] == "secret_text"
    assert bindings["ZONE_ID"]["text"] == "fedcba9876543210fedcba9876543210"
    assert bindings["ORIGIN_URL"]["text"] == "https://api.example.com"


def test_worker_route_covers_the_api_hostname(phase_c):
    route = one(phase_c, "cloudflare:index/workersRoute:WorkersRoute", "fraiseql-edge-route")
    script = one(phase_c, "cloudflare:index/workersScript:WorkersScript", "fraiseql-edge-worker")
    assert route.inputs["pattern"] == "api.example.com/*"
    assert route.inputs["script"] == script.inputs["scriptName"]


def test_load_balancer_has_a_monitored_pool_per_region_and_fails_over_across_pools(phase_c):
    lb = one(phase_c, "cloudflare:index/loadBalancer:LoadBalancer", "fraiseql-edge-lb")
    monitor = one(phase_c, "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor", "fraiseql-edge-monitor")
    pools = {r: one(phase_c, "cloudflare:index/loadBalancerPool:LoadBalancerPool", f"fraiseql-edge-pool-{r}") for r in REGIONS}
    assert lb.inputs["defaultPools"] == [f"{pools[r].name}-id" for r in REGIONS]
    assert lb.inputs["fallbackPool"] == f"{pools['us-east-1'].name}-id"
    assert lb.inputs["steeringPolicy"] == "proximity" and lb.inputs["proxied"] is True
    assert lb.inputs["adaptiveRouting"] == {"failoverAcrossPools": True}
    assert lb.inputs["sessionAffinityAttributes"]["zeroDowntimeFailover"] == "sticky"
    assert lb.inputs["sessionAffinity"] == "cookie"
    assert monitor.inputs["path"] == "/health" and monitor.inputs["header"] == {"Host": ["origin.api.example.com"]}
    for r, pool in pools.items():
        alb = one(phase_c, "aws:lb/loadBalancer:LoadBalancer", f"fraiseql-{r}-alb")
        assert pool.inputs["origins"][0]["address"] == alb.outputs["dnsName"]
        assert pool.inputs["monitor"] == f"{monitor.name}-id"


def test_cache_rule_never_caches_non_get(phase_c):
    rules = one(phase_c, "cloudflare:index/ruleset:Ruleset", "fraiseql-edge-cache-rules")
    assert rules.inputs["phase"] == "http_request_cache_settings"
    [rule] = rules.inputs["rules"]
    assert 'http.request.method ne "GET"' in rule["expression"]
    assert rule["actionParameters"] == {"cache": False}


def test_waf_and_rate_limit_rulesets(phase_c):
    waf = one(phase_c, "cloudflare:index/ruleset:Ruleset", "fraiseql-edge-waf")
    assert waf.inputs["phase"] == "http_request_firewall_managed"
    assert {r["actionParameters"]["id"] for r in waf.inputs["rules"]} == {
        "efb7b8c949ac4650a09736fc376e9aee", "4814384a9e5d4991b9815dcfc25d2f1f"
    }
    rate = one(phase_c, "cloudflare:index/ruleset:Ruleset", "fraiseql-edge-rate-limit")
    assert rate.inputs["phase"] == "http_ratelimit"
    assert rate.inputs["rules"][0]["ratelimit"]["requestsPerPeriod"] == 1200


def test_phase_c_keeps_all_of_phase_b(phase_c):
    assert len(phase_c.of_type("aws:rds/instance:Instance")) == 3
    assert len(phase_c.of_type("aws:route53recoverycontrol/routingControl:RoutingControl")) == 3
    assert phase_c.outputs["apiHostname"] == "api.example.com"


def test_slo_check_credits_the_edge_failover():
    from infra.pack import run_pack
    from infra.synth import synthesize

    result = run_pack(synthesize("phase-c").registrations)
    rto = next(b for b in result.bounds if b.name == "RTO")
    assert rto.feasible and rto.floor < 1 and "edge origin retry" in rto.arithmetic


def test_seed_budget_that_disagrees_with_its_own_line_items_is_refused():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v["budget"].update(monthly_usd=24500))
    assert "line items add up to $24,000.00, not monthly_usd $24,500.00" in str(info.value)


def test_phase_c_without_edge_config():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v.pop("edge"))
    assert "fraiseql:edge: phase c needs the Cloudflare edge" in str(info.value)


def test_edge_hostname_outside_its_zone():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v["edge"].update(hostname="api.other.org"))
    assert "fraiseql:edge.hostname" in str(info.value)


def test_phase_c_needs_the_purge_token():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v.pop("edge_purge_token"))
    assert "fraiseql:edge_purge_token: missing" in str(info.value)


def test_edge_block_in_phase_b_is_refused():
    from tests.conftest import stack_values

    edge = stack_values("phase-c")["edge"]
    with pytest.raises(ConfigError) as info:
        config_variant("phase-b", lambda v: v.update(edge=edge))
    assert "the edge belongs to phase c" in str(info.value)
