"""Edge: the Cloudflare front of phase C.

- The GraphQL-caching worker (`worker/`), deployed from the same `wrangler.jsonc` that `wrangler dev`
  and its workerd tests use, on a route over the API hostname, with what that file declares: a KV
  namespace for persisted queries, a purge queue and its consumer, a per-client mutation rate limit.
- Origin authentication: a secret header the worker adds to every origin request and the load
  balancer monitor sends on every probe, for an ALB listener rule to require.
- A load balancer over one pool per regional origin (the ALBs), with a shared health monitor,
  proximity steering, a fallback pool, zero-downtime failover (a failed connection is retried on
  another origin, which is what hides a regional failure in well under a second) and cookie
  session affinity (a client keeps reading the region it wrote to).
- WAF managed rules, a rate limit, and a cache rule that never lets non-GET requests be cached, each
  in the zone's entry-point ruleset of its phase, and only for the phases the stack owns
  (`owned_entry_points`): Cloudflare keeps one entry-point ruleset per phase per zone, and its owner
  owns that phase for every hostname. Every rule matches the API hostname only. The OWASP ruleset
  starts in `log` (or `off`), never blocking a JSON API from day one.
  The worker decides what GET/POST query traffic to cache through the Cache API.
- The zone's SSL mode pinned to Full (strict): the edge reaches the origins over verified TLS only
  ("Flexible" would send plain HTTP to the ALB, whose 80 -> 443 redirect then loops).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_cloudflare as cf
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels
from core.config import ENTRY_POINT_PHASES
from core.naming import entry_point_ruleset_name
from core.regions import REGIONS

WAF_MANAGED_RULESETS = {
    "cloudflare-managed": "efb7b8c949ac4650a09736fc376e9aee",
    "owasp-core": "4814384a9e5d4991b9815dcfc25d2f1f",
}
# The OWASP ruleset's last rule, "949110: Inbound Anomaly Score Exceeded": its action and score
# threshold are the ruleset's (Cloudflare WAF docs, "Configure the OWASP ruleset via API").
OWASP_SCORE_RULE = "6179ae15870a4bb7b2d480d4843b323c"
OWASP_ACTIONS = ("log", "block", "off")
OWASP_SCORE_THRESHOLDS = (25, 40, 60)
DEFAULT_ORIGIN_AUTH_HEADER = "x-fraiseql-origin-auth"
PURGE_PLANS = ("free", "pro", "business", "enterprise")
# Vars the component sets per deployment, whatever wrangler.jsonc says (its values suit `wrangler dev`).
DEPLOYMENT_VARS = ("ORIGIN_URL", "ZONE_ID", "ORIGIN_AUTH_HEADER", "PURGE_PLAN")
_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def read_jsonc(text: str) -> Any:
    """JSON with comments and trailing commas, as wrangler reads `wrangler.jsonc`."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    # Trailing commas, now that strings are the only places a comma can hide.
    cleaned: list[str] = []
    for piece in out:
        if piece in ("}", "]"):
            while cleaned and cleaned[-1].isspace():
                cleaned.pop()
            if cleaned and cleaned[-1] == ",":
                cleaned.pop()
        cleaned.append(piece)
    return json.loads("".join(cleaned))


# Where `npm run build` (wrangler deploy --dry-run --outdir dist) puts the one module it bundles from
# `main` and the modules it imports; committed, and kept fresh by the worker's tests.
BUNDLE_DIR = "dist"


@dataclass(frozen=True)
class WorkerBundle:
    """The worker package as deployed: one bundled module plus the config `wrangler dev` and its tests use."""

    name: str
    main_module: str
    content: str
    compatibility_date: str
    compatibility_flags: tuple[str, ...]
    vars: dict[str, str]
    secrets: tuple[str, ...] = ()
    kv_namespaces: tuple[str, ...] = ()
    # binding name -> queue name, and queue name -> consumer settings (wrangler's keys)
    queue_producers: dict[str, str] = field(default_factory=dict)
    queue_consumers: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratelimits: tuple[dict[str, Any], ...] = ()

    @classmethod
    def load(cls, package: Path) -> "WorkerBundle":
        config = read_jsonc((package / "wrangler.jsonc").read_text())
        queues = config.get("queues", {})
        main_module = Path(config["main"]).name
        bundle = package / BUNDLE_DIR / main_module
        if not bundle.is_file():
            raise ValueError(f"worker bundle {bundle} is missing: run `npm run build` in {package}")
        return cls(
            name=config["name"],
            main_module=main_module,
            content=bundle.read_text(),
            compatibility_date=config["compatibility_date"],
            compatibility_flags=tuple(config.get("compatibility_flags", ())),
            vars=dict(config.get("vars", {})),
            secrets=tuple(config.get("secrets", {}).get("required", ())),
            kv_namespaces=tuple(k["binding"] for k in config.get("kv_namespaces", ())),
            queue_producers={p["binding"]: p["queue"] for p in queues.get("producers", ())},
            queue_consumers={c["queue"]: {k: v for k, v in c.items() if k != "queue"} for c in queues.get("consumers", ())},
            ratelimits=tuple(config.get("ratelimits", ())),
        )


@dataclass(frozen=True, kw_only=True)
class EdgeOrigin:
    region: str
    address: Input[str]      # the region's ALB DNS name


@dataclass(frozen=True, kw_only=True)
class EdgeArgs:
    account_id: str
    zone_id: str
    zone_name: str
    hostname: str
    # The name the ALB certificates carry (Route 53): sent as Host and SNI to every origin.
    origin_hostname: str
    origins: tuple[EdgeOrigin, ...]
    worker: WorkerBundle
    purge_api_token: Input[str]
    health_path: str
    steering_policy: str
    monitor_interval_seconds: int
    check_regions: tuple[str, ...]
    session_affinity_ttl_seconds: int
    rate_limit_requests_per_minute: int
    fallback_region: Optional[str] = None
    # Origin authentication: the worker sends `origin_auth_header: <token>` on every origin request
    # and the monitor on every probe. Without a token neither does (and an ALB rule that requires
    # the header would refuse the edge).
    origin_auth_token: Optional[Input[str]] = None
    origin_auth_header: str = DEFAULT_ORIGIN_AUTH_HEADER
    # The zone's plan sets the worker's purge pacing; None keeps wrangler.jsonc's PURGE_PLAN.
    plan: Optional[str] = None
    # The zone entry points this stack creates and owns (`waf`, `rate_limit`, `cache`): no default,
    # since owning one takes that phase over for every hostname of the zone.
    owned_entry_points: tuple[str, ...]
    # The OWASP ruleset: `log` (Enterprise plans only), `block` or `off`, its paranoia level and threshold.
    owasp_action: str = "log"
    owasp_paranoia_level: int = 1
    owasp_score_threshold: int = 40


class Edge(Component):
    load_balancer_id: pulumi.Output[str]
    pool_ids: dict[str, pulumi.Output[str]]
    monitor_id: pulumi.Output[str]
    worker_name: str
    origin_auth_header: str
    origin_auth_token: Optional[pulumi.Output[str]]
    kv_namespace_ids: dict[str, pulumi.Output[str]]
    queue_names: dict[str, str]

    def __init__(self, name: str, args: EdgeArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        _check(args)
        super().__init__("fraiseql:edge:Edge", name, labels=labels, opts=opts)
        child = self.child
        host = args.hostname
        auth_header = args.origin_auth_header.lower()
        auth_token = pulumi.Output.secret(args.origin_auth_token) if args.origin_auth_token is not None else None
        monitor_header: Input[dict[str, list[str]]] = {"Host": [args.origin_hostname]}
        if auth_token is not None:
            monitor_header = auth_token.apply(lambda t: {"Host": [args.origin_hostname], auth_header: [t]})

        monitor = cf.LoadBalancerMonitor(
            self.n("monitor"),
            account_id=args.account_id,
            type="https",
            method="GET",
            path=args.health_path,
            port=443,
            expected_codes="200",
            interval=args.monitor_interval_seconds,
            timeout=5,
            retries=1,
            consecutive_down=2,
            consecutive_up=2,
            # The ALB's certificate names the origin hostname, not the ALB's own DNS name; probes
            # carry the origin auth header too, or the ALB rule would fail every health check.
            header=monitor_header,
            description=f"FraiseQL {labels.stack}: {args.health_path} (checks the database too)",
            opts=ResourceOptions(parent=self, additional_secret_outputs=["header"]),
        )
        self.pool_ids = {}
        for origin in args.origins:
            r = origin.region
            pool = cf.LoadBalancerPool(
                self.n("pool", r),
                account_id=args.account_id,
                name=f"fraiseql-{labels.stack}-{r}",
                origins=[
                    cf.LoadBalancerPoolOriginArgs(
                        name=r, address=origin.address, enabled=True, weight=1,
                        header=cf.LoadBalancerPoolOriginHeaderArgs(hosts=[args.origin_hostname]),
                    )
                ],
                monitor=monitor.id,
                check_regions=list(args.check_regions),
                latitude=REGIONS[r].lat,
                longitude=REGIONS[r].lon,
                minimum_origins=1,
                description=f"FraiseQL origin in {r}",
                opts=child,
            )
            self.pool_ids[r] = pool.id

        regions = [o.region for o in args.origins]
        fallback = args.fallback_region or regions[0]
        lb = cf.LoadBalancer(
            self.n("lb"),
            zone_id=args.zone_id,
            name=host,
            default_pools=[self.pool_ids[r] for r in regions],
            fallback_pool=self.pool_ids[fallback],
            steering_policy=args.steering_policy,
            proxied=True,
            session_affinity="cookie",
            session_affinity_ttl=args.session_affinity_ttl_seconds,
            session_affinity_attributes=cf.LoadBalancerSessionAffinityAttributesArgs(
                samesite="Lax", secure="Always", zero_downtime_failover="sticky"
            ),
            # Retry a failed request on another pool, not only another origin of the same pool.
            adaptive_routing=cf.LoadBalancerAdaptiveRoutingArgs(failover_across_pools=True),
            description=f"FraiseQL {labels.stack}: {len(regions)} regional origins",
            opts=child,
        )

        worker = args.worker
        script_name = f"{worker.name}-{labels.stack}"
        self.kv_namespace_ids = {}
        for binding in worker.kv_namespaces:
            kv = cf.WorkersKvNamespace(
                self.n("kv", binding.lower().replace("_", "-")),
                account_id=args.account_id,
                title=f"{script_name}-{binding.lower().replace('_', '-')}",
                opts=child,
            )
            self.kv_namespace_ids[binding] = kv.id
        queues: dict[str, cf.Queue] = {}
        self.queue_names = {}
        dead_letter_queues = {s["dead_letter_queue"] for s in worker.queue_consumers.values() if s.get("dead_letter_queue")}
        for queue in sorted(set(worker.queue_producers.values()) | set(worker.queue_consumers) | dead_letter_queues):
            self.queue_names[queue] = f"{queue}-{labels.stack}"
            queues[queue] = cf.Queue(
                self.n("queue", queue),
                account_id=args.account_id,
                queue_name=self.queue_names[queue],
                opts=child,
            )

        deployment = {
            # Subrequests from a worker on its own route go to the origin: here, the load balancer.
            "ORIGIN_URL": f"https://{host}",
            "ZONE_ID": args.zone_id,
            "ORIGIN_AUTH_HEADER": auth_header,
            **({"PURGE_PLAN": args.plan} if args.plan else {}),
        }
        plain = {**worker.vars, **deployment}
        secrets: dict[str, Input[str]] = {"PURGE_API_TOKEN": args.purge_api_token}
        if auth_token is not None:
            secrets["ORIGIN_AUTH_TOKEN"] = auth_token
        else:
            pulumi.log.warn("Edge: no origin_auth_token; origins cannot tell the edge from anyone else", self)
        unknown = set(worker.secrets) - {"PURGE_API_TOKEN", "ORIGIN_AUTH_TOKEN"}
        if unknown:
            raise ValueError(f"wrangler.jsonc requires secrets the Edge component cannot supply: {sorted(unknown)}")
        script = cf.WorkersScript(
            self.n("worker"),
            account_id=args.account_id,
            script_name=script_name,
            main_module=worker.main_module,
            content=worker.content,
            compatibility_date=worker.compatibility_date,
            compatibility_flags=list(worker.compatibility_flags),
            bindings=[
                *[cf.WorkersScriptBindingArgs(name=k, type="plain_text", text=v) for k, v in sorted(plain.items())],
                *[cf.WorkersScriptBindingArgs(name=k, type="secret_text", text=v) for k, v in sorted(secrets.items())],
                *[
                    cf.WorkersScriptBindingArgs(name=b, type="kv_namespace", namespace_id=kv_id)
                    for b, kv_id in sorted(self.kv_namespace_ids.items())
                ],
                # The Queue's own output, not the name it was given: the script (whose upload fails
                # on a binding to a missing queue) then waits for the queue.
                *[
                    cf.WorkersScriptBindingArgs(name=b, type="queue", queue_name=queues[q].queue_name)
                    for b, q in sorted(worker.queue_producers.items())
                ],
                *[
                    cf.WorkersScriptBindingArgs(
                        name=r["name"],
                        type="ratelimit",
                        namespace_id=str(r["namespace_id"]),
                        simple=cf.WorkersScriptBindingSimpleArgs(limit=r["simple"]["limit"], period=r["simple"]["period"]),
                    )
                    for r in worker.ratelimits
                ],
            ],
            observability={"enabled": True},
            opts=ResourceOptions(parent=self, additional_secret_outputs=["bindings"]),
        )
        for queue, settings in sorted(worker.queue_consumers.items()):
            dead_letters = settings.get("dead_letter_queue")
            cf.QueueConsumer(
                self.n("queue-consumer", queue),
                account_id=args.account_id,
                queue_id=queues[queue].id,
                script_name=script.script_name,
                type="worker",
                dead_letter_queue=self.queue_names[dead_letters] if dead_letters else None,
                settings=cf.QueueConsumerSettingsArgs(
                    batch_size=settings.get("max_batch_size"),
                    max_wait_time_ms=round(settings["max_batch_timeout"] * 1000) if "max_batch_timeout" in settings else None,
                    max_retries=settings.get("max_retries"),
                    max_concurrency=settings.get("max_concurrency"),
                    retry_delay=settings.get("retry_delay"),
                ),
                opts=child,
            )
        cf.WorkersRoute(
            self.n("route"),
            zone_id=args.zone_id,
            pattern=f"{host}/*",
            script=script.script_name,
            opts=child,
        )

        cf.ZoneSetting(
            self.n("ssl"),
            zone_id=args.zone_id,
            setting_id="ssl",
            value="strict",
            opts=child,
        )

        on_host = f'(http.host eq "{host}")'
        owned = set(args.owned_entry_points)
        if "waf" in owned:
            cf.Ruleset(
                self.n("waf"),
                zone_id=args.zone_id,
                kind="zone",
                phase=ENTRY_POINT_PHASES["waf"],
                name=entry_point_ruleset_name(labels.stack, "waf"),
                rules=[
                    cf.RulesetRuleArgs(
                        ref="execute_cloudflare_managed",
                        description="execute the cloudflare-managed ruleset",
                        expression=on_host,
                        action="execute",
                        action_parameters=cf.RulesetRuleActionParametersArgs(id=WAF_MANAGED_RULESETS["cloudflare-managed"]),
                    ),
                    _owasp_rule(args, on_host),
                ],
                opts=child,
            )
        if "rate_limit" in owned:
            cf.Ruleset(
                self.n("rate-limit"),
                zone_id=args.zone_id,
                kind="zone",
                phase=ENTRY_POINT_PHASES["rate_limit"],
                name=entry_point_ruleset_name(labels.stack, "rate_limit"),
                rules=[
                    cf.RulesetRuleArgs(
                        ref="graphql_per_ip",
                        description=f"at most {args.rate_limit_requests_per_minute} requests a minute per client IP",
                        expression=on_host,
                        action="block",
                        ratelimit=cf.RulesetRuleRatelimitArgs(
                            characteristics=["ip.src", "cf.colo.id"],
                            period=60,
                            requests_per_period=args.rate_limit_requests_per_minute,
                            mitigation_timeout=60,
                        ),
                    )
                ],
                opts=child,
            )
        if "cache" in owned:
            cf.Ruleset(
                self.n("cache-rules"),
                zone_id=args.zone_id,
                kind="zone",
                phase=ENTRY_POINT_PHASES["cache"],
                name=entry_point_ruleset_name(labels.stack, "cache"),
                rules=[
                    cf.RulesetRuleArgs(
                        ref="bypass_non_get",
                        description="mutations (and every non-GET) always reach the origin",
                        expression=f'{on_host} and http.request.method ne "GET"',
                        action="set_cache_settings",
                        action_parameters=cf.RulesetRuleActionParametersArgs(cache=False),
                    )
                ],
                opts=child,
            )
        self.load_balancer_id = lb.id
        self.monitor_id = monitor.id
        self.worker_name = script_name
        # For the ALB listener rule that admits only the edge: require `origin_auth_header`
        # to equal `origin_auth_token` (a secret Output).
        self.origin_auth_header = auth_header
        self.origin_auth_token = auth_token
        self.register_outputs(
            {
                "loadBalancerId": self.load_balancer_id,
                "poolIds": self.pool_ids,
                "workerName": self.worker_name,
                "originAuthHeader": self.origin_auth_header,
                "kvNamespaceIds": self.kv_namespace_ids,
                "queueNames": self.queue_names,
            }
        )


def _owasp_rule(args: EdgeArgs, expression: str) -> cf.RulesetRuleArgs:
    """Execute the OWASP ruleset up to the paranoia level, acting at the score threshold: `log` records
    what it would block, `off` keeps the rule but disabled."""
    level = args.owasp_paranoia_level
    return cf.RulesetRuleArgs(
        ref="execute_owasp_core",
        description=f"execute the owasp-core ruleset ({args.owasp_action}, paranoia {level}, score {args.owasp_score_threshold})",
        expression=expression,
        action="execute",
        enabled=args.owasp_action != "off",
        action_parameters=cf.RulesetRuleActionParametersArgs(
            id=WAF_MANAGED_RULESETS["owasp-core"],
            overrides=cf.RulesetRuleActionParametersOverridesArgs(
                categories=[
                    cf.RulesetRuleActionParametersOverridesCategoryArgs(category=f"paranoia-level-{n}", enabled=False)
                    for n in range(level + 1, 5)
                ],
                rules=[
                    cf.RulesetRuleActionParametersOverridesRuleArgs(
                        id=OWASP_SCORE_RULE,
                        action="block" if args.owasp_action == "off" else args.owasp_action,
                        score_threshold=args.owasp_score_threshold,
                    )
                ],
            ),
        ),
    )


def _check(args: EdgeArgs) -> None:
    if not _HEADER_NAME.match(args.origin_auth_header.lower()):
        raise ValueError(f"origin_auth_header {args.origin_auth_header!r} is not a header name like x-fraiseql-origin-auth")
    if args.origin_auth_header.lower() in {"host", "authorization", "cookie"}:
        raise ValueError(f"origin_auth_header {args.origin_auth_header!r} would clash with a header the client sends")
    if args.plan is not None and args.plan not in PURGE_PLANS:
        raise ValueError(f"plan {args.plan!r} is not one of {', '.join(PURGE_PLANS)}")
    unknown = sorted(set(args.owned_entry_points) - set(ENTRY_POINT_PHASES))
    if unknown:
        raise ValueError(f"owned_entry_points {unknown} are not entry points; use {', '.join(ENTRY_POINT_PHASES)}")
    if args.owasp_action not in OWASP_ACTIONS:
        raise ValueError(f"owasp_action {args.owasp_action!r} is not one of {', '.join(OWASP_ACTIONS)}")
    if args.owasp_score_threshold not in OWASP_SCORE_THRESHOLDS or not 1 <= args.owasp_paranoia_level <= 4:
        raise ValueError("owasp_score_threshold must be 25, 40 or 60 and owasp_paranoia_level 1 to 4")
