"""The cost model against figures computed by hand for a small stack."""

from __future__ import annotations

import pytest

from policies.cost import CostResource, Usage, estimate
from policies.pricing import PriceBook

H = 730


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


def res(typ, name, region="us-east-1", component="test", **props) -> CostResource:
    return CostResource(f"urn:{name}", typ, name, region, component, props)


def small_stack():
    task = res("aws:ecs/taskDefinition:TaskDefinition", "task", cpu="512", memory="1024")
    svc = res("aws:ecs/service:Service", "svc", desiredCount=3)
    svc.deps = {"taskDefinition": [task]}
    primary = res("aws:rds/instance:Instance", "db", instanceClass="db.m6g.large", multiAz=True,
                  allocatedStorage=100, storageType="gp3", manageMasterUserPassword=True)
    replica = res("aws:rds/instance:Instance", "replica", region="us-west-2", instanceClass="db.m6g.large",
                  multiAz=False, replicateSourceDb="arn:db")
    replica.deps = {"replicateSourceDb": [primary]}
    return [
        task, svc, primary, replica,
        res("aws:ec2/natGateway:NatGateway", "nat"),
        res("aws:lb/loadBalancer:LoadBalancer", "alb", internal=False, subnets=["a", "b"]),
        res("aws:cloudwatch/metricAlarm:MetricAlarm", "alarm", region="us-west-2"),
        res("aws:ec2/vpc:Vpc", "vpc"),
        res("aws:opensearch/domain:Domain", "mystery"),
    ]


def test_fargate_at_the_reference_prices(book):
    report = estimate(small_stack(), book, Usage())
    line = next(l for l in report.lines if l.item == "svc")
    # 3 tasks x (0.5 vCPU x $0.04048 + 1 GB x $0.004445) x 730 h
    assert line.monthly_usd == pytest.approx(3 * (0.5 * 0.04048 + 1 * 0.004445) * H, abs=0.01)
    assert line.monthly_usd == pytest.approx(54.06, abs=0.01)


def test_small_stack_by_hand(book):
    usage = Usage(inter_region_gb_month=100, nat_gb_month=200, alb_lcu=2)
    report = estimate(small_stack(), book, usage, regions=["us-east-1", "us-west-2"])
    e1, w2 = "us-east-1", "us-west-2"
    db = book.rds_instance_hourly(e1, "db.m6g.large", True) * H + 100 * book.rds_storage_gb_month(e1, "gp3", True) + book.secret_month(e1)
    # The replica inherits the primary's 100 GB; it is Single-AZ.
    replica = book.rds_instance_hourly(w2, "db.m6g.large", False) * H + 100 * book.rds_storage_gb_month(w2, "gp3", False)
    nat = book.nat_gateway_hourly(e1) * H + 200 * book.nat_gateway_per_gb(e1)
    alb = (book.alb_hourly(e1) + 2 * book.alb_lcu_hour(e1) + 2 * book.public_ipv4_hourly(e1)) * H
    fargate = 3 * (0.5 * book.fargate_vcpu_hour(e1, "x86_64") + 1 * book.fargate_gb_hour(e1, "x86_64")) * H
    transfer = 100 * book.inter_region_per_gb(e1, w2) + 100 * book.inter_region_per_gb(w2, e1)
    alarm = book.cloudwatch_alarm_month(w2)
    expected = db + replica + nat + alb + fargate + transfer + alarm
    assert report.total == pytest.approx(expected, abs=0.05)
    # and the same total written out with the shipped numbers, as a reviewer would check it
    assert report.total == pytest.approx(
        (0.318 * H + 100 * 0.23 + 0.40) + (0.159 * H + 100 * 0.115) + (0.045 * H + 200 * 0.045)
        + (0.0225 + 2 * 0.008 + 2 * 0.005) * H + 54.06 + 200 * 0.02 + 0.10,
        abs=0.05,
    )


def test_unknown_types_are_unpriced_and_left_out_of_the_total(book):
    report = estimate(small_stack(), book, Usage())
    assert [(l.item, l.monthly_usd) for l in report.unpriced] == [("mystery", None)]
    assert "UNPRICED" in report.render() and "mystery" in report.render()
    assert next(l for l in report.lines if l.item == "vpc").status == "free"


def test_missing_price_for_a_known_type_is_unpriced_with_the_reason(book):
    odd = res("aws:rds/instance:Instance", "odd", instanceClass="db.x99.huge", allocatedStorage=20)
    line = estimate([odd], book, Usage()).lines[0]
    assert line.status == "unpriced" and "db.x99.huge" in line.basis


def test_hub_and_spoke_adds_transit_gateway_processing(book):
    mesh = estimate([], book, Usage(inter_region_gb_month=1000), regions=["us-east-1", "eu-west-1"])
    hub = estimate([], book, Usage(inter_region_gb_month=1000), regions=["us-east-1", "eu-west-1"], topology="hub-and-spoke")
    extra = 1000 * (book.tgw_per_gb("us-east-1") + book.tgw_per_gb("eu-west-1"))
    assert hub.total - mesh.total == pytest.approx(extra, abs=0.01)


def test_report_groups_by_region_and_component(book):
    report = estimate(small_stack(), book, Usage(), budget_usd=1000)
    groups = report.by_region_component()
    assert set(groups) >= {("us-east-1", "test"), ("us-west-2", "test")}
    assert "budget" in report.render() and "used)" in report.render()
