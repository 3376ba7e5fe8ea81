import copy
import datetime as dt
import json
import math
import sys
from decimal import Decimal
from pathlib import Path

import botocore.session
import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # lets a bare `pytest` (not only `python -m pytest`) import policies
    sys.path.insert(0, str(ROOT))

from policies import pricing  # noqa: E402
from policies.pricing import MissingPrice, PriceBook, PriceBookError  # noqa: E402
from policies.pricing.refresh import (  # noqa: E402
    API_SOURCE_ID,
    RDS_INSTANCE_CLASSES,
    PriceQuery,
    RefreshError,
    aws_price_queries,
    fetch_price,
    main,
    parse_on_demand,
)
from tests.price_books import distinct_prices, with_figures  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
RDS_CLASSES = RDS_INSTANCE_CLASSES


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


@pytest.fixture
def baseline() -> dict:
    return json.loads(pricing.DEFAULT_PATH.read_text())


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def pricing_client():
    session = botocore.session.get_session()
    return session.create_client("pricing", region_name="us-east-1",
                                 aws_access_key_id="testing", aws_secret_access_key="testing")


def expected_params(query: PriceQuery, token: str | None = None) -> dict:
    params = {"ServiceCode": query.service_code, "Filters": query.api_filters(), "FormatVersion": "aws_v1"}
    if token:
        params["NextToken"] = token
    return params


# --------------------------------------------------------------------------- the shipped book

def _required_lookups():
    for r in REGIONS:
        for cls in RDS_CLASSES:
            for multi in (False, True):
                yield "rds_instance_hourly", (r, cls, multi)
        for multi in (False, True):
            yield "rds_storage_gb_month", (r, "gp3", multi)
        yield "rds_backup_gb_month", (r,)
        for arch in ("x86_64", "arm64"):
            yield "fargate_vcpu_hour", (r, arch)
            yield "fargate_gb_hour", (r, arch)
            yield "lambda_gb_second", (r, arch)
        for name in ("nat_gateway_hourly", "nat_gateway_per_gb", "public_ipv4_hourly", "alb_hourly",
                     "alb_lcu_hour", "kms_key_month", "cloudwatch_alarm_month", "cloudwatch_logs_ingest_per_gb",
                     "secret_month", "tgw_attachment_hourly", "tgw_per_gb", "lambda_request"):
            yield name, (r,)
        for dst in REGIONS:
            if dst != r:
                yield "inter_region_per_gb", (r, dst)
    yield "route53_hosted_zone_month", ()
    yield "route53_health_check_month", ()
    yield "route53_health_check_month", ("non_aws",)
    for policy in ("failover", "latency", "geolocation", "weighted"):
        yield "route53_queries_per_million", (policy,)
    yield "arc_cluster_hourly", ()
    yield "budgets_month", (3,)
    yield "sns_email_month", (5000,)
    for plan in ("pro", "business", "enterprise"):
        yield "cloudflare_plan_month", (plan,)
    yield "cloudflare_workers", ()
    yield "cloudflare_load_balancing_month", (2,)


@pytest.mark.parametrize("method,args", list(_required_lookups()), ids=lambda v: str(v))
def test_shipped_book_prices_every_lookup_the_cost_model_needs(book, method, args):
    value = getattr(book, method)(*args)
    assert isinstance(value, float) and math.isfinite(value) and value > 0


def test_free_things_are_explicitly_zero_not_missing(book):
    for r in REGIONS:
        assert book.rds_performance_insights_month(r, retention_days=7) == 0.0
    assert book.cloudflare_plan_month("free") == 0.0
    assert book.cloudflare_rate_limiting_month() == 0.0
    sns, budgets = book.model.global_.sns, book.model.global_.budgets
    assert sns is not None and budgets is not None
    assert book.sns_email_month(sns.free_email_notifications) == 0.0
    assert book.sns_email_month(sns.free_email_notifications + 100_000) == pytest.approx(sns.email_per_100k.usd)
    assert book.budgets_month(budgets.free_budgets) == 0.0
    assert book.budgets_month(budgets.free_budgets + 1) > 0


@pytest.fixture(scope="module")
def distinct() -> tuple[PriceBook, dict]:
    return distinct_prices()


def _lookup_rows():
    """Each typed lookup and the JSON row it must read: the book's contract, written out by hand."""
    for r in REGIONS:
        for multi, dep in ((False, "single_az"), (True, "multi_az")):
            yield "rds_instance_hourly", (r, "db.r6g.large", multi), ("regions", r, "rds", "instances", "db.r6g.large", dep)
            yield "rds_storage_gb_month", (r, "gp3", multi), ("regions", r, "rds", "storage", "gp3", dep)
        yield "rds_backup_gb_month", (r,), ("regions", r, "rds", "backup_gb_month")
        for arch, key in (("x86_64", "x86"), ("arm64", "arm")):
            yield "fargate_vcpu_hour", (r, arch), ("regions", r, "fargate", key, "vcpu_hour")
            yield "fargate_gb_hour", (r, arch), ("regions", r, "fargate", key, "gb_hour")
            yield "lambda_gb_second", (r, arch), ("regions", r, "lambda", f"{key}_gb_second")
        for method, *row in (("nat_gateway_hourly", "nat_gateway", "hourly"), ("nat_gateway_per_gb", "nat_gateway", "per_gb"),
                             ("public_ipv4_hourly", "public_ipv4", "hourly"), ("alb_hourly", "alb", "hourly"),
                             ("alb_lcu_hour", "alb", "lcu_hour"), ("kms_key_month", "kms", "key_month"),
                             ("cloudwatch_alarm_month", "cloudwatch", "alarm_month"),
                             ("cloudwatch_logs_ingest_per_gb", "cloudwatch", "logs_ingest_per_gb"),
                             ("secret_month", "secrets_manager", "secret_month"),
                             ("tgw_attachment_hourly", "tgw", "attachment_hourly"), ("tgw_per_gb", "tgw", "per_gb"),
                             ("lambda_request", "lambda", "request")):
            yield method, (r,), ("regions", r, *row)
        for dst in REGIONS:
            if dst != r:
                yield "inter_region_per_gb", (r, dst), ("inter_region", r, dst)
    r53 = ("global", "route53")
    yield "route53_hosted_zone_month", (), (*r53, "hosted_zone", "first_25_month")
    yield "route53_health_check_month", ("aws",), (*r53, "health_check", "aws_endpoint_month")
    yield "route53_health_check_month", ("non_aws",), (*r53, "health_check", "non_aws_endpoint_month")
    for policy, tier in (("failover", "standard"), ("latency", "latency"), ("geolocation", "geo"), ("cidr", "ip_based")):
        yield "route53_queries_per_million", (policy,), (*r53, "queries", f"{tier}_per_million")
    yield "arc_cluster_hourly", (), ("global", "arc", "cluster_hourly")
    for plan in ("free", "pro", "business", "enterprise"):
        yield "cloudflare_plan_month", (plan,), ("cloudflare", "plans", plan)
    yield "cloudflare_rate_limiting_month", (), ("cloudflare", "rate_limiting_month")


@pytest.mark.parametrize("method,args,row", list(_lookup_rows()), ids=lambda v: str(v))
def test_each_lookup_reads_its_own_row(distinct, method, args, row):
    book, usd = distinct
    assert getattr(book, method)(*args) == usd[row]


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("cls", RDS_CLASSES)
def test_rds_multi_az_is_about_twice_single_az(book, region, cls):
    single = book.rds_instance_hourly(region, cls, multi_az=False)
    multi = book.rds_instance_hourly(region, cls, multi_az=True)
    assert multi / single == pytest.approx(2.0, rel=0.02)


def test_enterprise_is_the_seed_contract_figure(book):
    row = book.row("cloudflare_plan", "enterprise", "cloudflare", "plans", "enterprise")
    assert row.usd == 7500 and row.source == "seed-contract" and "contract" in row.note
    assert "7,500" in book.source("seed-contract").name


def test_cloudflare_usage_formulas(baseline):
    w, lb = ("cloudflare", "workers_paid"), ("cloudflare", "load_balancing")
    book = with_figures(baseline, {(*w, "base_month"): 5, (*w, "included_requests"): 10_000_000, (*w, "per_million_requests"): 0.3,
                            (*w, "included_cpu_ms"): 30_000_000, (*w, "per_million_cpu_ms"): 0.02,
                            (*lb, "base_month"): 5, (*lb, "included_origins"): 2, (*lb, "per_extra_origin_month"): 5,
                            (*lb, "included_health_check_regions"): 1, (*lb, "per_extra_health_check_region_month"): 10,
                            (*lb, "included_dns_queries"): 500_000, (*lb, "per_500k_dns_queries"): 0.5})
    assert book.cloudflare_workers() == 5.0
    assert book.cloudflare_workers(requests=50e6, cpu_ms=100e6) == pytest.approx(5 + 40 * 0.30 + 70 * 0.02)
    assert book.cloudflare_load_balancing_month(origins=2) == 5.0
    # 1 extra origin, 2 extra check regions, 1.5M extra queries = 3 blocks of 500k
    assert book.cloudflare_load_balancing_month(origins=3, health_check_regions=3, dns_queries=2e6) == \
        pytest.approx(5 + 5 + 2 * 10 + 3 * 0.50)


def test_route53_health_check_features_and_zone_tiers_add_up(baseline):
    hc, hz = ("global", "route53", "health_check"), ("global", "route53", "hosted_zone")
    book = with_figures(baseline, {(*hc, "aws_endpoint_month"): 0.5, (*hc, "optional_feature_aws_month"): 1.0,
                            (*hc, "non_aws_endpoint_month"): 0.75, (*hc, "optional_feature_non_aws_month"): 2.0,
                            (*hz, "first_25_month"): 0.5, (*hz, "beyond_25_month"): 0.1})
    assert book.route53_health_check_month("aws", https=True, string_matching=True, fast_interval=True) == \
        pytest.approx(0.50 + 3 * 1.00)
    assert book.route53_health_check_month("non_aws", latency_measurement=True) == pytest.approx(0.75 + 2.00)
    assert book.route53_hosted_zones_month(30) == pytest.approx(25 * 0.50 + 5 * 0.10)
    assert book.route53_hosted_zones_month(3) == pytest.approx(3 * 0.50)


def test_every_row_cites_a_dated_source_and_rows_not_from_aws_say_where_they_came_from(book):
    rows = dict(book.rows())
    assert len(rows) > 150
    for path, row in rows.items():
        assert book.source(row.source).retrieved is not None, path
        if path[0] == "regions" and path[1] != "us-east-1" and row.source != "aws-pricing-evidence":
            if rows[("regions", "us-east-1", *path[2:])].usd == row.usd:
                assert row.note, f"{'.'.join(path)} repeats the us-east-1 price without saying so"


def test_missing_prices_raise_missing_price_never_zero(book):
    with pytest.raises(MissingPrice) as exc:
        book.rds_instance_hourly("us-east-1", "db.x9.huge", multi_az=True)
    assert exc.value.kind == "rds_instance" and "db.x9.huge" in exc.value.key
    for call in (lambda: book.nat_gateway_hourly("ap-south-1"),
                 lambda: book.rds_storage_gb_month("us-east-1", "io2"),
                 lambda: book.rds_performance_insights_month("us-east-1", retention_days=731),
                 lambda: book.fargate_vcpu_hour("us-east-1", "riscv"),
                 lambda: book.inter_region_per_gb("us-east-1", "us-east-1"),
                 lambda: book.route53_queries_per_million("telepathic"),
                 lambda: book.cloudflare_plan_month("platinum")):
        with pytest.raises(MissingPrice):
            call()


def test_a_region_without_a_section_is_missing_only_for_that_section(baseline):
    del baseline["regions"]["us-west-2"]["tgw"]
    partial = PriceBook.from_data(baseline)
    with pytest.raises(MissingPrice) as exc:
        partial.tgw_attachment_hourly("us-west-2")
    assert exc.value.kind == "tgw" and exc.value.key == "us-west-2/attachment"
    assert partial.tgw_attachment_hourly("us-east-1") == baseline["regions"]["us-east-1"]["tgw"]["attachment_hourly"]["usd"]


def test_shipped_file_is_in_canonical_form(book):
    assert pricing.DEFAULT_PATH.read_text() == book.dumps()


# --------------------------------------------------------------------------- malformed files

def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(PriceBookError) as exc:
        PriceBook.load(path)
    message = str(exc.value)
    assert str(path) in message
    assert "\n" not in message and "pydantic" not in message and "validation error" not in message.lower()
    return message


def test_baseline_copy_loads(tmp_path, baseline):
    assert PriceBook.load(_write(tmp_path, baseline)) == PriceBook.load()


def test_bad_json_names_file_and_position(tmp_path):
    text = pricing.DEFAULT_PATH.read_text().replace('"currency": "USD",', '"currency": "USD",,', 1)
    message = _load_error(_write(tmp_path, text))
    assert "not valid JSON at line" in message


def test_missing_retrieved_is_named(tmp_path, baseline):
    del baseline["retrieved"]
    message = _load_error(_write(tmp_path, baseline))
    assert ": retrieved: missing required key" in message


def test_unparseable_retrieved_date(tmp_path, baseline):
    baseline["retrieved"] = "last Tuesday"
    assert "retrieved: expected a date written YYYY-MM-DD" in _load_error(_write(tmp_path, baseline))


def test_negative_price_is_named_by_json_path(tmp_path, baseline):
    baseline["regions"]["us-west-2"]["rds"]["instances"]["db.r6g.large"]["multi_az"]["usd"] = -0.45
    message = _load_error(_write(tmp_path, baseline))
    assert "regions.us-west-2.rds.instances.db.r6g.large.multi_az.usd: expected a number >= 0 (got -0.45)" \
        in message


def test_string_price_is_rejected_not_coerced(tmp_path, baseline):
    baseline["regions"]["us-west-2"]["rds"]["instances"]["db.r6g.large"]["multi_az"]["usd"] = "0.45"
    message = _load_error(_write(tmp_path, baseline))
    assert 'regions.us-west-2.rds.instances.db.r6g.large.multi_az.usd: expected a number (got "0.45")' in message


def test_nan_price_is_rejected(tmp_path, baseline):
    baseline["regions"]["us-east-1"]["fargate"]["x86"]["vcpu_hour"]["usd"] = math.nan  # json.dumps writes NaN
    message = _load_error(_write(tmp_path, baseline))
    assert "regions.us-east-1.fargate.x86.vcpu_hour.usd: expected a finite number" in message


def test_row_without_unit_is_named(tmp_path, baseline):
    del baseline["regions"]["eu-west-1"]["alb"]["hourly"]["unit"]
    message = _load_error(_write(tmp_path, baseline))
    assert "regions.eu-west-1.alb.hourly.unit: missing required key" in message


def test_unknown_region_format_is_named(tmp_path, baseline):
    baseline["regions"]["US East"] = baseline["regions"]["us-east-1"]
    message = _load_error(_write(tmp_path, baseline))
    assert "regions.US East: region keys must be AWS region codes such as us-east-1" in message


def test_misspelt_key_lists_the_valid_ones(tmp_path, baseline):
    baseline["regions"]["us-east-1"]["nat_gateway"]["hourley"] = baseline["regions"]["us-east-1"]["nat_gateway"].pop(
        "hourly")
    message = _load_error(_write(tmp_path, baseline))
    assert "regions.us-east-1.nat_gateway.hourley: unknown key; did you mean 'hourly'?" in message
    assert "hourly, per_gb" in message and message.endswith("[and 1 more problem]")


def test_undeclared_source_is_named(tmp_path, baseline):
    baseline["cloudflare"]["plans"]["pro"]["source"] = "a-blog"
    message = _load_error(_write(tmp_path, baseline))
    assert "cloudflare.plans.pro.source: unknown source 'a-blog'" in message


def test_a_price_may_not_cite_an_undated_source(tmp_path, baseline):
    baseline["cloudflare"]["plans"]["pro"]["source"] = API_SOURCE_ID
    message = _load_error(_write(tmp_path, baseline))
    assert f"cloudflare.plans.pro.source: source '{API_SOURCE_ID}' has no retrieved date" in message


def test_unreadable_file(tmp_path):
    assert "cannot read price book" in _load_error(tmp_path / "absent.json")


# --------------------------------------------------------------------------- refresh

NAT_HOURS, NAT_BYTES, REGIONAL_NAT = fixture("nat_gateway_us-east-1.json")


def _nat_queries():
    queries = [q for q in aws_price_queries(["us-east-1"]) if q.kind == "nat_gateway"]
    assert [q.path[-1] for q in queries] == ["hourly", "per_gb"]
    return queries


def _stub_nat(stubber: Stubber, per_gb_answer=(NAT_HOURS, NAT_BYTES, REGIONAL_NAT)):
    hourly, per_gb = _nat_queries()
    # first answer spans two pages, the product we want on the second
    stubber.add_response("get_products", {"FormatVersion": "aws_v1", "NextToken": "page-2",
                                          "PriceList": [json.dumps(REGIONAL_NAT), json.dumps(NAT_BYTES)]},
                         expected_params(hourly))
    stubber.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [json.dumps(NAT_HOURS)]},
                         expected_params(hourly, token="page-2"))
    stubber.add_response("get_products", {"FormatVersion": "aws_v1",
                                          "PriceList": [json.dumps(p) for p in per_gb_answer]},
                         expected_params(per_gb))


def test_nat_query_sends_the_exact_filters():
    hourly, _ = _nat_queries()
    assert expected_params(hourly) == {
        "ServiceCode": "AmazonEC2",
        "Filters": [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"},
                    {"Type": "TERM_MATCH", "Field": "productFamily", "Value": "NAT Gateway"}],
        "FormatVersion": "aws_v1",
    }


def test_refresh_command_writes_parsed_prices_and_keeps_other_rows(tmp_path, baseline, capsys):
    out = _write(tmp_path, baseline)
    client = pricing_client()
    with Stubber(client) as stubber:
        _stub_nat(stubber)
        code = main(["refresh", "--regions", "us-east-1", "--only", "nat_gateway", "--out", str(out)],
                            client=client)
        stubber.assert_no_pending_responses()
    assert code == 0, capsys.readouterr().err

    text = out.read_text()
    written = json.loads(text)
    assert text == pricing.dumps(written) and text.endswith("}\n") and '\n  "cloudflare": {\n    "' in text
    nat = written["regions"]["us-east-1"]["nat_gateway"]
    assert nat["hourly"] == {"usd": 0.045, "unit": "Hrs", "source": API_SOURCE_ID, "sku": "M2YSHUBETB3JX4M4",
                             "effective_date": "2026-09-01T00:00:00Z",
                             "description": "$0.045 per NAT Gateway Hour"}
    assert nat["per_gb"]["sku"] == "59S5R83GFPUAGVR5" and nat["per_gb"]["unit"] == "GB"
    today = dt.date.today().isoformat()
    assert written["retrieved"] == today
    api = next(s for s in written["sources"] if s["id"] == API_SOURCE_ID)
    assert api["retrieved"] == today

    # everything the refresh did not price is byte-for-byte what it was
    assert written["cloudflare"] == baseline["cloudflare"]
    assert written["global"] == baseline["global"]
    expected = copy.deepcopy(baseline)
    expected["regions"]["us-east-1"]["nat_gateway"] = nat
    expected["retrieved"] = today
    expected["sources"] = written["sources"]
    assert written == expected
    assert [s for s in written["sources"] if s["id"] != API_SOURCE_ID] == \
        [s for s in baseline["sources"] if s["id"] != API_SOURCE_ID]
    assert PriceBook.load(out).nat_gateway_hourly("us-east-1") == 0.045


def test_refresh_rds_row_across_an_empty_first_page():
    query = next(q for q in aws_price_queries(["us-east-1"])
                 if q.path == ("regions", "us-east-1", "rds", "instances", "db.r6g.large", "multi_az"))
    assert dict(query.filters) == {"regionCode": "us-east-1", "productFamily": "Database Instance",
                                   "locationType": "AWS Region", "databaseEngine": "PostgreSQL",
                                   "instanceType": "db.r6g.large", "deploymentOption": "Multi-AZ"}
    client = pricing_client()
    with Stubber(client) as stubber:
        stubber.add_response("get_products", {"FormatVersion": "aws_v1", "NextToken": "t1", "PriceList": []},
                             expected_params(query))
        stubber.add_response("get_products", {"FormatVersion": "aws_v1",
                                              "PriceList": [json.dumps(fixture(
                                                  "rds_postgresql_db.r6g.large_multi_az_us-east-1.json"))]},
                             expected_params(query, token="t1"))
        got = fetch_price(client, query)
        stubber.assert_no_pending_responses()
    assert (got.usd, got.unit, got.sku) == (0.452, "Hrs", "EXAMPLERDS6GMAZ1")  # Reserved terms ignored


def test_ambiguous_product_with_two_dimensions_is_an_error_naming_the_filters():
    product = fixture("rds_postgresql_db.r6g.large_multi_az_us-east-1.json")
    term = product["terms"]["OnDemand"]["EXAMPLERDS6GMAZ1.JRTCKXETXF"]
    dims = term["priceDimensions"]
    second = dict(dims["EXAMPLERDS6GMAZ1.JRTCKXETXF.6YS6EN2CT7"], rateCode="EXAMPLERDS6GMAZ1.JRTCKXETXF.8EEUB22XNJ",
                  pricePerUnit={"USD": "0.4700000000"}, description="a second on-demand rate")
    dims[second["rateCode"]] = second
    query = next(q for q in aws_price_queries(["us-east-1"])
                 if q.path[-2:] == ("db.r6g.large", "multi_az"))
    client = pricing_client()
    with Stubber(client) as stubber:
        stubber.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [json.dumps(product)]},
                             expected_params(query))
        with pytest.raises(RefreshError) as exc:
            fetch_price(client, query)
        stubber.assert_no_pending_responses()
    message = str(exc.value)
    assert "instanceType=db.r6g.large" in message and "deploymentOption=Multi-AZ" in message
    assert "2 matching OnDemand price dimensions, expected exactly one" in message
    assert "0.4520000000" in message and "0.4700000000" in message


def test_a_failed_refresh_writes_nothing_and_exits_nonzero(tmp_path, baseline, capsys):
    out = _write(tmp_path, baseline)
    before = out.read_text()
    twin = dict(NAT_BYTES, product=dict(NAT_BYTES["product"], sku="SECONDBYTESSKU00"))
    client = pricing_client()
    with Stubber(client) as stubber:
        _stub_nat(stubber, per_gb_answer=(NAT_BYTES, twin))
        code = main(["refresh", "--regions", "us-east-1", "--only", "nat_gateway", "--out", str(out)],
                            client=client)
        stubber.assert_no_pending_responses()
    assert code == 1
    err = capsys.readouterr().err
    assert "2 products matched, expected one" in err and "productFamily=NAT Gateway" in err
    assert "usagetype in ['NatGateway-Bytes', 'USE1-NatGateway-Bytes']" in err
    assert out.read_text() == before


def test_dry_run_reports_changes_without_writing(tmp_path, baseline, capsys):
    baseline["regions"]["us-east-1"]["nat_gateway"]["hourly"]["usd"] = 0.05
    out = _write(tmp_path, baseline)
    before = out.read_text()
    client = pricing_client()
    with Stubber(client) as stubber:
        _stub_nat(stubber)
        assert main(["refresh", "--regions", "us-east-1", "--only", "nat_gateway", "--out", str(out),
                             "--dry-run"], client=client) == 0
        stubber.assert_no_pending_responses()
    stdout = capsys.readouterr().out
    assert "regions.us-east-1.nat_gateway.hourly: 0.05 -> 0.045 Hrs" in stdout and "would write" in stdout
    assert out.read_text() == before


def test_tiered_price_takes_the_named_tier_and_is_ambiguous_without_it():
    product = fixture("lambda_duration_tiered_us-east-1.json")
    query = next(q for q in aws_price_queries(["us-east-1"]) if q.path[-1] == "x86_gb_second")
    assert query.begin_range == "0"
    assert parse_on_demand(product, query).usd == 0.0000166667
    untiered = PriceQuery(query.kind, query.path, query.service_code, query.filters, query.usagetypes)
    with pytest.raises(RefreshError, match="3 matching OnDemand price dimensions"):
        parse_on_demand(product, untiered)


def test_refresh_replaces_only_rows_the_book_already_has(book):
    queries = aws_price_queries(REGIONS)
    paths = [q.path for q in queries]
    assert len(paths) == len(set(paths))
    for q in queries:
        book.row(q.kind, "/".join(q.path), *q.path)


def test_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["refresh", "--only", "nat_gatway"])
    assert "unknown kind" in capsys.readouterr().err


# --------------------------------------------------------------------------- properties

_ROWS = [path for path, _ in PriceBook.load().rows()]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_ROWS),
                          st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)),
                max_size=8))
def test_writer_round_trips(tmp_path_factory, edits):
    data = PriceBook.load().to_data()
    for path, usd in edits:
        node = data
        for part in path:
            node = node[part]
        node["usd"] = usd
    original = PriceBook.from_data(data)
    path = tmp_path_factory.mktemp("rt") / "prices.json"
    original.write(path)
    again = PriceBook.load(path)
    assert again == original
    assert path.read_text() == again.dumps()


_QUERY = PriceQuery("nat_gateway", ("regions", "us-east-1", "nat_gateway", "hourly"), "AmazonEC2",
                    (("regionCode", "us-east-1"),))


def _with_price(usd: str) -> dict:
    product = copy.deepcopy(NAT_HOURS)
    (term,) = product["terms"]["OnDemand"].values()
    (dim,) = term["priceDimensions"].values()
    dim["pricePerUnit"]["USD"] = usd
    return product


@given(st.decimals(min_value=0, max_value=Decimal("1e6"), places=10, allow_nan=False, allow_infinity=False))
def test_parsed_prices_match_the_decimal_and_are_never_negative(value):
    got = parse_on_demand(_with_price(f"{value:.10f}"), _QUERY)
    assert got.usd >= 0 and got.usd == float(value)


@given(st.one_of(
    st.decimals(max_value=Decimal("-1e-10"), allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["", "NaN", "Infinity", "-Infinity", "0.04.5", "USD 0.045", "None"])))
def test_negative_or_garbage_prices_are_refused(raw):
    with pytest.raises(RefreshError):
        parse_on_demand(_with_price(raw), _QUERY)
