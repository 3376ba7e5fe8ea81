"""SLO feasibility: lower bounds on RTO, RPO and cache-miss latency that a topology can reach.

These are floors, not estimates: physics and documented service behaviour, optimistic on purpose. A
declared target below its floor cannot be met by any implementation of that topology, so the policy
pack rejects it and shows the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Mapping, Optional, Sequence

from core.regions import one_way_fiber_ms
from replication.quorum import quorum_size

__all__ = ["quorum_size", "lag_alarm_ceiling", "manifest_bounds", "Bound", "LAG_ALARM_CAP_S"]

# A lag alarm must fire while there is still time to act: at half the RPO, and never later than 30 s.
LAG_ALARM_CAP_S = 30.0

# RDS read-replica promotion reboots the instance; AWS quotes minutes. One minute is a generous floor.
PROMOTION_FLOOR_S = 60.0
# Receiving, flushing and applying WAL on the other side, on top of propagation.
APPLY_MARGIN_MS = 10.0
# The seed's own floor for a request at the origin: parsing under 1 ms plus a 5 ms database round.
ORIGIN_FLOOR_MS = 6.0


def lag_alarm_ceiling(rpo_seconds: float) -> float:
    """Highest replication-lag alarm threshold allowed for an RPO: min(30 s, RPO/2). Also the default."""
    return min(LAG_ALARM_CAP_S, rpo_seconds / 2)


def describe_ceiling(rpo_seconds: float) -> str:
    return f"min({LAG_ALARM_CAP_S:g} s, RPO {rpo_seconds:g} s / 2) = {lag_alarm_ceiling(rpo_seconds):g} s"


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


# The stack-config key that sets each bound's target, for messages that name what to change.
TARGET_KEYS = {"RTO": "slo.rto_seconds", "RPO": "slo.rpo_seconds", "latency p95 (miss)": "slo.latency_p95_ms"}


def manifest_bounds(m: Mapping[str, Any]) -> list[Bound]:
    """RTO, RPO and latency floors of the topology a stack manifest (core.manifest) describes."""
    s, dns = m["slo"], m["dns"]
    writers = m["write_regions"]
    regions = [r["name"] for r in m["regions"]]
    primary = writers[0] if m["phase"] == "a" else None
    replicas_of = {r: primary for r in regions if r != primary} if primary else None
    return [
        rto_floor(phase=m["phase"], edge=bool(m.get("edge")), interval_s=dns["interval_s"], threshold=dns["threshold"],
                  ttl_s=dns["ttl_s"], target_s=s["rto_seconds"], write_regions=regions),
        rpo_floor(write_regions=writers if len(writers) > 1 else regions, replicas_of=replicas_of,
                  target_s=s["rpo_seconds"], declared_lag_ms=s.get("replication_lag_ms")),
        latency_floor(phase=m["phase"], primary=primary, regions=regions, target_ms=s["latency_p95_ms"]),
    ]
