"""Monthly cost of a stack from what its resources declare, plus a usage block for what they cannot.

Every resource type is either priced, known to be free (with the reason), or listed as UNPRICED:
nothing is silently counted as $0. Prices come from `policies/prices.json` through `PriceBook`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any, Callable, Iterable, Optional

from policies.pricing import MissingPrice, PriceBook


@dataclass
class CostResource:
    """The cost model's view of one resource; built from a PolicyResource or a mock registration."""

    urn: str
    type: str
    name: str
    region: str
    component: str
    props: dict[str, Any]
    deps: dict[str, list["CostResource"]] = field(default_factory=dict)

    def dep(self, prop: str, typ: str) -> Optional["CostResource"]:
        return next((d for d in self.deps.get(prop, []) if d.type == typ), None)


@dataclass(frozen=True)
class Usage:
    inter_region_gb_month: float = 0.0
    nat_gb_month: float = 0.0
    alb_lcu: float = 1.0
    log_gb_month: float = 0.0
    edge_requests_million_month: float = 0.0

    @classmethod
    def from_manifest(cls, usage: Optional[dict[str, Any]]) -> "Usage":
        if not usage:
            return cls()
        known = {k: float(v) for k, v in usage.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class CostLine:
    region: str
    component: str
    item: str
    type: str
    monthly_usd: Optional[float]
    basis: str
    status: str  # priced | usage | free | unpriced
    #: The resource this line prices ("" for usage and plan lines): what `infra diff` matches across two stacks.
    urn: str = ""

    @property
    def key(self) -> str:
        """The same line in another estimate of the same stack: its resource, or its usage item."""
        return self.urn or f"{self.type}|{self.item}"

    @property
    def what(self) -> str:
        return WHAT.get(self.type, self.type.split(":")[-1])


@dataclass
class CostReport:
    lines: list[CostLine]
    budget_usd: Optional[float] = None

    @property
    def total(self) -> float:
        return round(sum(l.monthly_usd or 0.0 for l in self.lines), 2)

    @property
    def unpriced(self) -> list[CostLine]:
        return [l for l in self.lines if l.status == "unpriced"]

    def by_region_component(self) -> dict[tuple[str, str], float]:
        sums: dict[tuple[str, str], float] = defaultdict(float)
        for l in self.lines:
            sums[(l.region, l.component)] += l.monthly_usd or 0.0
        return dict(sums)

    @property
    def charged(self) -> list[CostLine]:
        """The lines that cost something, largest first within each region (global last)."""
        return sorted((l for l in self.lines if (l.monthly_usd or 0) > 0),
                      key=lambda l: (l.region == "global", l.region, -(l.monthly_usd or 0), l.item))

    def budget_line(self) -> str:
        if not self.budget_usd:
            return "no budget declared (fraiseql:budget.monthly_usd)"
        left = self.budget_usd - self.total
        verdict = f"{left:,.2f} left" if left >= 0 else f"OVER by {-left:,.2f}"
        return f"estimate {self.total:,.2f} of the {self.budget_usd:,.2f} budget ({self.total / self.budget_usd:.0%}), {verdict}"

    def rows(self) -> list[tuple[str, str, float, str]]:
        """(region, item, USD/month, "what it is: why it costs that") per charged line; lines of one
        region that share a type and a basis (ten identical alarms) are one row with their count."""
        groups: dict[tuple[str, str, str], list[CostLine]] = defaultdict(list)
        for l in self.charged:
            groups[(l.region, l.type, l.basis)].append(l)
        out = []
        for (region, _, basis), same in groups.items():
            usd = round(sum(l.monthly_usd or 0 for l in same), 2)
            if len(same) == 1:
                out.append((region, same[0].item, usd, f"{same[0].what}: {basis}"))
            else:
                prefix = os.path.commonprefix([l.item for l in same]).rstrip("-")
                item = f"{len(same)} x {prefix}-*" if len(prefix) > 8 else f"{len(same)} x {same[0].what}"
                out.append((region, item, usd, f"{len(same)} x {same[0].what}: {basis}"))
        return sorted(out, key=lambda row: (row[0] == "global", row[0], -row[2], row[1]))

    def render(self) -> str:
        """One row per resource or usage item that costs something: what it is, and why it costs that
        (the price-book figures and the quantities the stack declares)."""
        rows = self.rows()
        width = max([len(item) for _, item, _, _ in rows] + [4])
        out = [f"{'region':<11} {'item':<{width}} {'USD/month':>10}  what it is: why it costs that"]
        for region, item, usd, why in rows:
            out.append(f"{region:<11} {item:<{width}} {usd:>10,.2f}  {why}")
        rows_text = out
        rows_text.append(f"{'total':<{width + 12}} {self.total:>10,.2f}")
        rows_text.append(f"{'budget':<{width + 12}} {self.budget_usd or 0:>10,.2f}  {self.budget_line()}")
        nothing = [l for l in self.lines if l.status == "free" or (l.status == "priced" and not l.monthly_usd)]
        if nothing:
            rows_text.append(f"{len(nothing)} more resources cost nothing here (free types, or inside a free tier); "
                             "`--json` lists each with its reason")
        if self.unpriced:
            rows_text.append("UNPRICED (not in the total): " + ", ".join(f"{l.item} ({l.type})" for l in self.unpriced))
        return "\n".join(rows_text)


#: What a priced line is, in words, by resource type (the basis says why it costs that).
WHAT: dict[str, str] = {
    "aws:rds/instance:Instance": "RDS PostgreSQL instance",
    "aws:ecs/service:Service": "Fargate service",
    "aws:ec2/natGateway:NatGateway": "NAT gateway",
    "aws:ec2/eip:Eip": "Elastic IP",
    "aws:lb/loadBalancer:LoadBalancer": "application load balancer",
    "aws:kms/key:Key": "KMS key",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "CloudWatch alarm",
    "aws:cloudwatch/dashboard:Dashboard": "CloudWatch dashboard",
    "aws:secretsmanager/secret:Secret": "Secrets Manager secret",
    "aws:route53/zone:Zone": "Route 53 hosted zone",
    "aws:route53/healthCheck:HealthCheck": "Route 53 health check",
    "aws:budgets/budget:Budget": "AWS Budgets budget",
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": "Transit Gateway VPC attachment",
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": "Transit Gateway peering attachment",
    "aws:route53recoverycontrol/cluster:Cluster": "Route 53 ARC cluster",
    "aws:lambda/function:Function": "Lambda function",
    "cloudflare:index/workersScript:WorkersScript": "Cloudflare worker",
    "cloudflare:index/loadBalancer:LoadBalancer": "Cloudflare load balancer",
    "cloudflare:plan": "Cloudflare zone plan",
    "usage:inter-region": "inter-region transfer (fraiseql:usage.inter_region_gb_month)",
    "usage:logs": "CloudWatch Logs ingestion (fraiseql:usage.log_gb_month)",
}


FREE: dict[str, str] = {
    "aws:ec2/vpc:Vpc": "no charge",
    "aws:ec2/subnet:Subnet": "no charge",
    "aws:ec2/routeTable:RouteTable": "no charge",
    "aws:ec2/route:Route": "no charge",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "no charge",
    "aws:ec2/internetGateway:InternetGateway": "no charge (traffic billed as transfer)",
    "aws:ec2/securityGroup:SecurityGroup": "no charge",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "no charge",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "no charge",
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": "no hourly fee (transfer priced from usage)",
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": "no hourly fee",
    "aws:ec2transitgateway/transitGateway:TransitGateway": "billed per attachment",
    "aws:ec2transitgateway/routeTable:RouteTable": "no charge",
    "aws:ec2transitgateway/route:Route": "no charge",
    "aws:ec2transitgateway/routeTableAssociation:RouteTableAssociation": "no charge",
    "aws:ec2transitgateway/routeTablePropagation:RouteTablePropagation": "no charge",
    "aws:iam/role:Role": "no charge",
    "aws:iam/rolePolicy:RolePolicy": "no charge",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "no charge",
    "aws:sns/topic:Topic": "first million publishes free",
    "aws:sns/topicSubscription:TopicSubscription": "e-mail deliveries: first 1,000 free",
    "aws:ecs/cluster:Cluster": "no charge (tasks priced on the service)",
    "aws:ecs/taskDefinition:TaskDefinition": "priced on the service",
    "aws:appautoscaling/target:Target": "no charge",
    "aws:appautoscaling/policy:Policy": "no charge (its alarms are AWS-managed)",
    "aws:acm/certificate:Certificate": "public certificates are free",
    "aws:acm/certificateValidation:CertificateValidation": "no charge",
    "aws:rds/subnetGroup:SubnetGroup": "no charge",
    "aws:lb/targetGroup:TargetGroup": "priced on the load balancer",
    "aws:lb/listener:Listener": "priced on the load balancer",
    "aws:rds/parameterGroup:ParameterGroup": "no charge",
    "aws:kms/alias:Alias": "no charge",
    "aws:route53/record:Record": "alias queries to AWS resources are free; others from usage",
    "aws:ssm/parameter:Parameter": "standard tier is free",
    "aws:cloudwatch/logGroup:LogGroup": "ingestion priced from usage.log_gb_month",
    "aws:lambda/invocation:Invocation": "a handful of invocations per deployment",
    "aws:lambda/layerVersion:LayerVersion": "layer storage is within the free code-storage allowance",
    "aws:lambda/permission:Permission": "no charge",
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": "no charge",
    "aws:ec2/managedPrefixList:ManagedPrefixList": "no charge",
    "aws:secretsmanager/secretRotation:SecretRotation": "no charge (the rotation function is priced as a Lambda)",
    "aws:lb/listenerRule:ListenerRule": "rule evaluations are part of the ALB's LCUs; the first 10 rules are free",
    "aws:cloudwatch/eventRule:EventRule": "scheduled rules are free",
    "aws:cloudwatch/eventTarget:EventTarget": "no charge",
    "aws:secretsmanager/secretVersion:SecretVersion": "priced on the secret",
    "aws:route53recoverycontrol/controlPanel:ControlPanel": "included in the cluster",
    "aws:route53recoverycontrol/routingControl:RoutingControl": "included in the cluster",
    "aws:route53recoverycontrol/safetyRule:SafetyRule": "included in the cluster",
    "cloudflare:index/workersRoute:WorkersRoute": "included in Workers",
    "cloudflare:index/workersCustomDomain:WorkersCustomDomain": "included in Workers",
    "cloudflare:index/dnsRecord:DnsRecord": "included in the plan",
    "cloudflare:index/ruleset:Ruleset": "WAF managed rules and rate limiting included in the plan",
    "cloudflare:index/zoneSetting:ZoneSetting": "a zone setting: part of the plan",
    "cloudflare:index/loadBalancerPool:LoadBalancerPool": "priced on the load balancer",
    "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor": "priced on the load balancer",
    "cloudflare:index/workersKvNamespace:WorkersKvNamespace": "included in Workers Paid",
    "cloudflare:index/queue:Queue": "Queues are included in Workers Paid (1M operations a month)",
    "cloudflare:index/queueConsumer:QueueConsumer": "part of the queue",
    "pulumi:providers:aws": "provider",
    "pulumi:providers:cloudflare": "provider",
}

Pricer = Callable[[CostResource, PriceBook, "Context"], tuple[float, str]]


@dataclass
class Context:
    usage: Usage
    resources: list[CostResource]

    def count(self, typ: str, region: Optional[str] = None) -> int:
        return sum(1 for r in self.resources if r.type == typ and (region is None or r.region == region))


def _h(book: PriceBook) -> float:
    return book.hours_per_month


def _rds(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    p = r.props
    source = r.dep("replicateSourceDb", r.type)
    storage = p.get("allocatedStorage") or (source.props.get("allocatedStorage") if source else None) or 0
    multi = bool(p.get("multiAz"))
    hourly = book.rds_instance_hourly(r.region, p["instanceClass"], multi)
    gb = book.rds_storage_gb_month(r.region, p.get("storageType") or "gp3", multi)
    total = hourly * _h(book) + float(storage) * gb
    kind = p.get("storageType") or "gp3"
    basis = (f"{p['instanceClass']} {'Multi-AZ' if multi else 'Single-AZ'} {hourly}/h x {_h(book):g} h + "
             f"{float(storage):g} GB {kind} x {gb}/GB")
    if p.get("manageMasterUserPassword"):
        secret = book.secret_month(r.region)
        total += secret
        basis += f" + its master-password secret {secret}"
    return total, basis


def _fargate(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    task = r.dep("taskDefinition", "aws:ecs/taskDefinition:TaskDefinition")
    if task is None:
        raise MissingPrice("fargate", r.name, "service has no task definition in the stack")
    vcpu = float(task.props["cpu"]) / 1024
    gib = float(task.props["memory"]) / 1024
    arch = ((task.props.get("runtimePlatform") or {}).get("cpuArchitecture") or "X86_64").lower()
    arch = "arm64" if arch == "arm64" else "x86_64"
    count = int(r.props.get("desiredCount") or 0)
    per_task = vcpu * book.fargate_vcpu_hour(r.region, arch) + gib * book.fargate_gb_hour(r.region, arch)
    return count * per_task * _h(book), f"{count} tasks x ({vcpu:g} vCPU + {gib:g} GB) = {per_task:.5f}/h x {_h(book):g} h"


def _nat(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    hourly = book.nat_gateway_hourly(r.region)
    gb = ctx.usage.nat_gb_month / max(1, ctx.count(r.type, r.region))
    per_gb = book.nat_gateway_per_gb(r.region)
    return hourly * _h(book) + gb * per_gb, f"{hourly}/h x {_h(book):g} h + {gb:g} GB processed x {per_gb}/GB (usage.nat_gb_month)"


def _eip(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    hourly = book.public_ipv4_hourly(r.region)
    return hourly * _h(book), f"public IPv4 {hourly}/h x {_h(book):g} h"


def _alb(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    hourly, lcu = book.alb_hourly(r.region), book.alb_lcu_hour(r.region)
    ips = 0 if r.props.get("internal") else len(r.props.get("subnets") or [])
    ipv4 = book.public_ipv4_hourly(r.region)
    total = (hourly + ctx.usage.alb_lcu * lcu + ips * ipv4) * _h(book)
    return total, f"({hourly}/h + {ctx.usage.alb_lcu:g} LCU x {lcu}/h + {ips} public IPv4 x {ipv4}/h) x {_h(book):g} h"


def _flat(getter: Callable[[PriceBook, CostResource], float], label: str) -> Pricer:
    def price(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
        usd = getter(book, r)
        return usd, f"{label} {usd}/month"

    return price


def _hourly(getter: Callable[[PriceBook, CostResource], float], label: str) -> Pricer:
    def price(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
        usd = getter(book, r)
        return usd * _h(book), f"{label} {usd}/h x {_h(book):g} h"

    return price


def _health_check(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    p = r.props
    kind = str(p.get("type") or "HTTP")
    opts = dict(
        https=kind.startswith("HTTPS"),
        string_matching=kind.endswith("STR_MATCH"),
        fast_interval=int(p.get("requestInterval") or 30) == 10,
        latency_measurement=bool(p.get("measureLatency")),
    )
    usd = book.route53_health_check_month("aws", **opts)
    extras = ", ".join(k.replace("_", " ") for k, v in opts.items() if v and k != "https")
    return usd, f"{kind} check{' with ' + extras if extras else ''} = {usd}/month"


_SECONDS_PER_MONTH = 730 * 3600
_HANDOVER_CHECK_S = 1.0
_RATE_PER_MONTH = {"minute": 43800, "minutes": 43800, "hour": 730, "hours": 730, "day": 30.4, "days": 30.4}


def _lambda(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    """A scheduled function runs `rate(...)` times a month for up to its timeout; others run on demand."""
    targets = [t for t in ctx.resources if t.type == "aws:cloudwatch/eventTarget:EventTarget"
               and any(d.urn == r.urn for d in t.deps.get("arn", []))]
    rules = [d for t in targets for d in t.deps.get("rule", []) if d.type == "aws:cloudwatch/eventRule:EventRule"]
    schedule = next((str(x.props.get("scheduleExpression") or "") for x in rules), "")
    if not schedule.startswith("rate("):
        return 0.0, "on-demand invocations only (deployment-time), within the free tier"
    amount, unit = schedule[5:-1].split()
    runs = float(amount) and _RATE_PER_MONTH[unit] / float(amount)
    arch = "arm64" if "arm64" in (r.props.get("architectures") or []) else "x86_64"
    timeout = float(r.props.get("timeout") or 3)
    gb = float(r.props.get("memorySize") or 128) / 1024
    period_s = _SECONDS_PER_MONTH / runs if runs else float("inf")
    if timeout > period_s:
        # Runs overlap: one holds the loop all month and hands over; the others check and exit.
        gb_s = (_SECONDS_PER_MONTH + runs * _HANDOVER_CHECK_S) * gb
        how = f"{schedule}, {timeout:g} s runs hand over: one always running + {runs:,.0f} checks = {gb_s:,.0f} GB-s"
    else:
        gb_s = runs * timeout * gb
        how = f"{schedule}: {runs:,.0f} runs x {timeout:g} s x {r.props.get('memorySize')} MB = {gb_s:,.0f} GB-s"
    usd = gb_s * book.lambda_gb_second(r.region, arch) + runs * book.lambda_request(r.region)
    return usd, how


def _budget(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    n = ctx.count(r.type)
    usd = book.budgets_month(n) / max(1, n)
    return usd, f"{n} budget(s) in the stack: {book.budgets_month(n)}/month in all"


def _workers(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    requests = ctx.usage.edge_requests_million_month * 1e6
    usd = book.cloudflare_workers(requests=requests)
    return usd, f"Workers Paid with {ctx.usage.edge_requests_million_month:g}M requests"


def _cf_lb(r: CostResource, book: PriceBook, ctx: Context) -> tuple[float, str]:
    pools = [d for deps in r.deps.values() for d in deps if d.type == "cloudflare:index/loadBalancerPool:LoadBalancerPool"]
    origins = sum(len(p.props.get("origins") or []) for p in {id(p): p for p in pools}.values()) or 1
    regions = max((len(p.props.get("checkRegions") or [1]) for p in pools), default=1)
    usd = book.cloudflare_load_balancing_month(origins, regions)
    return usd, f"load balancing: {origins} origins, {regions} health-check region(s)"


PRICERS: dict[str, Pricer] = {
    "aws:rds/instance:Instance": _rds,
    "aws:ecs/service:Service": _fargate,
    "aws:ec2/natGateway:NatGateway": _nat,
    "aws:ec2/eip:Eip": _eip,
    "aws:lb/loadBalancer:LoadBalancer": _alb,
    "aws:kms/key:Key": _flat(lambda b, r: b.kms_key_month(r.region), "customer managed key"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _flat(lambda b, r: b.cloudwatch_alarm_month(r.region), "standard alarm"),
    "aws:secretsmanager/secret:Secret": _flat(lambda b, r: b.secret_month(r.region), "secret"),
    "aws:route53/zone:Zone": _flat(lambda b, r: b.route53_hosted_zone_month(), "hosted zone"),
    "aws:cloudwatch/dashboard:Dashboard": _flat(lambda b, r: b.cloudwatch_dashboard_month(), "dashboard"),
    "aws:route53/healthCheck:HealthCheck": _health_check,
    "aws:budgets/budget:Budget": _budget,
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": _hourly(lambda b, r: b.tgw_attachment_hourly(r.region), "TGW attachment"),
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": _hourly(lambda b, r: b.tgw_attachment_hourly(r.region), "TGW peering attachment"),
    "aws:route53recoverycontrol/cluster:Cluster": _hourly(lambda b, r: b.arc_cluster_hourly(), "ARC cluster"),
    "aws:lambda/function:Function": _lambda,
    "cloudflare:index/workersScript:WorkersScript": _workers,
    "cloudflare:index/loadBalancer:LoadBalancer": _cf_lb,
}


def _usage_lines(resources: list[CostResource], book: PriceBook, usage: Usage, regions: list[str],
                 hub: bool) -> Iterable[CostLine]:
    for src, dst in permutations(sorted(regions), 2):
        if usage.inter_region_gb_month <= 0:
            break
        item = f"transfer {src}->{dst}"
        try:
            rate = book.inter_region_per_gb(src, dst)
            usd = usage.inter_region_gb_month * rate
            basis = f"{usage.inter_region_gb_month:g} GB a month from {src} to {dst} x {rate}/GB"
            if hub:
                tgw = book.tgw_per_gb(src)
                usd += usage.inter_region_gb_month * tgw
                basis += f" + Transit Gateway processing {tgw}/GB"
        except MissingPrice as e:  # a region pair the book lacks: listed, never counted as $0
            yield CostLine(src, "usage", item, "usage:inter-region", None, str(e), "unpriced")
            continue
        yield CostLine(src, "usage", item, "usage:inter-region", usd, basis, "usage")
    if usage.log_gb_month > 0:
        for region in sorted(regions):
            item = f"logs ingested {region}"
            try:
                rate = book.cloudwatch_logs_ingest_per_gb(region)
            except MissingPrice as e:
                yield CostLine(region, "usage", item, "usage:logs", None, str(e), "unpriced")
                continue
            yield CostLine(region, "usage", item, "usage:logs", usage.log_gb_month * rate,
                           f"{usage.log_gb_month:g} GB a month x {rate}/GB", "usage")


def estimate(resources: list[CostResource], book: PriceBook, usage: Usage, *, regions: Optional[list[str]] = None,
             topology: str = "none", budget_usd: Optional[float] = None, edge_plan: Optional[str] = None) -> CostReport:
    lines: list[CostLine] = []
    ctx = Context(usage=usage, resources=resources)
    for r in resources:
        if r.type.startswith("fraiseql:") or r.type == "pulumi:pulumi:Stack":
            continue
        pricer = PRICERS.get(r.type)
        if pricer is None:
            if r.type in FREE:
                lines.append(CostLine(r.region, r.component, r.name, r.type, 0.0, FREE[r.type], "free", r.urn))
            else:
                lines.append(CostLine(r.region, r.component, r.name, r.type, None, "no price for this type", "unpriced", r.urn))
            continue
        try:
            usd, basis = pricer(r, book, ctx)
            lines.append(CostLine(r.region, r.component, r.name, r.type, round(usd, 2), basis, "priced", r.urn))
        except (MissingPrice, KeyError, TypeError, ValueError) as e:
            lines.append(CostLine(r.region, r.component, r.name, r.type, None, f"cannot price: {e}", "unpriced", r.urn))
    if regions is None:
        regions = sorted({r.region for r in resources if r.region != "global"})
    lines.extend(_usage_lines(resources, book, usage, regions, hub=topology == "hub-and-spoke"))
    if edge_plan:
        try:
            usd = book.cloudflare_plan_month(edge_plan)
            lines.append(CostLine("global", "edge", f"Cloudflare {edge_plan} plan", "cloudflare:plan", usd,
                                  f"edge.plan {edge_plan}: {usd}/month for the zone (policies/prices.json"
                                  + ("; an Enterprise plan is a contract: put your quote there)" if edge_plan == "enterprise" else ")"),
                                  "priced"))
        except MissingPrice as e:
            lines.append(CostLine("global", "edge", f"Cloudflare {edge_plan} plan", "cloudflare:plan", None, str(e), "unpriced"))
    return CostReport(lines=lines, budget_usd=budget_usd)
