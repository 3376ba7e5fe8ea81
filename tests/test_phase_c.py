"""Phase C under mocks: phase B behind the Cloudflare edge.

The seed's phase C edge cases, each answered here and shown by a test:
- cache invalidation across regions -> the worker invalidates locally and queues purges by tag
  (workerd tests in worker/test) with the zone, a secret purge token, the purge queue and the
  persisted-query KV namespace declared here from wrangler.jsonc (test_worker_*, test_edge_*),
- only the edge reaches the origins -> a secret origin auth header bound to the worker and sent by
  the monitor (test_origin_auth_*),
- cache bypass during writes -> the cache rule never caches non-GET, and the worker never caches
  mutations (test_cache_rule_*; worker/test/mutations.test.mjs),
- regional failure behind the edge -> monitored pools per region, zero-downtime failover across
  pools, stale-if-error in the worker (test_load_balancer_*; worker/test/staleness.test.mjs).
"""

from __future__ import annotations

import json
import re
import shutil

import pulumi
import pytest

from components.edge import BUNDLE_DIR, DEPLOYMENT_VARS, Edge, EdgeArgs, EdgeOrigin, WorkerBundle, read_jsonc
from core.config import ConfigError
from infra.synth import REPO, SECRET_PLACEHOLDER
from tests.conftest import config_variant
from tests.helpers import one

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
WORKER = REPO / "worker"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SCRIPT = "cloudflare:index/workersScript:WorkersScript"
MONITOR = "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor"
ORIGIN_TOKEN = "origin-token-7c1e"


@pytest.fixture(scope="module")
def phase_c():
    from infra.synth import synthesize

    return synthesize("phase-c")


def _unwrap(raw):
    return raw["value"] if isinstance(raw, dict) and SECRET_SIG in raw else raw


def _bindings(script):
    return {b["name"]: b for b in _unwrap(script.inputs["bindings"])}


def _edge_alone(**extra):
    """The Edge component on its own under mocks, with the origin auth token given as a plain string."""
    from infra.synth import synthesize

    def run():
        edge = Edge(
            "fraiseql-edge",
            EdgeArgs(
                account_id="0123456789abcdef0123456789abcdef",
                zone_id="fedcba9876543210fedcba9876543210",
                zone_name="example.com",
                hostname="api.example.com",
                origin_hostname="origin.api.example.com",
                origins=tuple(EdgeOrigin(region=r, address=f"alb.{r}.example") for r in REGIONS),
                worker=WorkerBundle.load(WORKER),
                purge_api_token=pulumi.Output.secret("purge-token"),
                health_path="/health",
                steering_policy="proximity",
                monitor_interval_seconds=15,
                check_regions=("WNAM",),
                session_affinity_ttl_seconds=300,
                rate_limit_requests_per_minute=1200,
                stack="phase-c",
                phase="c",
                **extra,
            ),
        )
        return {"originAuthHeader": edge.origin_auth_header, "originAuthToken": edge.origin_auth_token}

    return synthesize("phase-c", run=run)


def test_worker_is_deployed_from_the_tested_package(phase_c):
    config = read_jsonc((WORKER / "wrangler.jsonc").read_text())
    script = one(phase_c, SCRIPT, "fraiseql-edge-worker")
    # The bundle wrangler makes of `main` and its imports: the file the workerd suites run (and keep fresh).
    bundle = (WORKER / BUNDLE_DIR / "worker.js").read_text()
    assert script.inputs["content"] == bundle
    assert script.inputs["mainModule"] == "worker.js" == config["main"].split("/")[-1]
    assert not re.search(r"^\s*import\s", bundle, re.M), "one self-contained module"
    assert re.search(r"^export \{\n\s+\w+ as default\n\};", bundle, re.M)
    assert script.inputs["compatibilityDate"] == config["compatibility_date"]
    bindings = _bindings(script)
    for key, value in config["vars"].items():
        assert bindings[key]["type"] == "plain_text"
        if key not in DEPLOYMENT_VARS:
            assert bindings[key] == {"name": key, "type": "plain_text", "text": value}
    assert bindings["ORIGIN_AUTH_HEADER"]["text"] == "x-fraiseql-origin-auth"
    assert bindings["PURGE_API_TOKEN"]["type"] == "secret_text"


def test_worker_purges_through_the_zone_with_a_secret_token(phase_c):
    script = one(phase_c, SCRIPT, "fraiseql-edge-worker")
    assert SECRET_SIG in script.inputs["bindings"], "bindings carrying the token must be secret in state"
    bindings = _bindings(script)
    assert bindings["PURGE_API_TOKEN"]["type"] == "secret_text"
    assert bindings["ZONE_ID"]["text"] == "fedcba9876543210fedcba9876543210"
    assert bindings["ORIGIN_URL"]["text"] == "https://api.example.com"


def test_edge_declares_the_registry_queue_and_limiter_of_wrangler_jsonc(phase_c):
    bindings = _bindings(one(phase_c, SCRIPT, "fraiseql-edge-worker"))
    kv = one(phase_c, "cloudflare:index/workersKvNamespace:WorkersKvNamespace", "fraiseql-edge-kv-persisted-queries")
    assert bindings["PERSISTED_QUERIES"] == {"name": "PERSISTED_QUERIES", "type": "kv_namespace", "namespaceId": f"{kv.name}-id"}
    queue = one(phase_c, "cloudflare:index/queue:Queue", "fraiseql-edge-queue-fraiseql-purge")
    assert queue.inputs["queueName"] == "fraiseql-purge-phase-c"
    assert bindings["PURGE_QUEUE"] == {"name": "PURGE_QUEUE", "type": "queue", "queueName": "fraiseql-purge-phase-c"}
    consumer = one(phase_c, "cloudflare:index/queueConsumer:QueueConsumer", "fraiseql-edge-queue-consumer-fraiseql-purge")
    assert consumer.inputs["queueId"] == f"{queue.name}-id"
    assert consumer.inputs["scriptName"] == "fraiseql-edge-cache-phase-c"
    # Purges whose retries run out go to a dead letter queue the worker consumes too.
    dlq = one(phase_c, "cloudflare:index/queue:Queue", "fraiseql-edge-queue-fraiseql-purge-dlq")
    assert dlq.inputs["queueName"] == "fraiseql-purge-dlq-phase-c"
    assert consumer.inputs["deadLetterQueue"] == "fraiseql-purge-dlq-phase-c"
    dlq_consumer = one(phase_c, "cloudflare:index/queueConsumer:QueueConsumer", "fraiseql-edge-queue-consumer-fraiseql-purge-dlq")
    assert dlq_consumer.inputs["queueId"] == f"{dlq.name}-id"
    assert dlq_consumer.inputs["scriptName"] == "fraiseql-edge-cache-phase-c"
    assert "deadLetterQueue" not in dlq_consumer.inputs
    # One consumer at a time: the worker's pacing under the purge rate limit relies on it.
    assert consumer.inputs["settings"] == {
        "batchSize": 100, "maxWaitTimeMs": 50, "maxRetries": 10, "maxConcurrency": 1, "retryDelay": 1,
    }
    assert bindings["MUTATION_LIMITER"] == {
        "name": "MUTATION_LIMITER", "type": "ratelimit", "namespaceId": "1001", "simple": {"limit": 60, "period": 60},
    }


def test_worker_bundle_missing_is_one_clear_error(tmp_path):
    shutil.copy(WORKER / "wrangler.jsonc", tmp_path / "wrangler.jsonc")
    with pytest.raises(ValueError, match=r"dist/worker\.js is missing: run `npm run build`"):
        WorkerBundle.load(tmp_path)


def test_origin_auth_token_is_bound_to_the_worker_as_a_secret():
    syn = _edge_alone(origin_auth_token=ORIGIN_TOKEN, plan="pro")
    script = one(syn, SCRIPT, "fraiseql-edge-worker")
    assert SECRET_SIG in script.inputs["bindings"]
    bindings = _bindings(script)
    assert bindings["ORIGIN_AUTH_TOKEN"] == {"name": "ORIGIN_AUTH_TOKEN", "type": "secret_text", "text": ORIGIN_TOKEN}
    assert bindings["ORIGIN_AUTH_HEADER"]["text"] == "x-fraiseql-origin-auth"
    assert bindings["PURGE_PLAN"]["text"] == "pro"
    assert syn.outputs == {"originAuthHeader": "x-fraiseql-origin-auth", "originAuthToken": ORIGIN_TOKEN}


def test_origin_auth_header_is_on_every_monitor_probe_and_secret():
    syn = _edge_alone(origin_auth_token=ORIGIN_TOKEN, origin_auth_header="X-Edge-Secret")
    monitor = one(syn, MONITOR, "fraiseql-edge-monitor")
    assert SECRET_SIG in monitor.inputs["header"], "the monitor's headers carry the token: secret in state"
    assert _unwrap(monitor.inputs["header"]) == {"Host": ["origin.api.example.com"], "x-edge-secret": [ORIGIN_TOKEN]}
    assert _bindings(one(syn, SCRIPT, "fraiseql-edge-worker"))["ORIGIN_AUTH_HEADER"]["text"] == "x-edge-secret"


def test_origin_auth_token_never_appears_outside_a_secret():
    def plain_occurrences(value):
        if isinstance(value, dict):
            if SECRET_SIG in value:
                return 0
            return sum(plain_occurrences(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(plain_occurrences(v) for v in value)
        return int(isinstance(value, str) and ORIGIN_TOKEN in value)

    syn = _edge_alone(origin_auth_token=ORIGIN_TOKEN)
    assert sum(plain_occurrences(r.inputs) for r in syn.registrations) == 0
    assert sum(json.dumps(r.inputs).count(ORIGIN_TOKEN) for r in syn.registrations) == 2  # worker + monitor


@pytest.mark.parametrize("extra, message", [
    ({"origin_auth_header": "x bad"}, "is not a header name"),
    ({"origin_auth_header": "Authorization"}, "would clash"),
    ({"plan": "gold"}, "is not one of free, pro, business, enterprise"),
])
def test_edge_refuses_bad_origin_auth_or_plan_args(extra, message):
    with pytest.raises(Exception) as info:
        _edge_alone(origin_auth_token=ORIGIN_TOKEN, **extra)
    assert message in str(info.value)


def test_worker_route_covers_the_api_hostname(phase_c):
    route = one(phase_c, "cloudflare:index/workersRoute:WorkersRoute", "fraiseql-edge-route")
    script = one(phase_c, SCRIPT, "fraiseql-edge-worker")
    assert route.inputs["pattern"] == "api.example.com/*"
    assert route.inputs["script"] == script.inputs["scriptName"]


def test_load_balancer_has_a_monitored_pool_per_region_and_fails_over_across_pools(phase_c):
    lb = one(phase_c, "cloudflare:index/loadBalancer:LoadBalancer", "fraiseql-edge-lb")
    monitor = one(phase_c, MONITOR, "fraiseql-edge-monitor")
    pools = {r: one(phase_c, "cloudflare:index/loadBalancerPool:LoadBalancerPool", f"fraiseql-edge-pool-{r}") for r in REGIONS}
    assert lb.inputs["defaultPools"] == [f"{pools[r].name}-id" for r in REGIONS]
    assert lb.inputs["fallbackPool"] == f"{pools['us-east-1'].name}-id"
    assert lb.inputs["steeringPolicy"] == "proximity" and lb.inputs["proxied"] is True
    assert lb.inputs["adaptiveRouting"] == {"failoverAcrossPools": True}
    assert lb.inputs["sessionAffinityAttributes"]["zeroDowntimeFailover"] == "sticky"
    assert lb.inputs["sessionAffinity"] == "cookie"
    assert monitor.inputs["path"] == "/health"
    # the stack's origin token rides on the monitor too, so health checks pass the origins' rule
    assert _unwrap(monitor.inputs["header"]) == {"Host": ["origin.api.example.com"],
                                                 "x-fraiseql-origin-auth": [SECRET_PLACEHOLDER]}
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
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v.pop("origin_auth_token"))
    assert "fraiseql:origin_auth_token: missing" in str(info.value) and "--secret" in str(info.value)


def test_edge_block_in_phase_b_is_refused():
    from tests.conftest import stack_values

    edge = stack_values("phase-c")["edge"]
    with pytest.raises(ConfigError) as info:
        config_variant("phase-b", lambda v: v.update(edge=edge))
    assert "the edge belongs to phase c" in str(info.value)
