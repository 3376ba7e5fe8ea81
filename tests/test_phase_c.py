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

from components._kit import Labels
from components.edge import BUNDLE_DIR, DEPLOYMENT_VARS, Edge, EdgeArgs, EdgeOrigin, WorkerBundle, read_jsonc
from core.config import ConfigError
from core.naming import region_code
from infra.synth import REPO, SECRET_PLACEHOLDER
from tests.conftest import config_variant
from tests.helpers import one

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
WORKER = REPO / "worker"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SCRIPT = "cloudflare:index/workersScript:WorkersScript"
MONITOR = "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor"
ORIGIN_TOKEN = "origin-token-7c1e"


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
                **{"owned_entry_points": ("waf", "rate_limit", "cache"), **extra},
            ),
            labels=Labels(stack="phase-c", phase="c"),
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
        alb = one(phase_c, "aws:lb/loadBalancer:LoadBalancer", f"fraiseql-alb-{region_code(r)}")
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


def test_slo_check_credits_the_edge_failover(phase_c):
    from infra.pack import run_pack

    result = run_pack(phase_c.registrations)
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


# --- issue 20: what the real Cloudflare API and a first `pulumi up` need ------------------------------

RULESET = "cloudflare:index/ruleset:Ruleset"
EDGE_ZONE = "fedcba9876543210fedcba9876543210"


def _edge_variant(change):
    from tests.conftest import synth_variant

    return synth_variant("phase-c", lambda v: change(v["edge"]))


def test_worker_waits_for_the_queues_it_binds(phase_c):
    """Item 9: a binding to a queue that does not exist yet fails the script upload."""
    from tests.helpers import waits_for

    script = one(phase_c, SCRIPT, "fraiseql-edge-worker")
    queues = phase_c.of_type("cloudflare:index/queue:Queue")
    bound = {b["queueName"] for b in _bindings(script).values() if b["type"] == "queue"}
    assert bound and bound <= {q.inputs["queueName"] for q in queues}
    for queue in (q for q in queues if q.inputs["queueName"] in bound):  # the dead letter queue is the consumer's
        assert queue.urn in script.property_dependencies["bindings"]
        assert waits_for(phase_c, script, queue), f"the worker could be uploaded before {queue.name}"


def test_zone_ssl_mode_is_pinned_to_full_strict(phase_c):
    """Item 16: with Flexible, Cloudflare speaks plain HTTP to the ALB, whose 80 -> 443 redirect loops."""
    ssl = [r for r in phase_c.of_type("cloudflare:index/zoneSetting:ZoneSetting") if r.inputs["settingId"] == "ssl"]
    assert [(r.inputs["zoneId"], r.inputs["value"]) for r in ssl] == [(EDGE_ZONE, "strict")]


def _owasp(syn):
    waf = one(syn, RULESET, "fraiseql-edge-waf")
    return next(r for r in waf.inputs["rules"] if r["actionParameters"]["id"] == "4814384a9e5d4991b9815dcfc25d2f1f")


def _score_rule(rule):
    (override,) = rule["actionParameters"]["overrides"]["rules"]
    assert override["id"] == "6179ae15870a4bb7b2d480d4843b323c"  # 949110: Inbound Anomaly Score Exceeded
    return override


def test_owasp_ruleset_logs_instead_of_blocking_by_default(phase_c):
    """Item 17: the OWASP score rule's action is `log` unless the stack says otherwise."""
    rule = _owasp(phase_c)
    assert rule.get("enabled", True) is True
    assert _score_rule(rule) == {"id": "6179ae15870a4bb7b2d480d4843b323c", "action": "log", "scoreThreshold": 40}
    # paranoia level 1: the rules of levels 2 to 4 are disabled
    assert rule["actionParameters"]["overrides"]["categories"] == [
        {"category": f"paranoia-level-{n}", "enabled": False} for n in (2, 3, 4)
    ]
    # the Cloudflare Managed Ruleset is unchanged
    waf = one(phase_c, RULESET, "fraiseql-edge-waf")
    managed = next(r for r in waf.inputs["rules"] if r["actionParameters"]["id"] == "efb7b8c949ac4650a09736fc376e9aee")
    assert "overrides" not in managed["actionParameters"]


@pytest.mark.parametrize("waf, enabled, action, threshold, disabled_levels", [
    ({"owasp_action": "block", "owasp_score_threshold": 60, "owasp_paranoia_level": 2}, True, "block", 60, [3, 4]),
    ({"owasp_action": "off"}, False, "block", 40, [2, 3, 4]),
])
def test_owasp_action_threshold_and_paranoia_come_from_config(waf, enabled, action, threshold, disabled_levels):
    rule = _owasp(_edge_variant(lambda e: e.update(waf=waf)))
    assert rule.get("enabled", True) is enabled
    assert (_score_rule(rule)["action"], _score_rule(rule)["scoreThreshold"]) == (action, threshold)
    assert [c["category"] for c in rule["actionParameters"]["overrides"]["categories"]] == [
        f"paranoia-level-{n}" for n in disabled_levels
    ]


@pytest.mark.parametrize("change, key, fix", [
    (lambda e: e.update(plan="business"), "fraiseql:edge.waf.owasp_action", "owasp_action: off"),
    (lambda e: e.update(waf={"owasp_score_threshold": 50}), "fraiseql:edge.waf.owasp_score_threshold", "25"),
    (lambda e: e.update(waf={"owasp_action": "simulate"}), "fraiseql:edge.waf.owasp_action", "log"),
    (lambda e: e.update(waf={"owasp_paranoia_level": 5}), "fraiseql:edge.waf.owasp_paranoia_level", "paranoia"),
])
def test_owasp_settings_are_validated(change, key, fix):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: change(v["edge"]))
    line = next(line for line in str(info.value).splitlines() if key in line)
    assert fix in line


def test_entry_points_need_an_explicit_acknowledgement():
    """Item 6: owning an entry point takes over that phase for every hostname of the zone."""
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v["edge"].pop("owns_entry_points"))
    line = next(line for line in str(info.value).splitlines() if "fraiseql:edge.owns_entry_points" in line)
    assert "ops preflight" in line and "owns_entry_points: [waf, rate_limit, cache]" in line and "[]" in line


@pytest.mark.parametrize("owned, expected", [
    ([], set()),
    (["cache"], {"http_request_cache_settings"}),
    (["rate_limit", "waf"], {"http_ratelimit", "http_request_firewall_managed"}),
])
def test_only_the_owned_entry_points_are_created(owned, expected):
    def change(e):
        e["owns_entry_points"] = owned
        if "waf" not in owned:
            e.pop("waf")

    syn = _edge_variant(change)
    assert {r.inputs["phase"] for r in syn.of_type(RULESET)} == expected
    # the zone's SSL mode and the worker do not depend on which phases the stack owns
    assert len(syn.of_type("cloudflare:index/zoneSetting:ZoneSetting")) == 1
    assert one(syn, SCRIPT, "fraiseql-edge-worker")


def test_every_rule_the_stack_owns_matches_the_api_hostname_only(phase_c):
    rulesets = phase_c.of_type(RULESET)
    assert len(rulesets) == 3
    for rs in rulesets:
        assert rs.inputs["kind"] == "zone"
        assert rs.inputs["name"] == f"fraiseql phase-c {rs.name.removeprefix('fraiseql-edge-').replace('-rules', '').replace('-', ' ')}"
        for rule in rs.inputs["rules"]:
            assert rule["expression"].startswith('(http.host eq "api.example.com")'), (rs.name, rule["expression"])


@pytest.mark.parametrize("change, key, fix", [
    (lambda e: (e.update(owns_entry_points=["cache"])), "fraiseql:edge.waf", "remove edge.waf"),
    (lambda e: e.update(plan="free", waf={"owasp_action": "off"}), "fraiseql:edge.owns_entry_points", "plan: pro"),
    (lambda e: e.update(owns_entry_points=["cache", "cache"]), "fraiseql:edge.owns_entry_points", "twice"),
    (lambda e: e.update(owns_entry_points=["firewall"]), "fraiseql:edge.owns_entry_points[0]", "waf"),
])
def test_entry_point_config_is_refused_with_its_fix(change, key, fix):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: change(v["edge"]))
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith(key + ":"))
    assert fix in line


# Item 5: who answers for which name. Cloudflare is authoritative for the public zone; the origins live
# in a Route 53 subzone it delegates; during B -> C Route 53 keeps answering for the public name.

@pytest.mark.parametrize("change, key, fix", [
    (lambda v: v["edge"].pop("dns_authority"), "fraiseql:edge.dns_authority", "dns_authority: route53"),
    (lambda v: v["edge"].update(dns_authority="route53"), "fraiseql:edge.route53_public_zone_id", "phase b's dns.zone_id"),
    (lambda v: v["edge"].update(route53_public_zone_id="Z0EXAMPLE0000000000"), "fraiseql:edge.route53_public_zone_id",
     "remove it"),
    (lambda v: v["edge"].update(dns_authority="route53", route53_public_zone_id=v["dns"]["zone_id"]), "fraiseql:dns.zone_id",
     "a zone of their own"),
    (lambda v: v["dns"].pop("zone_name"), "fraiseql:dns.zone_name", "zone_name: origin.api.example.com"),
    (lambda v: v["dns"].update(zone_name="example.com"), "fraiseql:dns.zone_name", "time out"),
    (lambda v: v["dns"].update(zone_name="origin.example.org"), "fraiseql:dns.zone_name", "subzone"),
    (lambda v: v["dns"].update(record_name="origin.example.com"), "fraiseql:dns.record_name", "origin.api.example.com"),
    (lambda v: v["dns"].update(zone_name="api.example.com", record_name="origin.api.example.com"), "fraiseql:edge.hostname",
     "keep the public name outside"),
    (lambda v: v["dns"].update(https=False), "fraiseql:dns.https", "https: true"),
])
def test_dns_authority_design_is_checked_with_its_fix(change, key, fix):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", change)
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith(key + ":"))
    assert fix in line


def test_origin_records_and_certificate_validation_live_in_the_delegated_subzone(phase_c):
    records = phase_c.of_type("aws:route53/record:Record")
    assert {r.inputs["zoneId"] for r in records if r.inputs.get("latencyRoutingPolicies")} == {"Z0ORIGINEXAMPLE00000"}
    validation = [r for r in records if "cert-validation" in r.name]
    assert validation and {r.inputs["zoneId"] for r in validation} == {"Z0ORIGINEXAMPLE00000"}
    # Cloudflare answers for the public name: no Route 53 record claims it
    assert [r.name for r in records if r.inputs["name"] == "api.example.com"] == []


def test_a_zone_name_outside_the_records_is_refused_in_phase_a_too():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-a", lambda v: v["dns"].update(zone_name="example.org"))
    assert "fraiseql:dns.record_name: api.example.com is not in the zone example.org" in str(info.value)
