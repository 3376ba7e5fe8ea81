"""SLO floors: properties of the bounds, and the seed's own numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import slo
from core.regions import REGIONS, one_way_fiber_ms

regions = st.lists(st.sampled_from(sorted(REGIONS)), min_size=2, max_size=6, unique=True)


def test_fiber_floors_match_the_reference_round_trips():
    # REFERENCE: about 35, 55 and 73 ms round trip.
    assert 2 * one_way_fiber_ms("us-east-1", "us-west-2") == pytest.approx(35, abs=2)
    assert 2 * one_way_fiber_ms("us-east-1", "eu-west-1") == pytest.approx(55, abs=2)
    assert 2 * one_way_fiber_ms("us-west-2", "eu-west-1") == pytest.approx(73, abs=2)


@given(st.sampled_from([10, 30]), st.integers(1, 10), st.integers(5, 3600), st.integers(1, 10), st.integers(5, 3600))
def test_dns_rto_floor_grows_with_detection_and_ttl(interval, threshold, ttl, more_threshold, more_ttl):
    def floor(t, l):
        return slo.rto_floor(phase="b", edge=False, interval_s=interval, threshold=t, ttl_s=l, target_s=1,
                             write_regions=["us-east-1", "us-west-2", "eu-west-1"]).floor

    assert floor(threshold + more_threshold, ttl) > floor(threshold, ttl)
    assert floor(threshold, ttl + more_ttl) > floor(threshold, ttl)


@given(regions)
def test_edge_failover_is_always_faster_than_dns(rs):
    edge = slo.rto_floor(phase="c", edge=True, interval_s=10, threshold=1, ttl_s=5, target_s=1, write_regions=rs)
    dns = slo.rto_floor(phase="c", edge=False, interval_s=10, threshold=1, ttl_s=5, target_s=1, write_regions=rs)
    assert edge.floor < dns.floor


@given(regions, st.data())
def test_rpo_floor_is_set_by_the_farthest_pair_and_order_free(rs, data):
    shuffled = data.draw(st.permutations(rs))
    a = slo.rpo_floor(write_regions=rs, target_s=1)
    b = slo.rpo_floor(write_regions=shuffled, target_s=1)
    far = max(one_way_fiber_ms(x, y) for x in rs for y in rs if x != y)
    assert a.floor == b.floor == pytest.approx((far + slo.APPLY_MARGIN_MS) / 1000)


@given(regions, st.floats(1, 10_000))
def test_declared_lag_only_ever_raises_the_rpo_floor(rs, lag):
    plain = slo.rpo_floor(write_regions=rs, target_s=1)
    declared = slo.rpo_floor(write_regions=rs, target_s=1, declared_lag_ms=lag)
    assert declared.floor >= plain.floor


def test_seed_phase_b_over_dns_cannot_meet_one_second():
    bound = slo.rto_floor(phase="b", edge=False, interval_s=10, threshold=3, ttl_s=60, target_s=1,
                          write_regions=["us-east-1", "us-west-2", "eu-west-1"])
    assert not bound.feasible and bound.floor == 90


def test_seed_phase_b_rpo_with_its_own_eu_replication_quote():
    bound = slo.rpo_floor(write_regions=["us-east-1", "us-west-2", "eu-west-1"], target_s=0.1, declared_lag_ms=200)
    assert not bound.feasible and "declared replication lag 200 ms" in bound.arithmetic
