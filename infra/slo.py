"""SLO feasibility: lower bounds on RTO, RPO and cache-miss latency that a topology can reach.

These are floors, not estimates: physics and documented service behaviour, optimistic on purpose. A
declared target below its floor cannot be met by any implementation of that topology, so the policy
pack rejects it and shows the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional, Sequence

from infra.regions import one_way_fiber_ms

# RDS read-replica promotion reboots the instance; AWS quotes minutes. One minute is a generous floor.
PROMOTION_FLOOR_S = 60.0
# Receiving, flushing and applying WAL on the other side, on top of propagation.
APPLY_MARGIN_MS = 10.0
# The seed's own floor for a request at the origin: parsing under 1 ms plus a 5 ms database round.
ORIGIN_FLOOR_MS = 6.0


@dataclass(frozen=True)
class Bound:
    name: str
    unit: str
    target: float
    floor: float
    arithmetic: str

    @property
    def feasible(self) -> bool:
        return self.target >= self.floor

    def describe(self) -> str:
        verdict = "ok" if self.feasible else "INFEASIBLE"
        return f"{self.name}: target {self.target:g} {self.unit} vs floor {self.floor:.3g} {self.unit} ({self.arithmetic}) -> {verdict}"


def farthest_pair(regions: Sequence[str]) -> tuple[str, str, float]:
    pairs = [(a, b, one_way_fiber_ms(a, b)) for a, b in combinations(sorted(regions), 2)]
    return max(pairs, key=lambda p: p[2])


def rto_floor(*, phase: str, edge: bool, interval_s: float, threshold: int, ttl_s: float,
              target_s: float, write_regions: Sequence[str]) -> Bound:
    """Time until clients reach a working writer after a region fails."""
    if edge:
        # The load balancer retries another pool on a connection error: one extra round trip to the
        # next origin, at worst the farthest pair apart.
        a, b, ms = farthest_pair(write_regions)
        floor = 2 * ms / 1000
        return Bound("RTO", "s", target_s, floor, f"edge origin retry: one round trip {a}<->{b} = 2 x {ms:.1f} ms")
    detect = interval_s * threshold
    if phase == "a":
        floor = detect + ttl_s + PROMOTION_FLOOR_S
        text = (f"DNS failover: health check {interval_s:g} s x {threshold} + TTL {ttl_s:g} s "
                f"+ replica promotion >= {PROMOTION_FLOOR_S:g} s")
    else:
        floor = detect + ttl_s
        text = f"DNS failover: health check {interval_s:g} s x {threshold} + TTL {ttl_s:g} s"
    return Bound("RTO", "s", target_s, floor, text)


def rpo_floor(*, write_regions: Sequence[str], replicas_of: Optional[dict[str, str]] = None,
              target_s: float, declared_lag_ms: Optional[float] = None) -> Bound:
    """Data written but not yet elsewhere when a region dies: async replication can lose this much."""
    if replicas_of:
        a, b, ms = max(((src, dst, one_way_fiber_ms(src, dst)) for dst, src in replicas_of.items()), key=lambda p: p[2])
    else:
        a, b, ms = farthest_pair(write_regions)
    floor_ms = ms + APPLY_MARGIN_MS
    text = f"one-way fiber {a}->{b} {ms:.1f} ms + apply {APPLY_MARGIN_MS:g} ms"
    if declared_lag_ms is not None and declared_lag_ms > floor_ms:
        floor_ms = declared_lag_ms
        text = f"declared replication lag {declared_lag_ms:g} ms (physics alone: {ms + APPLY_MARGIN_MS:.1f} ms)"
    return Bound("RPO", "s", target_s, floor_ms / 1000, text)


def latency_floor(*, phase: str, primary: Optional[str], regions: Sequence[str], target_ms: float) -> Bound:
    """p95 floor of a request that misses every cache."""
    if phase == "a" and primary is not None and len(regions) > 1:
        far = max((r for r in regions if r != primary), key=lambda r: one_way_fiber_ms(primary, r))
        rtt = 2 * one_way_fiber_ms(primary, far)
        return Bound("latency p95 (miss)", "ms", target_ms, ORIGIN_FLOOR_MS + rtt,
                     f"write from {far} to the primary {primary}: round trip {rtt:.1f} ms + origin {ORIGIN_FLOOR_MS:g} ms")
    return Bound("latency p95 (miss)", "ms", target_ms, ORIGIN_FLOOR_MS,
                 f"every region writes locally: origin {ORIGIN_FLOOR_MS:g} ms")
