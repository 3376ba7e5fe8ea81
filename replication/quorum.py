"""Which regions may take writes: a pure, deterministic write-quorum decision.

Input is one observation of the mesh: for every region, the set of regions it
can reach (itself included), e.g. from its subscriptions' health and the
control plane's probes. Links are only trusted when both ends see each other.

Rules:

* ``n`` must be odd and ≥ 3; quorum is ``n // 2 + 1``.
* Writers must be pairwise connected (otherwise their writes would not reach
  each other: with ``origin = none`` nothing is relayed). Among all sets of
  pairwise-connected regions that form a strict majority, exactly one is
  selected — the largest, ties broken by sorted region names — so every
  evaluator given the same observation picks the same side and two majorities
  that merely overlap (A–B–C with A and C cut) can never both write.
* A region writes only if it is in the selected majority and its routing
  control is on (``control_on``; missing means on).
* Fencing is immediate. Un-fencing needs ``unfence_after`` consecutive
  eligible observations (hysteresis against flapping links); a region with no
  previous decision is taken at face value (cold start).
* ``quorum_reduced`` is raised when the selected majority has exactly
  ``quorum`` members: one more failure stops all writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

__all__ = ["Decision", "Reason", "decide", "mutual_graph", "quorum_size", "writers"]

Reason = Literal[
    "writable",
    "no_quorum",
    "other_majority_selected",
    "control_off",
    "stabilizing",
]


@dataclass(frozen=True)
class Decision:
    """The verdict for one region."""

    region: str
    writable: bool
    reason: Reason
    quorum: int
    #: The selected majority (empty when there is none).
    majority: frozenset[str]
    #: Regions this one is mutually connected with, itself included.
    sees: frozenset[str]
    quorum_reduced: bool
    #: Consecutive observations in which this region was eligible to write.
    healthy_streak: int
    #: Something an operator must look at (``None`` when all is well).
    alert: str | None

    @property
    def fenced(self) -> bool:
        return not self.writable


def quorum_size(n: int) -> int:
    """Strict majority of ``n`` regions; ``n`` must be odd and at least 3."""
    if n < 3 or n % 2 == 0:
        raise ValueError(
            f"write quorum needs an odd number of regions >= 3 (got {n}): with an even count "
            "a clean split leaves no strict majority and both halves must stop"
        )
    return n // 2 + 1


def mutual_graph(regions: Sequence[str], reachable: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """Undirected view: ``b`` in ``out[a]`` iff a reaches b and b reaches a (``a`` always in ``out[a]``)."""
    sees = {r: set(reachable.get(r, ())) for r in regions}
    return {
        a: frozenset({a} | {b for b in regions if b != a and b in sees[a] and a in sees[b]}) for a in regions
    }


def _select_majority(regions: Sequence[str], graph: Mapping[str, frozenset[str]], quorum: int) -> frozenset[str]:
    ordered = sorted(regions)
    for size in range(len(ordered), quorum - 1, -1):
        for group in combinations(ordered, size):  # lexicographic: deterministic tie-break
            if all(b in graph[a] for a in group for b in group):
                return frozenset(group)
    return frozenset()


def decide(
    regions: Sequence[str],
    reachable: Mapping[str, Iterable[str]],
    control_on: Mapping[str, bool] | None = None,
    previous: Mapping[str, Decision] | None = None,
    *,
    unfence_after: int = 3,
) -> dict[str, Decision]:
    """Decide, for every region, whether it may take writes now.

    ``reachable[r]``: regions ``r`` can reach now, itself included (a missing
    entry means ``r`` is down or silent). ``previous``: the last decisions, for
    hysteresis. Raises ``ValueError`` on an even or too small region count,
    duplicate regions or unknown names in the observation.
    """
    if len(set(regions)) != len(regions):
        raise ValueError(f"duplicate regions in {list(regions)}")
    quorum = quorum_size(len(regions))
    unknown = (set(reachable) | {b for v in reachable.values() for b in v} | set(control_on or {})) - set(regions)
    if unknown:
        raise ValueError(f"unknown regions in the observation: {sorted(unknown)}")
    if unfence_after < 1:
        raise ValueError("unfence_after must be >= 1")

    graph = mutual_graph(regions, reachable)
    majority = _select_majority(regions, graph, quorum)
    reduced = len(majority) == quorum
    out: dict[str, Decision] = {}
    for r in regions:
        prev = (previous or {}).get(r)
        control = (control_on or {}).get(r, True)
        in_majority = r in majority
        eligible = in_majority and control
        streak = (prev.healthy_streak + 1 if prev else 1) if eligible else 0
        if not in_majority:
            reason: Reason = "no_quorum" if len(graph[r]) < quorum else "other_majority_selected"
        elif not control:
            reason = "control_off"
        elif prev is not None and not prev.writable and streak < unfence_after:
            reason = "stabilizing"
        else:
            reason = "writable"
        writable = reason == "writable"
        if not majority:
            alert: str | None = "no region has write quorum: all writes are refused"
        elif reduced and in_majority:
            alert = f"quorum reduced to {len(majority)}/{len(regions)}: one more failure stops all writes"
        elif not in_majority:
            alert = f"{r} is fenced ({reason})"
        else:
            alert = None
        out[r] = Decision(
            region=r,
            writable=writable,
            reason=reason,
            quorum=quorum,
            majority=majority,
            sees=graph[r],
            quorum_reduced=reduced,
            healthy_streak=streak,
            alert=alert,
        )
    return out


def writers(decisions: Mapping[str, Decision]) -> set[str]:
    """Regions allowed to write."""
    return {r for r, d in decisions.items() if d.writable}
