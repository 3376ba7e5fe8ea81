"""The price book: typed lookups over a validated ``policies/prices.json``.

    book = PriceBook.load()
    book.rds_instance_hourly("us-east-1", "db.r6g.large", multi_az=True)

A lookup with no price raises :class:`MissingPrice` (never 0) so the cost model can list the
resource as UNPRICED.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Iterator, Literal, Union

from pydantic import BaseModel

from policies.pricing.schema import Price, PriceBookError, PriceBookModel, RegionPrices, Source, dumps, iter_prices, validate

DEFAULT_PATH = Path(__file__).parent.parent / "prices.json"


class MissingPrice(LookupError):
    """The book has no price for this resource; the cost model reports it as UNPRICED."""

    def __init__(self, kind: str, key: str, detail: str = ""):
        self.kind = kind
        self.key = key
        super().__init__(f"no {kind} price for {key}" + (f": {detail}" if detail else ""))



_ARCH = {"x86": "x86", "x86_64": "x86", "amd64": "x86", "arm": "arm", "arm64": "arm", "aarch64": "arm"}
_ROUTE53_POLICY = {
    "simple": "standard", "standard": "standard", "failover": "standard", "weighted": "standard",
    "multivalue": "standard", "latency": "latency", "geolocation": "geo", "geoproximity": "geo",
    "geo": "geo", "ip_based": "ip_based", "cidr": "ip_based",
}


class PriceBook:
    """A validated price book. Build it with :meth:`load` or :meth:`from_data`."""

    def __init__(self, model: PriceBookModel, path: Path):
        self.model = model
        self.path = path

    # -- construction
    @classmethod
    def load(cls, path: Union[str, Path, None] = None) -> "PriceBook":
        file = Path(path) if path is not None else DEFAULT_PATH
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceBookError(f"{file}: cannot read price book: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PriceBookError(
                f"{file}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls(validate(file, data), file)

    @classmethod
    def from_data(cls, data: Any, path: Union[str, Path] = "<memory>") -> "PriceBook":
        return cls(validate(Path(path), data), Path(path))

    def to_data(self) -> dict[str, Any]:
        return self.model.model_dump(mode="json", by_alias=True, exclude_none=True)

    def dumps(self) -> str:
        return dumps(self.to_data())

    def write(self, path: Union[str, Path, None] = None) -> Path:
        file = Path(path) if path is not None else self.path
        file.write_text(self.dumps(), encoding="utf-8")
        return file

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceBook) and self.model == other.model

    # -- generic access
    @property
    def hours_per_month(self) -> float:
        return self.model.hours_per_month

    @property
    def retrieved(self) -> dt.date:
        return self.model.retrieved

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(self.model.regions))

    def rows(self) -> Iterator[tuple[tuple[str, ...], Price]]:
        """Every price row with its JSON path (a tuple: instance classes contain dots)."""
        yield from iter_prices(self.model)

    def source(self, source_id: str) -> Source:
        for src in self.model.sources:
            if src.id == source_id:
                return src
        raise MissingPrice("source", source_id)

    def row(self, kind: str, key: str, *path: str) -> Price:
        """The Price row at ``path`` (JSON keys), or MissingPrice(kind, key)."""
        node: Any = self.model
        for part in path:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, BaseModel):
                names = {f.alias or n: n for n, f in type(node).model_fields.items()}
                node = getattr(node, names[part]) if part in names else None
            else:
                node = None
            if node is None:
                raise MissingPrice(kind, key, f"{'.'.join(path)} is not in {self.path.name}")
        if not isinstance(node, Price):
            raise MissingPrice(kind, key, f"{'.'.join(path)} is not a price row")
        return node

    def _usd(self, kind: str, key: str, *path: str) -> float:
        return self.row(kind, key, *path).usd

    @staticmethod
    def _arch(arch: str) -> str:
        try:
            return _ARCH[arch.lower()]
        except KeyError:
            raise MissingPrice("fargate", arch, f"unknown architecture; use one of {sorted(_ARCH)}") from None

    # -- RDS for PostgreSQL
    def rds_instance_hourly(self, region: str, instance_class: str, multi_az: bool) -> float:
        dep = "multi_az" if multi_az else "single_az"
        return self._usd("rds_instance", f"{region}/{instance_class}/{dep}",
                         "regions", region, "rds", "instances", instance_class, dep)

    def rds_storage_gb_month(self, region: str, storage_type: str = "gp3", multi_az: bool = False) -> float:
        dep = "multi_az" if multi_az else "single_az"
        return self._usd("rds_storage", f"{region}/{storage_type}/{dep}",
                         "regions", region, "rds", "storage", storage_type, dep)

    def rds_backup_gb_month(self, region: str) -> float:
        """Backup storage beyond the free allowance (100% of provisioned storage)."""
        return self._usd("rds_backup", region, "regions", region, "rds", "backup_gb_month")

    def rds_performance_insights_month(self, region: str, retention_days: int = 7) -> float:
        """0 within the free retention; longer retention has no price in the book yet."""
        rds = self.model.regions.get(region, RegionPrices()).rds
        pi = rds.performance_insights if rds else None
        if pi is None:
            raise MissingPrice("rds_performance_insights", region)
        if retention_days <= pi.free_retention_days:
            return 0.0
        raise MissingPrice("rds_performance_insights", f"{region}/{retention_days}d",
                           f"only the free {pi.free_retention_days}-day retention is priced")

    # -- compute and network
    def fargate_vcpu_hour(self, region: str, arch: str = "x86") -> float:
        a = self._arch(arch)
        return self._usd("fargate", f"{region}/{a}/vcpu", "regions", region, "fargate", a, "vcpu_hour")

    def fargate_gb_hour(self, region: str, arch: str = "x86") -> float:
        a = self._arch(arch)
        return self._usd("fargate", f"{region}/{a}/gb", "regions", region, "fargate", a, "gb_hour")

    def nat_gateway_hourly(self, region: str) -> float:
        return self._usd("nat_gateway", f"{region}/hour", "regions", region, "nat_gateway", "hourly")

    def nat_gateway_per_gb(self, region: str) -> float:
        return self._usd("nat_gateway", f"{region}/gb", "regions", region, "nat_gateway", "per_gb")

    def public_ipv4_hourly(self, region: str) -> float:
        return self._usd("public_ipv4", region, "regions", region, "public_ipv4", "hourly")

    def alb_hourly(self, region: str) -> float:
        return self._usd("alb", f"{region}/hour", "regions", region, "alb", "hourly")

    def alb_lcu_hour(self, region: str) -> float:
        return self._usd("alb", f"{region}/lcu", "regions", region, "alb", "lcu_hour")

    def tgw_attachment_hourly(self, region: str) -> float:
        return self._usd("tgw", f"{region}/attachment", "regions", region, "tgw", "attachment_hourly")

    def tgw_per_gb(self, region: str) -> float:
        return self._usd("tgw", f"{region}/gb", "regions", region, "tgw", "per_gb")

    def inter_region_per_gb(self, src: str, dst: str) -> float:
        if src == dst:
            raise MissingPrice("inter_region", f"{src}->{dst}", "same region is not inter-region transfer")
        return self._usd("inter_region", f"{src}->{dst}", "inter_region", src, dst)

    # -- management services
    def kms_key_month(self, region: str) -> float:
        return self._usd("kms", region, "regions", region, "kms", "key_month")

    def cloudwatch_alarm_month(self, region: str) -> float:
        return self._usd("cloudwatch", f"{region}/alarm", "regions", region, "cloudwatch", "alarm_month")

    def cloudwatch_logs_ingest_per_gb(self, region: str) -> float:
        return self._usd("cloudwatch", f"{region}/logs", "regions", region, "cloudwatch", "logs_ingest_per_gb")

    def secret_month(self, region: str) -> float:
        return self._usd("secrets_manager", region, "regions", region, "secrets_manager", "secret_month")

    def lambda_request(self, region: str) -> float:
        return self._usd("lambda", f"{region}/request", "regions", region, "lambda", "request")

    def lambda_gb_second(self, region: str, arch: str = "x86") -> float:
        a = self._arch(arch)
        return self._usd("lambda", f"{region}/{a}", "regions", region, "lambda", f"{a}_gb_second")

    def sns_email_month(self, notifications: int) -> float:
        sns = self.model.global_.sns
        if sns is None:
            raise MissingPrice("sns", "email")
        billable = max(0, notifications - sns.free_email_notifications)
        return billable / 100_000 * sns.email_per_100k.usd

    def budgets_month(self, budgets: int) -> float:
        b = self.model.global_.budgets
        if b is None:
            raise MissingPrice("budgets", "budget")
        days = self.hours_per_month / 24
        return max(0, budgets - b.free_budgets) * b.additional_budget_day.usd * days

    # -- Route 53 and ARC (global)
    def route53_hosted_zone_month(self) -> float:
        """Per zone, for the first 25 zones of the account."""
        return self._usd("route53", "hosted_zone", "global", "route53", "hosted_zone", "first_25_month")

    def route53_hosted_zones_month(self, zones: int) -> float:
        first = min(zones, 25) * self.route53_hosted_zone_month()
        rest = max(0, zones - 25)
        if rest == 0:
            return first
        return first + rest * self._usd("route53", "hosted_zone>25", "global", "route53", "hosted_zone",
                                        "beyond_25_month")

    def route53_health_check_month(self, endpoint: Literal["aws", "non_aws"] = "aws", *, https: bool = False,
                                   string_matching: bool = False, fast_interval: bool = False,
                                   latency_measurement: bool = False) -> float:
        """List price of one health check; each optional feature is billed on top of the base."""
        if endpoint not in ("aws", "non_aws"):
            raise MissingPrice("route53_health_check", endpoint, "endpoint must be 'aws' or 'non_aws'")
        base = self._usd("route53_health_check", endpoint, "global", "route53", "health_check",
                         f"{endpoint}_endpoint_month")
        features = sum((https, string_matching, fast_interval, latency_measurement))
        if not features:
            return base
        each = self._usd("route53_health_check", f"{endpoint}/feature", "global", "route53", "health_check",
                         f"optional_feature_{endpoint}_month")
        return base + features * each

    def route53_free_aws_health_checks(self) -> int:
        r53 = self.model.global_.route53
        if r53 is None:
            raise MissingPrice("route53_health_check", "free_aws_endpoint_checks")
        return r53.health_check.free_aws_endpoint_checks

    def route53_queries_per_million(self, policy: str = "standard") -> float:
        """First billion queries a month; alias queries to AWS resources are free."""
        tier = _ROUTE53_POLICY.get(policy)
        if tier is None:
            raise MissingPrice("route53_queries", policy, f"routing policy must be one of {sorted(_ROUTE53_POLICY)}")
        return self._usd("route53_queries", policy, "global", "route53", "queries", f"{tier}_per_million")

    def arc_cluster_hourly(self) -> float:
        return self._usd("arc", "cluster", "global", "arc", "cluster_hourly")

    def cloudwatch_dashboard_month(self) -> float:
        """A dashboard, in any region (dashboards are global; the free tier's three are not counted)."""
        return self._usd("cloudwatch", "dashboard", "global", "cloudwatch", "dashboard_month")

    # -- Cloudflare
    def cloudflare_plan_month(self, plan: str) -> float:
        return self._usd("cloudflare_plan", plan, "cloudflare", "plans", plan)

    def cloudflare_workers(self, requests: float = 0, cpu_ms: float = 0) -> float:
        """Workers Paid for a month: base plus requests and CPU time beyond the included amounts."""
        w = self.model.cloudflare.workers_paid
        if w is None:
            raise MissingPrice("cloudflare_workers", "workers_paid")
        extra_req = max(0.0, requests - w.included_requests) / 1e6
        extra_cpu = max(0.0, cpu_ms - w.included_cpu_ms) / 1e6
        return w.base_month.usd + extra_req * w.per_million_requests.usd + extra_cpu * w.per_million_cpu_ms.usd

    def cloudflare_load_balancing_month(self, origins: int, health_check_regions: int = 1,
                                        dns_queries: float = 0) -> float:
        lb = self.model.cloudflare.load_balancing
        if lb is None:
            raise MissingPrice("cloudflare_load_balancing", "load_balancing")
        extra_origins = max(0, origins - lb.included_origins)
        extra_regions = max(0, health_check_regions - lb.included_health_check_regions)
        extra_queries = math.ceil(max(0.0, dns_queries - lb.included_dns_queries) / 500_000)
        return (lb.base_month.usd + extra_origins * lb.per_extra_origin_month.usd
                + extra_regions * lb.per_extra_health_check_region_month.usd
                + extra_queries * lb.per_500k_dns_queries.usd)

    def cloudflare_rate_limiting_month(self) -> float:
        return self._usd("cloudflare_rate_limiting", "rules", "cloudflare", "rate_limiting_month")
