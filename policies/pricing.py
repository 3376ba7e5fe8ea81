"""The project's price book: loading, validation, typed lookups and a Price List refresh.

``policies/prices.json`` is data; this module is the only code that reads or writes it.

    book = PriceBook.load()
    book.rds_instance_hourly("us-east-1", "db.r6g.large", multi_az=True)

A lookup with no price raises :class:`MissingPrice` (never 0) so the cost model can list the
resource as UNPRICED. Regenerate the AWS rows with::

    python -m policies.pricing refresh [--regions us-east-1,us-west-2,eu-west-1]
                                       [--out policies/prices.json] [--dry-run]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import difflib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

DEFAULT_PATH = Path(__file__).with_name("prices.json")
DEFAULT_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
API_SOURCE_ID = "aws-price-list-api"
REGION_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]+$"

# Instance classes the refresh command prices; rows for others can still be added by hand.
RDS_INSTANCE_CLASSES = (
    "db.t4g.medium", "db.t4g.large",
    "db.m6g.large", "db.m6g.xlarge",
    "db.m7g.large", "db.m7g.xlarge",
    "db.r6g.large", "db.r6g.xlarge",
    "db.r7g.large", "db.r7g.xlarge",
)

# Billing usage types carry a region prefix ("USW2-NatGateway-Hours", "EU-LoadBalancerUsage");
# us-east-1 rows appear both with and without "USE1-" depending on the service.
USAGE_TYPE_PREFIX = {
    "us-east-1": "USE1", "us-east-2": "USE2", "us-west-1": "USW1", "us-west-2": "USW2",
    "eu-west-1": "EU", "eu-west-2": "EUW2", "eu-central-1": "EUC1", "ca-central-1": "CAN1",
    "sa-east-1": "SAE1", "ap-northeast-1": "APN1", "ap-southeast-1": "APS1", "ap-southeast-2": "APS2",
}


class PriceBookError(ValueError):
    """The price book file is unreadable or does not match the schema."""


class MissingPrice(LookupError):
    """The book has no price for this resource; the cost model reports it as UNPRICED."""

    def __init__(self, kind: str, key: str, detail: str = ""):
        self.kind = kind
        self.key = key
        super().__init__(f"no {kind} price for {key}" + (f": {detail}" if detail else ""))


class RefreshError(RuntimeError):
    """The Price List API answer cannot be turned into one unambiguous price."""


# --------------------------------------------------------------------------- schema

Usd = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
Text = Annotated[str, StringConstraints(min_length=1)]
RegionCode = Annotated[str, StringConstraints(pattern=REGION_PATTERN)]
Date = Annotated[dt.date, Field(strict=False)]  # JSON carries dates as "YYYY-MM-DD" strings


class _Model(BaseModel):
    # strict: a price written as "0.45" or true is an error, not a silent coercion
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Price(_Model):
    usd: Usd
    unit: Text
    source: Text
    note: Optional[str] = None
    sku: Optional[str] = None
    effective_date: Optional[str] = None
    description: Optional[str] = None


class Source(_Model):
    id: Text
    name: Text
    url: Text
    retrieved: Optional[Date] = None
    note: Optional[str] = None


class ByDeployment(_Model):
    single_az: Price
    multi_az: Price


class PerformanceInsights(_Model):
    free_retention_days: Count
    note: Optional[str] = None


class Rds(_Model):
    instances: dict[Text, ByDeployment] = {}
    storage: dict[Text, ByDeployment] = {}
    backup_gb_month: Optional[Price] = None
    performance_insights: Optional[PerformanceInsights] = None


class FargateArch(_Model):
    vcpu_hour: Price
    gb_hour: Price


class Fargate(_Model):
    x86: Optional[FargateArch] = None
    arm: Optional[FargateArch] = None


class HourlyAndPerGb(_Model):
    hourly: Price
    per_gb: Price


class PublicIpv4(_Model):
    hourly: Price


class Alb(_Model):
    hourly: Price
    lcu_hour: Price


class Kms(_Model):
    key_month: Price


class CloudWatch(_Model):
    alarm_month: Optional[Price] = None
    logs_ingest_per_gb: Optional[Price] = None


class SecretsManager(_Model):
    secret_month: Price


class Tgw(_Model):
    attachment_hourly: Price
    per_gb: Price


class Lambda(_Model):
    request: Optional[Price] = None
    x86_gb_second: Optional[Price] = None
    arm_gb_second: Optional[Price] = None


class RegionPrices(_Model):
    rds: Optional[Rds] = None
    fargate: Optional[Fargate] = None
    nat_gateway: Optional[HourlyAndPerGb] = None
    public_ipv4: Optional[PublicIpv4] = None
    alb: Optional[Alb] = None
    kms: Optional[Kms] = None
    cloudwatch: Optional[CloudWatch] = None
    secrets_manager: Optional[SecretsManager] = None
    tgw: Optional[Tgw] = None
    lambda_: Optional[Lambda] = Field(None, alias="lambda")


class HostedZones(_Model):
    first_25_month: Price
    beyond_25_month: Price


class HealthChecks(_Model):
    aws_endpoint_month: Price
    non_aws_endpoint_month: Price
    optional_feature_aws_month: Price
    optional_feature_non_aws_month: Price
    free_aws_endpoint_checks: Count = 0
    note: Optional[str] = None


class Route53Queries(_Model):
    standard_per_million: Price
    latency_per_million: Price
    geo_per_million: Price
    ip_based_per_million: Price


class Route53(_Model):
    hosted_zone: HostedZones
    health_check: HealthChecks
    queries: Route53Queries


class Arc(_Model):
    cluster_hourly: Price


class Budgets(_Model):
    free_budgets: Count
    additional_budget_day: Price


class Sns(_Model):
    free_email_notifications: Count
    email_per_100k: Price


class GlobalPrices(_Model):
    route53: Optional[Route53] = None
    arc: Optional[Arc] = None
    budgets: Optional[Budgets] = None
    sns: Optional[Sns] = None


class CloudflarePlans(_Model):
    free: Price
    pro: Price
    business: Price
    enterprise: Price


class WorkersPaid(_Model):
    base_month: Price
    included_requests: Count
    per_million_requests: Price
    included_cpu_ms: Count
    per_million_cpu_ms: Price


class LoadBalancing(_Model):
    base_month: Price
    included_origins: Count
    per_extra_origin_month: Price
    included_health_check_regions: Count
    per_extra_health_check_region_month: Price
    included_dns_queries: Count
    per_500k_dns_queries: Price


class Cloudflare(_Model):
    plans: Optional[CloudflarePlans] = None
    workers_paid: Optional[WorkersPaid] = None
    load_balancing: Optional[LoadBalancing] = None
    rate_limiting_month: Optional[Price] = None
    waf_managed_rules_month: Optional[Price] = None


class PriceBookModel(_Model):
    schema_version: Literal[1]
    currency: Literal["USD"]
    hours_per_month: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    retrieved: Date
    sources: list[Source] = Field(min_length=1)
    regions: dict[RegionCode, RegionPrices]
    inter_region: dict[RegionCode, dict[RegionCode, Price]] = {}
    global_: GlobalPrices = Field(GlobalPrices(), alias="global")
    cloudflare: Cloudflare = Cloudflare()


# --------------------------------------------------------------------------- validation messages

def _strip(tp: Any) -> Any:
    """Unwrap Annotated/Optional so the schema can be walked by field name."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp


def _type_at(loc: Sequence[Any]) -> Any:
    tp: Any = PriceBookModel
    for part in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for name, f in tp.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    return _strip(tp)


def _path(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _expected(err: dict[str, Any], missing_siblings: Sequence[str] = ()) -> str:
    kind, loc, ctx = err["type"], err["loc"], err.get("ctx") or {}
    if kind == "missing":
        return "this required key is missing"
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(str(loc[-1]), missing_siblings, n=1)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        parent = _type_at(loc[:-1])
        if isinstance(parent, type) and issubclass(parent, BaseModel):
            keys = sorted(f.alias or n for n, f in parent.model_fields.items())
            return f"unknown key{hint}; valid keys here are: {', '.join(keys)}"
        return f"unknown key{hint}"
    if loc and loc[-1] == "[key]":
        return "region keys must be AWS region codes such as us-east-1"
    if kind in ("float_type", "int_type", "int_from_float", "float_parsing", "int_parsing"):
        whole = _type_at(loc) is int
        return f"expected a {'whole ' if whole else ''}number, not a {type(err['input']).__name__}"
    if kind == "finite_number":
        return "expected a finite number"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"expected a number {'>=' if kind == 'greater_than_equal' else '>'} {bound:g}"
    if kind.startswith("date"):
        return "expected a date written YYYY-MM-DD"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    if kind in ("string_type", "string_too_short"):
        return "expected a non-empty string"
    if kind in ("model_type", "dict_type"):
        return "expected a JSON object"
    if kind == "list_type":
        return "expected a JSON list"
    return err["msg"]


def _error_message(file: Path, errors: list[dict[str, Any]]) -> str:
    # an unknown key usually explains a missing sibling (a typo), so report it first
    errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    err, more = errors[0], len(errors) - 1
    loc = err["loc"]
    siblings = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == loc[:-1]]
    shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {json.dumps(err['input'], default=str)[:60]})"
    tail = f" [and {more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{file}: {_path(loc)}: {_expected(err, siblings)}{shown}{tail}"


def _iter_prices(node: Any, loc: tuple[Any, ...] = ()) -> Iterable[tuple[tuple[Any, ...], Price]]:
    if isinstance(node, Price):
        yield loc, node
    elif isinstance(node, BaseModel):
        for name, field in type(node).model_fields.items():
            yield from _iter_prices(getattr(node, name), loc + (field.alias or name,))
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _iter_prices(value, loc + (key,))


def _check_sources(file: Path, model: PriceBookModel) -> None:
    dated = {s.id for s in model.sources if s.retrieved is not None}
    known = {s.id for s in model.sources}
    if len(known) != len(model.sources):
        raise PriceBookError(f"{file}: sources: source ids must be unique")
    for loc, price in _iter_prices(model):
        if price.source not in known:
            raise PriceBookError(
                f"{file}: {_path(loc + ('source',))}: unknown source {price.source!r}; "
                f"expected one of: {', '.join(sorted(known))}")
        if price.source not in dated:
            raise PriceBookError(
                f"{file}: {_path(loc + ('source',))}: source {price.source!r} has no retrieved date; "
                "a price must cite a dated source")


def _validate(file: Path, data: Any) -> PriceBookModel:
    try:
        model = PriceBookModel.model_validate(data)
    except ValidationError as exc:
        raise PriceBookError(_error_message(file, exc.errors())) from None
    _check_sources(file, model)
    return model


def dumps(data: dict[str, Any]) -> str:
    """The one on-disk form: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- the book

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
        return cls(_validate(file, data), file)

    @classmethod
    def from_data(cls, data: Any, path: Union[str, Path] = "<memory>") -> "PriceBook":
        return cls(_validate(Path(path), data), Path(path))

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
        yield from _iter_prices(self.model)

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


# --------------------------------------------------------------------------- Price List API refresh

@dataclass(frozen=True)
class PriceQuery:
    """One book row and the Price List question that prices it.

    ``filters`` go to get_products as TERM_MATCH. ``usagetypes``, when set, then keeps only products
    whose usagetype is one of them (region prefixes differ per service). ``prefer`` picks, among the
    remaining products, those whose attribute has the first listed value present (RDS storage rows
    exist per engine and as "Any"). ``begin_range`` picks one tier of a tiered price; without it the
    product must have exactly one OnDemand price dimension.
    """

    kind: str
    path: tuple[str, ...]
    service_code: str
    filters: tuple[tuple[str, str], ...]
    usagetypes: tuple[str, ...] = ()
    prefer: tuple[str, tuple[str, ...]] | None = None
    begin_range: str | None = None

    def api_filters(self) -> list[dict[str, str]]:
        return [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in self.filters]

    def describe(self) -> str:
        parts = [f"{f}={v}" for f, v in self.filters]
        if self.usagetypes:
            parts.append(f"usagetype in {list(self.usagetypes)}")
        if self.prefer:
            parts.append(f"prefer {self.prefer[0]} in {list(self.prefer[1])}")
        if self.begin_range is not None:
            parts.append(f"beginRange={self.begin_range}")
        return f"{self.service_code} [{', '.join(parts)}] for {'.'.join(self.path)}"


@dataclass(frozen=True)
class FetchedPrice:
    usd: float
    unit: str
    sku: str
    effective_date: str
    description: str


def _usage(region: str, base: str) -> tuple[str, ...]:
    try:
        prefix = USAGE_TYPE_PREFIX[region]
    except KeyError:
        raise RefreshError(f"no usage-type prefix known for {region}; add it to USAGE_TYPE_PREFIX") from None
    return (base, f"{prefix}-{base}") if region == "us-east-1" else (f"{prefix}-{base}",)


def aws_price_queries(regions: Sequence[str]) -> list[PriceQuery]:
    """Every AWS row the refresh command regenerates, in a stable order."""
    queries: list[PriceQuery] = []
    for r in regions:
        reg = (("regionCode", r),)
        base = ("regions", r)
        for cls in RDS_INSTANCE_CLASSES:
            for dep, key in (("Single-AZ", "single_az"), ("Multi-AZ", "multi_az")):
                queries.append(PriceQuery(
                    "rds_instance", base + ("rds", "instances", cls, key), "AmazonRDS",
                    reg + (("productFamily", "Database Instance"), ("locationType", "AWS Region"),
                           ("databaseEngine", "PostgreSQL"), ("instanceType", cls), ("deploymentOption", dep))))
        pg_or_any = ("databaseEngine", ("PostgreSQL", "Any"))
        for key, usage in (("single_az", "RDS:GP3-Storage"), ("multi_az", "RDS:Multi-AZ-GP3-Storage")):
            queries.append(PriceQuery("rds_storage", base + ("rds", "storage", "gp3", key), "AmazonRDS",
                                      reg + (("productFamily", "Database Storage"),), _usage(r, usage), pg_or_any))
        queries.append(PriceQuery("rds_backup", base + ("rds", "backup_gb_month"), "AmazonRDS",
                                  reg + (("productFamily", "Storage Snapshot"),),
                                  _usage(r, "RDS:ChargedBackupUsage"), pg_or_any))
        for arch, infix in (("x86", ""), ("arm", "ARM-")):
            queries.append(PriceQuery("fargate", base + ("fargate", arch, "vcpu_hour"), "AmazonECS", reg,
                                      _usage(r, f"Fargate-{infix}vCPU-Hours:perCPU")))
            queries.append(PriceQuery("fargate", base + ("fargate", arch, "gb_hour"), "AmazonECS", reg,
                                      _usage(r, f"Fargate-{infix}GB-Hours")))
        nat = reg + (("productFamily", "NAT Gateway"),)
        queries.append(PriceQuery("nat_gateway", base + ("nat_gateway", "hourly"), "AmazonEC2", nat,
                                  _usage(r, "NatGateway-Hours")))
        queries.append(PriceQuery("nat_gateway", base + ("nat_gateway", "per_gb"), "AmazonEC2", nat,
                                  _usage(r, "NatGateway-Bytes")))
        queries.append(PriceQuery("public_ipv4", base + ("public_ipv4", "hourly"), "AmazonVPC", reg,
                                  _usage(r, "PublicIPv4:InUseAddress")))
        alb = reg + (("productFamily", "Load Balancer-Application"),)
        queries.append(PriceQuery("alb", base + ("alb", "hourly"), "AWSELB", alb, _usage(r, "LoadBalancerUsage")))
        queries.append(PriceQuery("alb", base + ("alb", "lcu_hour"), "AWSELB", alb, _usage(r, "LCUUsage")))
        queries.append(PriceQuery("kms", base + ("kms", "key_month"), "awskms", reg, (f"{r}-KMS-Keys",)))
        queries.append(PriceQuery("cloudwatch", base + ("cloudwatch", "alarm_month"), "AmazonCloudWatch", reg,
                                  _usage(r, "CW:AlarmMonitorUsage")))
        queries.append(PriceQuery("cloudwatch", base + ("cloudwatch", "logs_ingest_per_gb"), "AmazonCloudWatch",
                                  reg, _usage(r, "DataProcessing-Bytes")))
        queries.append(PriceQuery("secrets_manager", base + ("secrets_manager", "secret_month"),
                                  "AWSSecretsManager", reg, _usage(r, "AWSSecretsManager-Secrets")))
        queries.append(PriceQuery("tgw", base + ("tgw", "attachment_hourly"), "AmazonVPC", reg,
                                  _usage(r, "TransitGateway-Hours")))
        queries.append(PriceQuery("tgw", base + ("tgw", "per_gb"), "AmazonVPC", reg,
                                  _usage(r, "TransitGateway-Bytes")))
        queries.append(PriceQuery("lambda", base + ("lambda", "request"), "AWSLambda", reg, _usage(r, "Request")))
        queries.append(PriceQuery("lambda", base + ("lambda", "x86_gb_second"), "AWSLambda", reg,
                                  _usage(r, "Lambda-GB-Second"), begin_range="0"))
        queries.append(PriceQuery("lambda", base + ("lambda", "arm_gb_second"), "AWSLambda", reg,
                                  _usage(r, "Lambda-GB-Second-ARM"), begin_range="0"))
    for src in regions:
        for dst in regions:
            if src != dst:
                queries.append(PriceQuery(
                    "inter_region", ("inter_region", src, dst), "AWSDataTransfer",
                    (("transferType", "InterRegion Outbound"), ("fromRegionCode", src), ("toRegionCode", dst))))
    return queries


def _decode(item: Any, query: PriceQuery) -> dict[str, Any]:
    try:
        product = json.loads(item) if isinstance(item, (str, bytes)) else item
    except json.JSONDecodeError as exc:
        raise RefreshError(f"{query.describe()}: a PriceList entry is not JSON: {exc.msg}") from None
    if not isinstance(product, dict) or not isinstance(product.get("product"), dict):
        raise RefreshError(f"{query.describe()}: a PriceList entry has no 'product' object")
    return product


def _select_products(products: list[dict[str, Any]], query: PriceQuery) -> dict[str, Any]:
    def attrs(p: dict[str, Any]) -> dict[str, Any]:
        return p["product"].get("attributes") or {}

    kept = products
    if query.usagetypes:
        kept = [p for p in kept if attrs(p).get("usagetype") in query.usagetypes]
    if query.prefer and kept:
        field, values = query.prefer
        present = [v for v in values if any(attrs(p).get(field) == v for p in kept)]
        if not present:
            seen = sorted({str(attrs(p).get(field)) for p in kept})
            raise RefreshError(f"{query.describe()}: no product has {field} in {list(values)} (saw {seen})")
        kept = [p for p in kept if attrs(p).get(field) == present[0]]
    if len(kept) == 1:
        return kept[0]
    if not kept:
        raise RefreshError(f"{query.describe()}: no product matched ({len(products)} returned before selection)")
    listed = "; ".join(f"{p['product'].get('sku')} usagetype={attrs(p).get('usagetype')}" for p in kept)
    raise RefreshError(f"{query.describe()}: {len(kept)} products matched, expected one: {listed}")


def parse_on_demand(product: dict[str, Any], query: PriceQuery) -> FetchedPrice:
    """The single OnDemand USD price of a product; ambiguity is an error, not a guess."""
    sku = str(product["product"].get("sku", "?"))
    terms = (product.get("terms") or {}).get("OnDemand") or {}
    dims: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (term, dim) for term in terms.values() for dim in (term.get("priceDimensions") or {}).values()]
    if query.begin_range is not None:
        dims = [(t, d) for t, d in dims if str(d.get("beginRange")) == query.begin_range]
    if len(dims) != 1:
        found = "; ".join(f"{d.get('rateCode')} beginRange={d.get('beginRange')} "
                          f"USD={(d.get('pricePerUnit') or {}).get('USD')} {d.get('description', '')!r}"
                          for _, d in dims) or "none"
        raise RefreshError(f"{query.describe()}: SKU {sku} has {len(dims)} matching OnDemand price "
                           f"dimensions, expected exactly one: {found}")
    term, dim = dims[0]
    raw = (dim.get("pricePerUnit") or {}).get("USD")
    try:
        usd = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise RefreshError(f"{query.describe()}: SKU {sku} has a non-numeric USD price {raw!r}") from None
    if not usd.is_finite() or usd < 0:
        raise RefreshError(f"{query.describe()}: SKU {sku} has an invalid USD price {raw!r}")
    unit = str(dim.get("unit") or "")
    if not unit:
        raise RefreshError(f"{query.describe()}: SKU {sku} price dimension has no unit")
    return FetchedPrice(usd=float(usd), unit=unit, sku=sku, effective_date=str(term.get("effectiveDate", "")),
                        description=str(dim.get("description", "")))


def fetch_price(client: Any, query: PriceQuery) -> FetchedPrice:
    """Ask the Price List API (every page) and reduce the answer to one price."""
    paginator = client.get_paginator("get_products")
    pages = paginator.paginate(ServiceCode=query.service_code, Filters=query.api_filters(), FormatVersion="aws_v1")
    products = [_decode(item, query) for page in pages for item in page.get("PriceList", [])]
    return parse_on_demand(_select_products(products, query), query)


def _set(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _get(data: dict[str, Any], path: Sequence[str]) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def refresh_data(existing: dict[str, Any], client: Any, regions: Sequence[str], today: dt.date,
                 kinds: Optional[set[str]] = None) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``existing`` with every AWS row re-priced; other rows untouched.

    Returns the new data and one line per changed row. All queries run before any error is
    raised, so one run reports every problem.
    """
    data = copy.deepcopy(existing)
    changes: list[str] = []
    errors: list[str] = []
    for query in aws_price_queries(regions):
        if kinds is not None and query.kind not in kinds:
            continue
        try:
            got = fetch_price(client, query)
        except RefreshError as exc:
            errors.append(str(exc))
            continue
        row = {"usd": got.usd, "unit": got.unit, "source": API_SOURCE_ID, "sku": got.sku}
        if got.effective_date:
            row["effective_date"] = got.effective_date
        if got.description:
            row["description"] = got.description
        old = _get(data, query.path)
        if not isinstance(old, dict) or old.get("usd") != got.usd:
            before = old.get("usd") if isinstance(old, dict) else None
            changes.append(f"{'.'.join(query.path)}: {before} -> {got.usd} {got.unit}")
        _set(data, query.path, row)
    if errors:
        raise RefreshError(f"{len(errors)} AWS price(s) could not be refreshed; nothing written:\n  "
                           + "\n  ".join(errors))
    sources = data.setdefault("sources", [])
    api = next((s for s in sources if s.get("id") == API_SOURCE_ID), None)
    if api is None:
        api = {"id": API_SOURCE_ID}
        sources.append(api)
    api.update(name="AWS Price List Query API (pricing:GetProducts, FormatVersion aws_v1, OnDemand terms)",
               url="https://api.pricing.us-east-1.amazonaws.com", retrieved=today.isoformat())
    api.pop("note", None)
    data["retrieved"] = today.isoformat()
    return data, changes


def refresh(path: Union[str, Path, None] = None, out: Union[str, Path, None] = None,
            regions: Sequence[str] = DEFAULT_REGIONS, dry_run: bool = False, client: Any = None,
            today: Optional[dt.date] = None, kinds: Optional[set[str]] = None) -> tuple[PriceBook, list[str]]:
    """Re-price the AWS rows of the book at ``path`` and write it to ``out`` (default: same file)."""
    book = PriceBook.load(path)
    if client is None:
        import boto3  # only the refresh needs AWS; loading and lookups stay offline

        client = boto3.client("pricing", region_name="us-east-1")
    data, changes = refresh_data(book.to_data(), client, regions, today or dt.date.today(), kinds)
    target = Path(out) if out is not None else book.path
    new = PriceBook.from_data(data, target)  # same model as load(): nothing invalid is written
    if not dry_run:
        new.write(target)
    return new, changes


def main(argv: Optional[Sequence[str]] = None, client: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies.pricing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("refresh", help="regenerate the AWS rows through the AWS Price List API")
    cmd.add_argument("--regions", default=",".join(DEFAULT_REGIONS), help="comma-separated region codes")
    cmd.add_argument("--in", dest="path", default=None, help="price book to start from (default: --out)")
    cmd.add_argument("--out", default=str(DEFAULT_PATH), help="file to write")
    cmd.add_argument("--dry-run", action="store_true", help="fetch and validate, print changes, write nothing")
    cmd.add_argument("--only", default=None, help="comma-separated row kinds to refresh (default: all)")
    args = parser.parse_args(argv)

    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    kinds = {k.strip() for k in args.only.split(",") if k.strip()} if args.only else None
    known = {q.kind for q in aws_price_queries(["us-east-1"])}
    if kinds and not kinds <= known:
        parser.error(f"unknown kind(s) {sorted(kinds - known)}; choose from {sorted(known)}")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        book, changes = refresh(args.path or args.out, args.out, regions, args.dry_run, client, kinds=kinds)
    except (PriceBookError, RefreshError, BotoCoreError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in changes:
        print(line)
    verb = "would write" if args.dry_run else "wrote"
    print(f"{verb} {book.path} ({len(changes)} changed row(s), retrieved {book.retrieved})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
