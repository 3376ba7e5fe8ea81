"""DnsFailover: Route 53 health checks on each region's public endpoint and the records that use them.

`failover` (phase A): PRIMARY/SECONDARY records for the API name, each bound to its region's health
check, and a plain read record pointing at the standby. DNS failover is bounded below by
interval x threshold + TTL (see core.slo), which is why phase A's RTO is minutes, not seconds.

`latency` (phases B and C): one latency record per active region, bound to a CALCULATED health check
that needs both the region's endpoint check and its ARC routing control (RECOVERY_CONTROL check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels

# Route 53 needs at least three checker regions; these are spread over three continents.
CHECKER_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    region: str
    role: Literal["primary", "secondary", "active"]
    alb_dns_name: Input[str]
    alb_zone_id: Input[str]


@dataclass(frozen=True, kw_only=True)
class DnsFailoverArgs:
    mode: Literal["failover", "latency"]
    zone_id: str
    record_name: str
    read_record_name: str
    endpoints: tuple[Endpoint, ...]
    health_path: str
    https: bool
    request_interval: int
    failure_threshold: int
    # latency mode: the RECOVERY_CONTROL health check of each region's ARC routing control.
    control_health_check_ids: Mapping[str, Input[str]] = field(default_factory=dict)
    # Phase C: the ALBs admit only the edge, so Route 53's checkers cannot reach them; the records
    # then follow the routing controls alone and endpoint health is the edge monitors' job.
    endpoint_checks: bool = True


class DnsFailover(Component):
    health_check_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: DnsFailoverArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:dns:DnsFailover", name, labels=labels, opts=opts)

        self.health_check_ids = {}
        for ep in args.endpoints:
            r = ep.region
            if not args.endpoint_checks:
                assert args.mode == "latency", "only latency records can do without endpoint checks"
                aws.route53.Record(
                    self.n("api-latency", r),
                    zone_id=args.zone_id,
                    name=args.record_name,
                    type="A",
                    set_identifier=f"latency-{r}",
                    latency_routing_policies=[aws.route53.RecordLatencyRoutingPolicyArgs(region=r)],
                    health_check_id=args.control_health_check_ids[r],
                    aliases=[
                        aws.route53.RecordAliasArgs(name=ep.alb_dns_name, zone_id=ep.alb_zone_id, evaluate_target_health=True)
                    ],
                    opts=self.child,
                )
                self.health_check_ids[r] = pulumi.Output.from_input(args.control_health_check_ids[r])
                continue
            hc = aws.route53.HealthCheck(
                self.n("health", r),
                type="HTTPS" if args.https else "HTTP",
                fqdn=ep.alb_dns_name,
                port=443 if args.https else 80,
                resource_path=args.health_path,
                enable_sni=args.https,
                request_interval=args.request_interval,
                failure_threshold=args.failure_threshold,
                regions=list(CHECKER_REGIONS),
                measure_latency=True,
                opts=self.child,
            )
            self.health_check_ids[r] = hc.id
            if args.mode == "latency":
                both = aws.route53.HealthCheck(
                    self.n("health-and-control", r),
                    type="CALCULATED",
                    child_healthchecks=[hc.id, args.control_health_check_ids[r]],
                    child_health_threshold=2,
                    opts=self.child,
                )
                aws.route53.Record(
                    self.n("api-latency", r),
                    zone_id=args.zone_id,
                    name=args.record_name,
                    type="A",
                    set_identifier=f"latency-{r}",
                    latency_routing_policies=[aws.route53.RecordLatencyRoutingPolicyArgs(region=r)],
                    health_check_id=both.id,
                    aliases=[
                        aws.route53.RecordAliasArgs(name=ep.alb_dns_name, zone_id=ep.alb_zone_id, evaluate_target_health=True)
                    ],
                    opts=self.child,
                )
                continue
            aws.route53.Record(
                self.n(f"api-{ep.role}", r),
                zone_id=args.zone_id,
                name=args.record_name,
                type="A",
                set_identifier=f"{ep.role}-{r}",
                failover_routing_policies=[
                    aws.route53.RecordFailoverRoutingPolicyArgs(type=ep.role.upper())
                ],
                health_check_id=hc.id,
                aliases=[
                    aws.route53.RecordAliasArgs(name=ep.alb_dns_name, zone_id=ep.alb_zone_id, evaluate_target_health=True)
                ],
                opts=self.child,
            )

        if args.mode == "latency":
            self.register_outputs({"healthCheckIds": self.health_check_ids})
            return
        reader = next(ep for ep in args.endpoints if ep.role == "secondary")
        aws.route53.Record(
            self.n("read", reader.region),
            zone_id=args.zone_id,
            name=args.read_record_name,
            type="A",
            aliases=[aws.route53.RecordAliasArgs(name=reader.alb_dns_name, zone_id=reader.alb_zone_id, evaluate_target_health=True)],
            opts=self.child,
        )
        self.register_outputs({"healthCheckIds": self.health_check_ids})
