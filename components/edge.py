"""Edge: the Cloudflare front of phase C.

- The GraphQL-caching worker (`worker/`), deployed from the same `worker.config.json` its workerd
  tests use, on a route over the API hostname.
- A load balancer over one pool per regional origin (the ALBs), with a shared health monitor,
  proximity steering, a fallback pool, zero-downtime failover (a failed connection is retried on
  another origin, which is what hides a regional failure in well under a second) and cookie
  session affinity (a client keeps reading the region it wrote to).
- WAF managed rules, a rate limit, and a cache rule that never lets non-GET requests be cached.
  The worker decides what GET/POST query traffic to cache through the Cache API.
- Unproxied per-region DNS names for operators to reach each origin directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_cloudflare as cf
from pulumi import Input, ResourceOptions

from core.naming import logical_name
from core.regions import REGIONS

WAF_MANAGED_RULESETS = {
    "cloudflare-managed": "efb7b8c949ac4650a09736fc376e9aee",
    "owasp-core": "4814384a9e5d4991b9815dcfc25d2f1f",
}


@dataclass(frozen=True)
class WorkerBundle:
    """The worker package as deployed: one module plus the config its tests also use."""

    name: str
    main_module: str
    content: str
    compatibility_date: str
    compatibility_flags: tuple[str, ...]
    vars: dict[str, str]

    @classmethod
    def load(cls, package: Path) -> "WorkerBundle":
        config = json.loads((package / "worker.config.json").read_text())
        return cls(
            name=config["name"],
            main_module=config["main_module"],
            content=(package / config["main"]).read_text(),
            compatibility_date=config["compatibility_date"],
            compatibility_flags=tuple(config.get("compatibility_flags", ())),
            vars=dict(config.get("vars", {})),
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
    stack: str
    phase: str
    fallback_region: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)


class Edge(pulumi.ComponentResource):
    load_balancer_id: pulumi.Output[str]
    pool_ids: dict[str, pulumi.Output[str]]
    monitor_id: pulumi.Output[str]
    worker_name: str

    def __init__(self, name: str, args: EdgeArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:edge:Edge", name, None, opts)
        child = ResourceOptions(parent=self)
        host = args.hostname

        monitor = cf.LoadBalancerMonitor(
            logical_name(name, "monitor"),
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
            # The ALB's certificate names the origin hostname, not the ALB's own DNS name.
            header={"Host": [args.origin_hostname]},
            description=f"FraiseQL {args.stack}: {args.health_path} (checks the database too)",
            opts=child,
        )
        self.pool_ids = {}
        for origin in args.origins:
            r = origin.region
            pool = cf.LoadBalancerPool(
                logical_name(name, "pool", r),
                account_id=args.account_id,
                name=f"fraiseql-{args.stack}-{r}",
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
            cf.DnsRecord(
                logical_name(name, "origin-record", r),
                zone_id=args.zone_id,
                name=f"origin-{r}.{args.zone_name}",
                type="CNAME",
                content=origin.address,
                proxied=False,
                ttl=60,
                comment="direct regional origin for operators (bypasses the edge)",
                opts=child,
            )

        regions = [o.region for o in args.origins]
        fallback = args.fallback_region or regions[0]
        lb = cf.LoadBalancer(
            logical_name(name, "lb"),
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
            description=f"FraiseQL {args.stack}: {len(regions)} regional origins",
            opts=child,
        )

        script = cf.WorkersScript(
            logical_name(name, "worker"),
            account_id=args.account_id,
            script_name=f"{args.worker.name}-{args.stack}",
            main_module=args.worker.main_module,
            content=args.worker.content,
            compatibility_date=args.worker.compatibility_date,
            compatibility_flags=list(args.worker.compatibility_flags),
            bindings=[
                *[
                    cf.WorkersScriptBindingArgs(name=k, type="plain_text", text=v)
                    for k, v in sorted(args.worker.vars.items())
                ],
                # Subrequests from a worker on its own route go to the origin: here, the load balancer.
                cf.WorkersScriptBindingArgs(name="ORIGIN_URL", type="plain_text", text=f"https://{host}"),
                cf.WorkersScriptBindingArgs(name="ZONE_ID", type="plain_text", text=args.zone_id),
                cf.WorkersScriptBindingArgs(name="PURGE_API_TOKEN", type="secret_text", text=args.purge_api_token),
            ],
            observability={"enabled": True},
            opts=ResourceOptions(parent=self, additional_secret_outputs=["bindings"]),
        )
        cf.WorkersRoute(
            logical_name(name, "route"),
            zone_id=args.zone_id,
            pattern=f"{host}/*",
            script=script.script_name,
            opts=child,
        )

        on_host = f'(http.host eq "{host}")'
        cf.Ruleset(
            logical_name(name, "waf"),
            zone_id=args.zone_id,
            kind="zone",
            phase="http_request_firewall_managed",
            name="fraiseql managed WAF",
            rules=[
                cf.RulesetRuleArgs(
                    ref=f"execute_{ref.replace('-', '_')}",
                    description=f"execute the {ref} ruleset",
                    expression=on_host,
                    action="execute",
                    action_parameters=cf.RulesetRuleActionParametersArgs(id=ruleset_id),
                )
                for ref, ruleset_id in WAF_MANAGED_RULESETS.items()
            ],
            opts=child,
        )
        cf.Ruleset(
            logical_name(name, "rate-limit"),
            zone_id=args.zone_id,
            kind="zone",
            phase="http_ratelimit",
            name="fraiseql rate limit",
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
        cf.Ruleset(
            logical_name(name, "cache-rules"),
            zone_id=args.zone_id,
            kind="zone",
            phase="http_request_cache_settings",
            name="fraiseql cache rules",
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
        self.worker_name = f"{args.worker.name}-{args.stack}"
        self.register_outputs(
            {"loadBalancerId": self.load_balancer_id, "poolIds": self.pool_ids, "workerName": self.worker_name}
        )
