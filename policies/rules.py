"""The pack's validators, as plain functions over `PolicyResource`s.

Each `check_*` returns a list of `(message, urn)`; `urn` None means the stack as a whole. They are
wrapped into pulumi-policy objects in `policies/pack.py`, and run offline by `infra/pack.py`.
Messages name the resource and the numbers, so a violation says what to change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Mapping, Optional, Protocol, TypeGuard

from pulumi_policy import PolicyResource

from core import membership, slo
from core.manifest import MANIFEST_NAME, MANIFEST_TYPE, parse_manifest
from core.regions import REGIONS
from policies.cost import CostReport, CostResource, Usage, estimate
from policies.pricing import PriceBook, PriceBookError

Finding = tuple[str, Optional[str]]

RDS = "aws:rds/instance:Instance"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
VPC = "aws:ec2/vpc:Vpc"
ALB = "aws:lb/loadBalancer:LoadBalancer"
HEALTH = "aws:route53/healthCheck:HealthCheck"
BUDGET = "aws:budgets/budget:Budget"
PEERING = "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"
ROUTE = "aws:ec2/route:Route"
CF_POOL = "cloudflare:index/loadBalancerPool:LoadBalancerPool"
CF_MONITOR = "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor"
CF_RULESET = "cloudflare:index/ruleset:Ruleset"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
DEFAULT_DB_PORT = 5432


_SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def plain(value: Any) -> Any:
    """The value inside a secret, as the engine or the policy SDK may wrap it."""
    if isinstance(value, dict) and value.get(_SECRET_SIG[0]) == _SECRET_SIG[1]:
        return plain(value.get("value"))
    inner = getattr(value, "value", None)
    if type(value).__name__ == "Secret" and inner is not None:
        return plain(inner)
    return value


def known(value: Any) -> TypeGuard[Any]:
    """Neither absent nor unknown until apply (the engine's placeholder in a preview)."""
    return value is not None and value != UNKNOWN


def region_of(r: PolicyResource) -> str:
    region = r.props.get("region")
    return region if known(region) else "global"


def component_of(r: PolicyResource) -> str:
    parent = r.parent
    while parent is not None:
        if parent.resource_type.startswith("fraiseql:"):
            return f"{parent.resource_type.split(':')[-1]} {parent.name}"
        parent = parent.parent
    return "program"


def of_type(resources: Iterable[PolicyResource], typ: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == typ]


def depends_on(r: PolicyResource, prop: str, target: PolicyResource) -> bool:
    return any(d.urn == target.urn for d in (r.property_dependencies or {}).get(prop, []))


@dataclass
class StackFacts:
    """What the stack declares about itself, plus policy config overrides."""

    manifest: Optional[dict[str, Any]]
    budget_usd: Optional[float]
    advisory_fraction: float
    price_book_path: Optional[str] = None

    @classmethod
    def read(cls, resources: list[PolicyResource], config: Optional[dict[str, Any]] = None) -> "StackFacts":
        config = dict(config or {})
        manifest = None
        for r in of_type(resources, MANIFEST_TYPE):
            if r.name == MANIFEST_NAME and known(r.props.get("insecureValue")):
                manifest = parse_manifest(r.props["insecureValue"])
        budget = config.get("budgetUsd")
        if budget is None:
            limits = [r.props.get("limitAmount") for r in of_type(resources, BUDGET)]
            amounts = [float(a) for a in limits if known(a)]
            budget = min(amounts) if amounts else None
        fraction = config.get("advisoryFraction")
        if fraction is None:
            fraction = (manifest or {}).get("budget", {}).get("advisory_fraction", 0.9)
        return cls(manifest, budget, float(fraction), config.get("priceBook"))

    @property
    def slo(self) -> dict[str, Any]:
        return (self.manifest or {}).get("slo", {})


# --- cost ---------------------------------------------------------------------------------------

def cost_resources(resources: list[PolicyResource]) -> list[CostResource]:
    by_urn: dict[str, CostResource] = {}
    for r in resources:
        by_urn[r.urn] = CostResource(r.urn, r.resource_type, r.name, region_of(r), component_of(r), dict(r.props))
    for r in resources:
        by_urn[r.urn].deps = {
            prop: [by_urn[d.urn] for d in deps if d.urn in by_urn]
            for prop, deps in (r.property_dependencies or {}).items()
        }
    return [by_urn[r.urn] for r in resources]


def cost_report(resources: list[PolicyResource], facts: StackFacts) -> CostReport:
    book = PriceBook.load(facts.price_book_path)
    manifest = facts.manifest or {}
    regions = [r["name"] for r in manifest.get("regions", [])] or None
    return estimate(
        cost_resources(resources),
        book,
        Usage.from_manifest(manifest.get("usage")),
        regions=regions,
        topology=manifest.get("topology", "none"),
        budget_usd=facts.budget_usd,
        edge_plan=manifest.get("edge_plan"),
    )


def check_budget(resources: list[PolicyResource], facts: StackFacts, *, advisory: bool) -> list[Finding]:
    if facts.budget_usd is None:
        return [] if advisory else [("the stack declares no budget (fraiseql:budget.monthly_usd -> aws.budgets.Budget) "
                                     "and policy config sets no budgetUsd", None)]
    try:
        report = cost_report(resources, facts)
    except PriceBookError as e:
        return [] if advisory else [(f"cannot estimate cost: {e}", None)]
    total, budget = report.total, facts.budget_usd
    if advisory:
        limit = facts.advisory_fraction * budget
        if limit < total <= budget:
            return [(f"estimated ${total:,.2f}/month is {total / budget:.0%} of the ${budget:,.2f} budget "
                     f"(warning above {facts.advisory_fraction:.0%})\n{report.render()}", None)]
        return []
    if total > budget:
        top = sorted(report.lines, key=lambda l: -(l.monthly_usd or 0))[:5]
        biggest = "; ".join(f"{l.item} ${l.monthly_usd:,.2f}" for l in top)
        return [(f"estimated ${total:,.2f}/month exceeds the ${budget:,.2f} budget by ${total - budget:,.2f}; "
                 f"largest items: {biggest}\n{report.render()}", None)]
    return []


def check_unpriced(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    try:
        report = cost_report(resources, facts)
    except PriceBookError:
        return []
    by_name = {r.name: r.urn for r in resources}
    return [(f"{l.item} ({l.type}) has no price, so the estimate leaves it out: {l.basis}", by_name.get(l.item))
            for l in report.unpriced]


# --- topology and safety ------------------------------------------------------------------------

def check_regions(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    out: list[Finding] = []
    for r in resources:
        region = r.props.get("region")
        if known(region) and isinstance(region, str) and region not in REGIONS:
            out.append((f"{r.name} is in unknown region '{region}'", r.urn))
    names = [x["name"] for x in (facts.manifest or {}).get("regions", [])]
    for name in sorted({n for n in names if names.count(n) > 1}):
        out.append((f"region {name} is declared {names.count(name)} times; each region once", None))
    return out


def check_vpc_cidrs(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    vpcs = [(v, ipaddress.IPv4Network(v.props["cidrBlock"])) for v in of_type(resources, VPC) if known(v.props.get("cidrBlock"))]
    return [
        (f"VPC {b.name} ({nb}) overlaps VPC {a.name} ({na}): peering and routing need disjoint CIDRs", b.urn)
        for (a, na), (b, nb) in combinations(vpcs, 2)
        if na.overlaps(nb)
    ]


class Props(Protocol):
    """What a database check reads: a PolicyResource and a ResourceValidationArgs both have it."""

    @property
    def name(self) -> str: ...

    @property
    def props(self) -> Mapping[str, Any]: ...


def check_database(r: Props, protect: bool) -> list[str]:
    """Resource-level: encryption, privacy, deletion protection, backups, Pulumi protect."""
    p = r.props
    problems = []
    if p.get("storageEncrypted") is not True:
        problems.append("storage is not encrypted (storage_encrypted=True with a KMS key of its region)")
    if p.get("publiclyAccessible") is True:
        problems.append("is publicly accessible (publicly_accessible must be False)")
    if p.get("deletionProtection") is not True:
        problems.append("has no deletion protection (deletion_protection=True)")
    retention = p.get("backupRetentionPeriod")
    if known(retention) and (retention or 0) < 7:
        problems.append(f"keeps backups for {retention or 0} days; at least 7 are required")
    if not protect:
        problems.append("is not marked protect in Pulumi (ResourceOptions(protect=True))")
    return [f"database {r.name} {msg}" for msg in problems]


def check_databases(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    return [(m, r.urn) for r in of_type(resources, RDS) for m in check_database(r, bool(r.opts and r.opts.protect))]


def check_replica_lag_alarms(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    return _replica_lag_alarms(resources, facts) + check_pair_lag_alarms(resources, facts)


def _lag_ceiling(facts: StackFacts) -> tuple[float, str]:
    """The highest lag-alarm threshold the stack's RPO allows, and how it follows from the RPO."""
    rpo = facts.slo.get("rpo_seconds")
    if not rpo:
        return slo.LAG_ALARM_CAP_S, f"{slo.LAG_ALARM_CAP_S:g} s (no RPO declared)"
    return slo.lag_alarm_ceiling(rpo), slo.describe_ceiling(rpo)


def _replica_lag_alarms(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    ceiling, why = _lag_ceiling(facts)
    alarms = [a for a in of_type(resources, ALARM) if a.props.get("metricName") == "ReplicaLag"]
    out: list[Finding] = []
    for db in of_type(resources, RDS):
        if not db.props.get("replicateSourceDb"):
            continue
        mine = [a for a in alarms if depends_on(a, "dimensions", db)]
        if not mine:
            out.append((f"replica {db.name} has no ReplicaLag alarm; add one at <= {ceiling:g} s", db.urn))
            continue
        for a in mine:
            threshold = a.props.get("threshold")
            if known(threshold) and float(threshold) > ceiling:
                out.append((f"ReplicaLag alarm {a.name} on {db.name} fires at {float(threshold):g} s; it must be "
                            f"<= {why}", a.urn))
    return out


def check_pair_lag_alarms(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    """Multi-master: every directed pair of write regions has a replication-lag alarm."""
    m = facts.manifest or {}
    if m.get("phase") not in ("b", "c"):
        return []
    ceiling, why = _lag_ceiling(facts)
    alarms = {}
    for a in of_type(resources, ALARM):
        dims = a.props.get("dimensions") or {}
        if a.props.get("metricName") == "LagSeconds" and known(dims.get("Publisher")):
            alarms[(dims.get("Publisher"), dims.get("Subscriber"))] = a
    out: list[Finding] = []
    for pub in m.get("write_regions", []):
        for sub in m.get("write_regions", []):
            if pub == sub:
                continue
            alarm = alarms.get((pub, sub))
            if alarm is None:
                out.append((f"no replication-lag alarm for {pub} -> {sub}; add one at <= {ceiling:g} s", None))
            elif known(alarm.props.get("threshold")) and float(alarm.props["threshold"]) > ceiling:
                out.append((f"lag alarm {alarm.name} ({pub} -> {sub}) fires at {float(alarm.props['threshold']):g} s; "
                            f"it must be <= {why}", alarm.urn))
    return out


def check_endpoint_health(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    checks = of_type(resources, HEALTH)
    pools = of_type(resources, CF_POOL)
    out: list[Finding] = []
    for lb in of_type(resources, ALB):
        if lb.props.get("internal") is True:
            continue
        by_route53 = any(depends_on(h, "fqdn", lb) for h in checks)
        by_edge = any(depends_on(p, "origins", lb) and known(p.props.get("monitor")) and p.props.get("monitor") for p in pools)
        if not (by_route53 or by_edge):
            out.append((f"public endpoint {lb.name} ({region_of(lb)}) has no health check (Route 53 or an edge pool monitor)", lb.urn))
    return out


def _db_ports(resources: list[PolicyResource], facts: StackFacts) -> set[int]:
    ports = {int(p) for p in (r.props.get("port") for r in of_type(resources, RDS)) if known(p)}
    return ports or {int((facts.manifest or {}).get("db_port", DEFAULT_DB_PORT))}


def check_db_port_exposure(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    vpc_nets = [ipaddress.IPv4Network(v.props["cidrBlock"]) for v in of_type(resources, VPC) if known(v.props.get("cidrBlock"))]
    ports = _db_ports(resources, facts)
    out: list[Finding] = []

    def judge(name: str, urn: str, lo: Any, hi: Any, cidrs: list[str]) -> None:
        if not (known(lo) and known(hi)):
            return
        exposed = [p for p in ports if int(lo) <= p <= int(hi)] or ([min(ports)] if int(lo) == -1 or int(hi) == -1 else [])
        if not exposed:
            return
        for cidr in cidrs:
            if not known(cidr):
                continue
            net = ipaddress.IPv4Network(cidr, strict=False)
            if not any(net.subnet_of(v) for v in vpc_nets):
                out.append((f"{name} opens database port {exposed[0]} to {cidr}, outside the stack's VPCs "
                            f"({', '.join(map(str, vpc_nets)) or 'none'}); allow only the app's security group or peer database subnets", urn))

    for r in of_type(resources, SG_INGRESS):
        p = r.props
        cidrs = [c for c in (p.get("cidrIpv4"),) if c]
        if p.get("cidrIpv6"):
            cidrs.append("0.0.0.0/0")  # any IPv6 source is outside every IPv4 VPC
        judge(r.name, r.urn, p.get("fromPort"), p.get("toPort"), cidrs)
    for r in of_type(resources, "aws:ec2/securityGroup:SecurityGroup"):
        for rule in r.props.get("ingress") or []:
            judge(r.name, r.urn, rule.get("fromPort"), rule.get("toPort"), list(rule.get("cidrBlocks") or []))
    for r in of_type(resources, "aws:ec2/securityGroupRule:SecurityGroupRule"):
        if r.props.get("type") == "ingress":
            judge(r.name, r.urn, r.props.get("fromPort"), r.props.get("toPort"), list(r.props.get("cidrBlocks") or []))
    return out


def check_quorum(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    m = facts.manifest or {}
    if m.get("phase") not in ("b", "c"):
        return []
    writers = m.get("write_regions", [])
    # Manifests written before quorum.members existed: every writer is a member.
    members, nxt, quorum = m.get("quorum_members") or writers, m.get("quorum_next_members"), m.get("quorum")
    out: list[Finding] = []
    for label, lst, joint, own in (("members", members, nxt is not None, writers), ("next members", nxt, True, [])):
        if lst is not None and (why := membership.list_problem(lst, joint=joint, writers=own)) is not None:
            out.append((f"active-active quorum {label} ({', '.join(lst)}): {why}", None))
    if not out and quorum != membership.majority(len(members)):
        out.append((f"quorum is {quorum} but a majority of {len(members)} members is {membership.majority(len(members))}", None))
    rds_writers = [r for r in of_type(resources, RDS) if not r.props.get("replicateSourceDb")]
    if len(rds_writers) != len(writers):
        out.append((f"{len(rds_writers)} writer databases in the stack for {len(writers)} write regions", None))
    return out


def check_mesh(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    m = facts.manifest or {}
    if m.get("topology") != "mesh":
        return []
    regions = [r["name"] for r in m.get("regions", [])]
    cidrs = {r["name"]: r["cidr"] for r in m.get("regions", [])}
    peerings = of_type(resources, PEERING)
    pairs = [frozenset((region_of(p), p.props.get("peerRegion"))) for p in peerings]
    want = {frozenset(p) for p in combinations(regions, 2)}
    out: list[Finding] = []
    n = len(regions)
    if len(peerings) != n * (n - 1) // 2:
        out.append((f"a mesh of {n} regions needs {n * (n - 1) // 2} peering links; found {len(peerings)}", None))
    for pair in sorted(want - set(pairs), key=sorted):
        out.append((f"no peering between {' and '.join(sorted(pair))}", None))
    for pair in sorted({p for p in pairs if pairs.count(p) > 1}, key=sorted):
        out.append((f"{' and '.join(sorted(pair))} are peered {pairs.count(pair)} times; exactly once", None))
    routes = of_type(resources, ROUTE)
    for region in regions:
        for peer in regions:
            if peer == region:
                continue
            if not any(region_of(rt) == region and rt.props.get("destinationCidrBlock") == cidrs[peer]
                       and (rt.props.get("vpcPeeringConnectionId") or (rt.property_dependencies or {}).get("vpcPeeringConnectionId"))
                       for rt in routes):
                out.append((f"{region} has no route to {peer} ({cidrs[peer]}) over the mesh", None))
    return out


def _caches_post(expression: str) -> bool:
    e = expression.replace(" ", "").lower()
    return 'http.request.method' not in e or '"post"' in e or "ne\"get\"" in e


def check_edge_mutations(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    out: list[Finding] = []
    for rs in of_type(resources, CF_RULESET):
        if rs.props.get("phase") != "http_request_cache_settings":
            continue
        for rule in rs.props.get("rules") or []:
            params = rule.get("actionParameters") or {}
            if params.get("cache") is True and _caches_post(str(rule.get("expression", ""))):
                out.append((f"cache rule '{rule.get('description', rule.get('ref', '?'))}' in {rs.name} can cache "
                            f"non-GET requests (expression: {rule.get('expression')}); mutations must bypass the cache", rs.urn))
    for script in of_type(resources, "cloudflare:index/workersScript:WorkersScript"):
        for b in plain(script.props.get("bindings")) or []:
            b = plain(b)
            if b.get("name") == "CACHE_MUTATIONS" and str(b.get("text", "")).lower() in ("1", "true", "yes"):
                out.append((f"worker {script.name} sets CACHE_MUTATIONS={b.get('text')}; mutations must always reach the origin", script.urn))
    return out


def check_edge_pools(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    """Phase C: every region's origin sits in a monitored pool of the load balancer."""
    m = facts.manifest or {}
    if not m.get("edge"):
        return []
    pools = of_type(resources, CF_POOL)
    lbs = of_type(resources, "cloudflare:index/loadBalancer:LoadBalancer")
    out: list[Finding] = []
    if not lbs:
        out.append(("phase c has no Cloudflare load balancer in front of the regions", None))
    if not of_type(resources, CF_MONITOR):
        out.append(("phase c has no load balancer health monitor", None))
    for region in m.get("write_regions", []):
        albs = [a for a in of_type(resources, ALB) if region_of(a) == region]
        mine = [p for p in pools if any(depends_on(p, "origins", a) for a in albs)]
        if not mine:
            out.append((f"no edge pool has the {region} origin", None))
        for p in mine:
            if not p.props.get("monitor"):
                out.append((f"edge pool {p.name} ({region}) has no health monitor", p.urn))
            if lbs and not any(depends_on(lb, "defaultPools", p) for lb in lbs):
                out.append((f"edge pool {p.name} ({region}) is not in the load balancer's default pools", p.urn))
    return out


def slo_bounds(facts: StackFacts) -> list[slo.Bound]:
    return slo.manifest_bounds(facts.manifest) if facts.manifest else []


def check_slo(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    if not facts.manifest:
        return [("the stack has no manifest (fraiseql-manifest), so its SLO targets cannot be checked", None)]
    return [(f"{b.name} target {b.target:g} {b.unit} is below what this topology can reach: "
             f"{b.floor:.3g} {b.unit} = {b.arithmetic}", None) for b in slo_bounds(facts) if not b.feasible]
