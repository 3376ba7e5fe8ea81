"""The price book's file format: pydantic models of ``policies/prices.json``, the validation that
reports the first problem on one line (``core.problems``: the JSON path, what is wrong, a fix), and
the one on-disk form."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import ErrorDetails

from core.problems import key_path, pydantic_problems

REGION_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]+$"


class PriceBookError(ValueError):
    """The price book file is unreadable or does not match the schema."""


def _region_code(key: str) -> str:
    if not re.match(REGION_PATTERN, key):
        raise ValueError("region keys must be AWS region codes such as us-east-1")
    return key



Usd = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
Text = Annotated[str, StringConstraints(min_length=1)]
RegionCode = Annotated[str, AfterValidator(_region_code)]
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


class CloudWatchGlobal(_Model):
    dashboard_month: Price


class GlobalPrices(_Model):
    route53: Optional[Route53] = None
    arc: Optional[Arc] = None
    budgets: Optional[Budgets] = None
    sns: Optional[Sns] = None
    cloudwatch: Optional[CloudWatchGlobal] = None


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

def _error_message(file: Path, errors: list[ErrorDetails]) -> str:
    """The first problem (an unknown key first: it usually explains a missing sibling, a typo), on one line."""
    errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    key, text = pydantic_problems(errors[:1], PriceBookModel)[0]
    more = len(errors) - 1
    tail = f" [and {more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{file}: {key}: {text}{tail}"


def iter_prices(node: Any, loc: tuple[Any, ...] = ()) -> Iterable[tuple[tuple[Any, ...], Price]]:
    if isinstance(node, Price):
        yield loc, node
    elif isinstance(node, BaseModel):
        for name, field in type(node).model_fields.items():
            yield from iter_prices(getattr(node, name), loc + (field.alias or name,))
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from iter_prices(value, loc + (key,))


def _check_sources(file: Path, model: PriceBookModel) -> None:
    dated = {s.id for s in model.sources if s.retrieved is not None}
    known = {s.id for s in model.sources}
    if len(known) != len(model.sources):
        raise PriceBookError(f"{file}: sources: source ids must be unique")
    for loc, price in iter_prices(model):
        if price.source not in known:
            raise PriceBookError(
                f"{file}: {key_path(loc + ('source',))}: unknown source {price.source!r}; "
                f"expected one of: {', '.join(sorted(known))}")
        if price.source not in dated:
            raise PriceBookError(
                f"{file}: {key_path(loc + ('source',))}: source {price.source!r} has no retrieved date; "
                "a price must cite a dated source")


def validate(file: Path, data: Any) -> PriceBookModel:
    try:
        model = PriceBookModel.model_validate(data)
    except ValidationError as exc:
        raise PriceBookError(_error_message(file, exc.errors())) from None
    _check_sources(file, model)
    return model


def dumps(data: dict[str, Any]) -> str:
    """The one on-disk form: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
