"""Regenerate the AWS rows of the price book from the AWS Price List API.

    python -m policies.pricing refresh [--regions us-east-1,us-west-2,eu-west-1]
                                       [--out policies/prices.json] [--dry-run]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from policies.pricing.book import DEFAULT_PATH, PriceBook
from policies.pricing.schema import PriceBookError

DEFAULT_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
API_SOURCE_ID = "aws-price-list-api"

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



class RefreshError(RuntimeError):
    """The Price List API answer cannot be turned into one unambiguous price."""



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
