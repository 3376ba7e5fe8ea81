"""The cost model: each resource costs the price-book rows it should use times the quantities its
properties declare. Most checks run on a book whose every row has its own price, so reading a
neighbouring row (the other deployment, region or architecture) cannot go unnoticed, and no price
refresh changes what they expect."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.cost import CostResource, Usage, estimate
from policies.pricing import PriceBook
from tests.price_books import distinct_prices

E1, W2 = "us-east-1", "us-west-2"
RDS = "aws:rds/instance:Instance"


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


@pytest.fixture
def distinct() -> tuple[PriceBook, dict]:
    return distinct_prices()


def res(typ, name, region=E1, component="test", **props) -> CostResource:
    return CostResource(f"urn:{name}", typ, name, region, component, props)


def small_stack():
    task = res("aws:ecs/taskDefinition:TaskDefinition", "task", cpu="512", memory="1024")
    svc = res("aws:ecs/service:Service", "svc", desiredCount=3)
    svc.deps = {"taskDefinition": [task]}
    primary = res(RDS, "db", instanceClass="db.m6g.large", multiAz=True,
                  allocatedStorage=100, storageType="gp3", manageMasterUserPassword=True)
    replica = res(RDS, "replica", region=W2, instanceClass="db.m6g.large",
                  multiAz=False, replicateSourceDb="arn:db")
    replica.deps = {"replicateSourceDb": [primary]}
    return [
        task, svc, primary, replica,
        res("aws:ec2/natGateway:NatGateway", "nat"),
        res("aws:lb/loadBalancer:LoadBalancer", "alb", internal=False, subnets=["a", "b"]),
        res("aws:cloudwatch/metricAlarm:MetricAlarm", "alarm", region=W2),
        res("aws:ec2/vpc:Vpc", "vpc"),
        res("aws:opensearch/domain:Domain", "mystery"),
    ]


def line(report, item):
    return next(l for l in report.lines if l.item == item)


@pytest.mark.parametrize("platform,arch", [(None, "x86"), ({"cpuArchitecture": "ARM64"}, "arm")])
def test_fargate_is_tasks_times_the_task_size_at_its_architecture(distinct, platform, arch):
    book, usd = distinct
    task = res("aws:ecs/taskDefinition:TaskDefinition", "task", cpu="2048", memory="3072",
               **({"runtimePlatform": platform} if platform else {}))
    svc = res("aws:ecs/service:Service", "svc", region=W2, desiredCount=4)
    svc.deps = {"taskDefinition": [task]}
    row = ("regions", W2, "fargate", arch)
    per_task = 2 * usd[(*row, "vcpu_hour")] + 3 * usd[(*row, "gb_hour")]  # 2048/1024 vCPU, 3072/1024 GB
    got = line(estimate([task, svc], book, Usage()), "svc").monthly_usd
    assert got == pytest.approx(4 * per_task * book.hours_per_month, abs=0.01)


@pytest.mark.parametrize("multi,dep", [(True, "multi_az"), (False, "single_az")])
def test_rds_uses_the_rows_of_its_deployment_and_region(distinct, multi, dep):
    book, usd = distinct
    db = res(RDS, "db", region=W2, instanceClass="db.r6g.large", multiAz=multi, allocatedStorage=250, storageType="gp3")
    rds = ("regions", W2, "rds")
    expected = usd[(*rds, "instances", "db.r6g.large", dep)] * book.hours_per_month + 250 * usd[(*rds, "storage", "gp3", dep)]
    assert line(estimate([db], book, Usage()), "db").monthly_usd == pytest.approx(expected, abs=0.01)


def test_multi_az_doubles_an_instance(book):
    def monthly(multi: bool) -> float:
        db = res(RDS, "db", instanceClass="db.r6g.large", multiAz=multi, allocatedStorage=100, storageType="gp3")
        return line(estimate([db], book, Usage()), "db").monthly_usd

    assert monthly(True) == pytest.approx(2 * monthly(False), rel=0.02)


def test_a_replica_is_billed_for_its_source_storage_and_the_managed_secret_on_top(distinct):
    book, usd = distinct
    report = estimate(small_stack(), book, Usage())
    rds = ("regions", W2, "rds")
    assert line(report, "replica").monthly_usd == pytest.approx(
        usd[(*rds, "instances", "db.m6g.large", "single_az")] * book.hours_per_month
        + 100 * usd[(*rds, "storage", "gp3", "single_az")], abs=0.01)
    plain = res(RDS, "db", instanceClass="db.m6g.large", multiAz=True, allocatedStorage=100, storageType="gp3")
    assert line(report, "db").monthly_usd - line(estimate([plain], book, Usage()), "db").monthly_usd == \
        pytest.approx(usd[("regions", E1, "secrets_manager", "secret_month")], abs=0.01)


def test_small_stack_by_hand(book):
    usage = Usage(inter_region_gb_month=100, nat_gb_month=200, alb_lcu=2)
    report = estimate(small_stack(), book, usage, regions=[E1, W2])
    h = book.hours_per_month
    db = book.rds_instance_hourly(E1, "db.m6g.large", True) * h + 100 * book.rds_storage_gb_month(E1, "gp3", True) + book.secret_month(E1)
    # The replica inherits the primary's 100 GB; it is Single-AZ.
    replica = book.rds_instance_hourly(W2, "db.m6g.large", False) * h + 100 * book.rds_storage_gb_month(W2, "gp3", False)
    nat = book.nat_gateway_hourly(E1) * h + 200 * book.nat_gateway_per_gb(E1)
    alb = (book.alb_hourly(E1) + 2 * book.alb_lcu_hour(E1) + 2 * book.public_ipv4_hourly(E1)) * h
    fargate = 3 * (0.5 * book.fargate_vcpu_hour(E1, "x86_64") + 1 * book.fargate_gb_hour(E1, "x86_64")) * h
    transfer = 100 * book.inter_region_per_gb(E1, W2) + 100 * book.inter_region_per_gb(W2, E1)
    alarm = book.cloudwatch_alarm_month(W2)
    assert report.total == pytest.approx(db + replica + nat + alb + fargate + transfer + alarm, abs=0.05)


def test_unknown_types_are_unpriced_and_left_out_of_the_total(book):
    report = estimate(small_stack(), book, Usage())
    assert [(l.item, l.monthly_usd) for l in report.unpriced] == [("mystery", None)]
    assert "UNPRICED" in report.render() and "mystery" in report.render()
    assert line(report, "vpc").status == "free"


def test_a_missing_price_is_unpriced_with_the_reason_never_zero(book):
    odd = res(RDS, "odd", instanceClass="db.x99.huge", allocatedStorage=20)
    stack = small_stack()
    report = estimate([*stack, odd], book, Usage())
    got = line(report, "odd")
    assert got.status == "unpriced" and got.monthly_usd is None and "db.x99.huge" in got.basis
    assert report.total == estimate(stack, book, Usage()).total
    assert "UNPRICED" in report.render() and "odd (aws:rds/instance:Instance)" in report.render()


def test_hub_and_spoke_adds_transit_gateway_processing(distinct):
    book, usd = distinct
    regions = [E1, "eu-west-1"]
    mesh = estimate([], book, Usage(inter_region_gb_month=1000), regions=regions)
    hub = estimate([], book, Usage(inter_region_gb_month=1000), regions=regions, topology="hub-and-spoke")
    extra = 1000 * sum(usd[("regions", r, "tgw", "per_gb")] for r in regions)
    assert hub.total - mesh.total == pytest.approx(extra, abs=0.01)


@settings(max_examples=40, deadline=None)
@given(keep=st.lists(st.booleans(), min_size=9, max_size=9), gb=st.floats(0, 5000), nat=st.floats(0, 5000),
       lcu=st.floats(0, 50), logs=st.floats(0, 500))
def test_the_total_is_what_each_resource_and_usage_costs_on_its_own(keep, gb, nat, lcu, logs):
    """The total of any part of the stack is the sum of what each resource costs alone (with what it
    depends on) plus the usage lines, and the rendered groups add up to it: nothing is counted twice or
    priced from a neighbour. (The stack has one NAT gateway, which takes all of nat_gb_month.)"""
    book, _ = distinct_prices()
    usage = Usage(inter_region_gb_month=gb, nat_gb_month=nat, alb_lcu=lcu, log_gb_month=logs)
    stack = [r for r, k in zip(small_stack(), keep) if k]
    regions = [E1, W2]
    report = estimate(stack, book, usage, regions=regions)
    alone = sum(estimate([r, *r.deps.get("taskDefinition", [])] if r.deps else [r], book, usage, regions=[]).total
                for r in stack if r.type != "aws:ecs/taskDefinition:TaskDefinition")
    usage_only = estimate([], book, usage, regions=regions).total
    assert report.total == pytest.approx(alone + usage_only, abs=0.05)
    assert sum(report.by_region_component().values()) == pytest.approx(report.total, abs=0.01)


# --- the table the plan prints (issue 22, item 4) ---------------------------------------------------


def test_every_row_says_what_it_is_and_why_it_costs_that(distinct):
    """Each row carries its basis: the price-book figures and the declared quantities that make its
    amount, e.g. the primary as "db.m6g.large Multi-AZ <hourly>/h x 730 h + 100 GB gp3 x <per GB>/GB"."""
    book, usd = distinct
    usage = Usage(inter_region_gb_month=10, nat_gb_month=20, log_gb_month=5)
    report = estimate(small_stack(), book, usage, regions=[E1, W2], budget_usd=5000)
    rows = {item: (amount, why) for _, item, amount, why in report.rows()}
    rds = ("regions", E1, "rds")
    hourly, per_gb = usd[(*rds, "instances", "db.m6g.large", "multi_az")], usd[(*rds, "storage", "gp3", "multi_az")]
    amount, why = rows["db"]
    assert why.startswith("RDS PostgreSQL instance: ")
    assert f"db.m6g.large Multi-AZ {hourly}/h x 730 h + 100 GB gp3 x {per_gb}/GB" in why
    assert amount == pytest.approx(hourly * 730 + 100 * per_gb + usd[("regions", E1, "secrets_manager", "secret_month")], abs=0.01)
    assert "usage.inter_region_gb_month" in rows[f"transfer {E1}->{W2}"][1] and "10 GB a month" in rows[f"transfer {E1}->{W2}"][1]
    assert sum(amount for amount, _ in rows.values()) == pytest.approx(report.total, abs=0.05)
    text = report.render()
    for _, item, _, why in report.rows():
        assert any(item in l and why in l for l in text.splitlines()), item
    assert f"estimate {report.total:,.2f} of the 5,000.00 budget" in text


def test_identical_lines_of_a_region_are_one_row_with_their_count(distinct):
    book, usd = distinct
    alarms = [res("aws:cloudwatch/metricAlarm:MetricAlarm", f"fraiseql-quorum-{x}-us-east-1") for x in ("fenced", "agent-down", "slots-lost")]
    report = estimate(alarms, book, Usage(), regions=[E1])
    ((region, item, amount, why),) = report.rows()
    assert item == "3 x fraiseql-quorum-*" and why.startswith("3 x CloudWatch alarm: ")
    assert amount == pytest.approx(3 * usd[("regions", E1, "cloudwatch", "alarm_month")], abs=0.02)  # each line is rounded to cents


def test_a_region_pair_the_book_lacks_is_unpriced_not_a_crash(distinct):
    book, _ = distinct
    report = estimate([], book, Usage(inter_region_gb_month=100), regions=[E1, "us-east-2"])
    assert {l.status for l in report.lines} == {"unpriced"} and report.total == 0 and "UNPRICED" in report.render()
