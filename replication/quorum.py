"""Which regions may take writes: membership views merged from heartbeats, and one deterministic choice.

Pure functions, no I/O. The fence agent (`replication.agent`) feeds them what its own writer has
received; nothing here assumes a view of the whole mesh.

**Reports.** Every agent publishes a heartbeat on the control channel: the regions it *hears* (their
heartbeat is fresh and their data subscription is healthy) and, for every other region, the newest
report it knows of (`relay`), with that report's age measured on its own clock. A receiver ages
each report by the time since the carrying row arrived (its own clock again), so ages never mix two
clocks: clock offsets between regions do not matter, only how far one clock steps.

**View.** For every origin the receiver keeps the report with the highest sequence number (ties: the
youngest); a report older than `stale_after` is dropped and its origin counts as silent. An edge
a-b exists when both reports are fresh and each names the other: with `origin = none` nothing is
relayed, so two writers must replicate *directly* in both directions.

**Choice.** Among the cliques of the view that hold a strict majority, exactly one is selected: the
largest, ties broken by the configured region order (the clique whose members come earliest). Every
region that holds the same view selects the same clique, whatever the partition's shape (clean
split, single cut link, one-way loss), so two regions that cannot replicate to each other are never
both in it. Views converge through the relays within the detection bound (`detection_bound`).

**Silence is not absence.** Views are not always the same: a relayed report can go stale at one
region while another still holds it fresh (a slow relay, a paused agent, a timing configuration that
lets a relay path outlast ``stale_after``). A region with no fresh report is *unknown*, not cut off:
any edge it could have (every edge its known peers do not rule out) might exist. A region writes
only if it is in the selected clique of **every** graph between what it knows (the edges it has
evidence for) and what it cannot rule out (`possible_graph`). Two regions that cannot replicate to
each other are then never both writable once both views are accurate for the regions they know,
however differently their relays have aged; a slow relay costs availability (reason
``uncertain``), never safety. `timing_problems` is the rule on probe, staleness and lease under
which relays stay fresh in a healthy mesh, so that this does not happen in normal operation.

**Decision.** A region writes only if it is in the selected clique and its routing control is on
(`None`: unknown, no opinion). Fencing is immediate; unfencing needs `unfence_after` consecutive
eligible probes (hysteresis against flapping links), counted in state the caller persists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal, Optional

__all__ = [
    "Assessment",
    "Decision",
    "Reason",
    "RelayEntry",
    "Report",
    "HeartbeatRow",
    "assess",
    "decide",
    "decide_region",
    "detection_bound",
    "link_view",
    "possible_graph",
    "majority_of",
    "merge_reports",
    "mutual_graph",
    "quorum_size",
    "select_majority",
    "min_stale_after",
    "timing_problems",
    "unfence_hold",
    "writers",
]

Reason = Literal[
    "writable",
    "no_quorum",
    "other_majority_selected",
    "uncertain",
    "unconfirmed",
    "control_off",
    "stabilizing",
    "not_member",
]


def quorum_size(n: int) -> int:
    """Strict majority of ``n`` regions; ``n`` must be odd and at least 3.

    The one definition of the write quorum: config validation, the program, the policy pack and
    the drills all call this.
    """
    if n < 3 or n % 2 == 0:
        raise ValueError(
            f"write quorum needs an odd number of regions >= 3 (got {n}): with an even count "
            "a clean split leaves no strict majority and both halves must stop"
        )
    return n // 2 + 1


# -- views --------------------------------------------------------------------------------------


#: A selection, per membership list (``signature``): the clique the reporting region selected.
Selections = Mapping[str, frozenset[str]]


def signature(members: Sequence[str]) -> str:
    """How a membership list is named in reports (the configured order, the same in every agent)."""
    return ",".join(members)


@dataclass(frozen=True)
class Report:
    """What one region said about itself, and how old that is as far as the receiver knows."""

    seq: int
    hears: frozenset[str]
    age_s: float
    #: the clique it selected, per membership list it runs
    selected: Selections = field(default_factory=dict)


@dataclass(frozen=True)
class RelayEntry:
    """A report about ``origin`` as the relaying region knew it when it sent its heartbeat."""

    seq: int
    hears: frozenset[str]
    age_s: float
    selected: Selections = field(default_factory=dict)


@dataclass(frozen=True)
class HeartbeatRow:
    """One peer's heartbeat row as this writer holds it.

    ``since_received_s``: time since the row arrived, on the receiver's clock. ``lag_s``: how long
    the sender took from the observation the row reports to writing it, on the sender's clock (a
    paused agent publishes old news, and says how old). The report's age is the sum of both.
    """

    node: str
    seq: int
    hears: frozenset[str]
    since_received_s: float
    relay: Mapping[str, RelayEntry] = field(default_factory=dict)
    lag_s: float = 0.0
    selected: Selections = field(default_factory=dict)

    @property
    def age_s(self) -> float:
        return self.since_received_s + max(self.lag_s, 0.0)


def merge_reports(
    me: str, regions: Sequence[str], my_hears: Iterable[str], my_seq: int, rows: Iterable[HeartbeatRow],
    my_selected: Optional[Selections] = None,
) -> dict[str, Report]:
    """Every region's newest known report, as seen from ``me`` (``me``'s own is current: age 0).

    Direct rows and relayed entries compete on sequence number; among equal sequence numbers the
    youngest estimate wins. Unknown regions in rows are ignored (a region removed from the mesh).
    """
    known = set(regions)
    best: dict[str, Report] = {}

    def offer(origin: str, seq: int, hears: Iterable[str], age: float, selected: Selections) -> None:
        if origin not in known or origin == me:
            return
        cur = best.get(origin)
        if cur is None or seq > cur.seq or (seq == cur.seq and age < cur.age_s):
            best[origin] = Report(seq, frozenset(h for h in hears if h in known), max(age, 0.0), dict(selected))

    for row in rows:
        offer(row.node, row.seq, row.hears, row.age_s, row.selected)
        for origin, entry in row.relay.items():
            offer(origin, entry.seq, entry.hears, entry.age_s + row.age_s, entry.selected)
    best[me] = Report(my_seq, frozenset(h for h in my_hears if h in known) | {me}, 0.0, dict(my_selected or {}))
    return best


def link_view(reports: Mapping[str, Report], stale_after_s: float) -> dict[str, frozenset[str]]:
    """Who each region hears, for regions whose report is fresh; silent regions are left out."""
    return {r: rep.hears | {r} for r, rep in reports.items() if rep.age_s <= stale_after_s}


def mutual_graph(regions: Sequence[str], hears: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """Undirected view: ``b`` in ``out[a]`` iff a hears b and b hears a (``a`` always in ``out[a]``).

    A region with no entry in ``hears`` is silent: it has no edges.
    """
    sees = {r: set(hears.get(r, ())) for r in regions}
    return {
        a: frozenset({a} | {b for b in regions if b != a and a in hears and b in hears and b in sees[a] and a in sees[b]})
        for a in regions
    }


def possible_graph(regions: Sequence[str], hears: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """Every edge the view cannot rule out: ``a``-``b`` unless a known report of either one leaves the
    other out. A region with no entry in ``hears`` (no fresh report) rules nothing out."""
    sees = {r: set(hears[r]) for r in regions if r in hears}

    def may(a: str, b: str) -> bool:
        return (a not in sees or b in sees[a]) and (b not in sees or a in sees[b])

    return {a: frozenset({a} | {b for b in regions if b != a and may(a, b)}) for a in regions}


def _cliques_before(regions: Sequence[str], graph: Mapping[str, frozenset[str]], quorum: int,
                    chosen: frozenset[str]) -> Iterable[frozenset[str]]:
    """Majority cliques of ``graph`` that ``select_majority`` would prefer to ``chosen`` (larger, or as
    large and earlier in ``regions``); every majority clique when ``chosen`` is empty."""
    order = {r: i for i, r in enumerate(regions)}
    rank = (-len(chosen), sorted(order[r] for r in chosen)) if chosen else None
    for size in range(len(regions), quorum - 1, -1):
        for group in combinations(regions, size):
            if rank is not None and (-size, sorted(order[r] for r in group)) >= rank:
                return
            if all(b in graph[a] for a in group for b in group):
                yield frozenset(group)


def select_majority(regions: Sequence[str], graph: Mapping[str, frozenset[str]], quorum: int) -> frozenset[str]:
    """The one clique allowed to write: the largest with at least ``quorum`` members.

    Ties go to the clique whose members come earliest in ``regions`` (the configured order, the
    same in every agent). Empty when no majority clique exists.
    """
    return next(iter(_cliques_before(regions, graph, quorum, frozenset())), frozenset())


def _certain(me: str, regions: Sequence[str], chosen: frozenset[str], possible: Mapping[str, frozenset[str]],
             quorum: int) -> bool:
    """Whether ``me`` is in the selected clique of every graph between the known edges (in which
    ``chosen`` is selected) and ``possible``: every clique the unknown edges could complete that would
    be selected before ``chosen`` contains ``me`` too."""
    return me in chosen and all(me in k for k in _cliques_before(regions, possible, quorum, chosen))


@dataclass(frozen=True)
class Assessment:
    """One probe's verdict from one agent's observation, and what its heartbeat says to the others."""

    decision: "Decision"
    #: peers heard directly: a fresh heartbeat and healthy subscriptions
    hears: frozenset[str]
    #: every region's newest report as this agent knows it
    reports: dict[str, Report]
    #: who each region hears, for the regions with a fresh report
    view: dict[str, frozenset[str]]
    #: what the heartbeat relays about every other region (ages as of the observation)
    relay: dict[str, RelayEntry]


def assess(
    me: str,
    regions: Sequence[str],
    *,
    rows: Iterable[HeartbeatRow],
    links_healthy: Iterable[str],
    seq: int,
    stale_after_s: float,
    control_on: Optional[bool] = None,
    previous_writable: Optional[bool] = None,
    previous_streak: int = 0,
    unfence_after: int = 3,
    next_regions: Optional[Sequence[str]] = None,
    previous_selected: Optional[Selections] = None,
    observed_s: Optional[float] = None,
    previous_eligible_since: Optional[float] = None,
    unfence_hold_s: float = 0.0,
) -> Assessment:
    """The pure part of a probe (the agent does the I/O; the timing model in the tests calls this).

    ``rows``: the peers' heartbeat rows this writer holds, aged at the moment of observation;
    ``links_healthy``: peers whose data and control subscriptions are healthy.
    """
    rows = list(rows)
    everyone = list(regions) + [r for r in (next_regions or ()) if r not in regions]
    fresh = {r.node for r in rows if r.age_s <= stale_after_s}
    hears = frozenset(p for p in links_healthy if p in fresh and p != me)
    reports = merge_reports(me, everyone, hears, seq, rows)
    view = link_view(reports, stale_after_s)
    selections = {r: reports[r].selected for r in view if r != me}
    decision = decide_region(
        me, regions, view, control_on=control_on, previous_writable=previous_writable,
        previous_streak=previous_streak, unfence_after=unfence_after, next_regions=next_regions or None,
        selections=selections, previous_selected=previous_selected, now_s=observed_s,
        previous_eligible_since=previous_eligible_since, unfence_hold_s=unfence_hold_s)
    reports[me] = Report(reports[me].seq, reports[me].hears, 0.0, decision.selected)
    relay = {o: RelayEntry(rep.seq, rep.hears, rep.age_s, rep.selected) for o, rep in reports.items() if o != me}
    return Assessment(decision, hears, reports, view, relay)


# -- decisions -----------------------------------------------------------------------------------


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
    #: Consecutive probes in which this region was eligible to write.
    healthy_streak: int
    #: Something an operator must look at (``None`` when all is well).
    alert: Optional[str]
    #: The clique selected, per membership list: what this region's heartbeat tells the others.
    selected: Selections = field(default_factory=dict)
    #: When (the caller's clock) this region became eligible without a break since; ``None`` when it
    #: is not eligible. The caller keeps it for the next probe (``previous_eligible_since``).
    eligible_since: Optional[float] = None
    #: in the selected clique, certain, confirmed and with its control on (writable, or stabilizing)
    eligible: bool = False

    @property
    def fenced(self) -> bool:
        return not self.writable


def _check(regions: Sequence[str], unfence_after: int) -> int:
    if len(set(regions)) != len(regions):
        raise ValueError(f"duplicate regions in {list(regions)}")
    if unfence_after < 1:
        raise ValueError("unfence_after must be >= 1")
    return quorum_size(len(regions))


def majority_of(n: int) -> int:
    """A strict majority of ``n`` members, for any ``n >= 1`` (joint changes may pass through an even
    count; steady-state meshes use ``quorum_size``, which insists on odd counts)."""
    if n < 1:
        raise ValueError("a membership needs at least one member")
    return n // 2 + 1


def _membership_quorum(regions: Sequence[str], next_regions: Optional[Sequence[str]], unfence_after: int) -> int:
    """The quorum of the current membership, after checking both lists."""
    if next_regions is None and len(regions) == 1:
        # The start of phase A -> B: one writer, every other region still a read replica of it.
        if unfence_after < 1:
            raise ValueError("unfence_after must be >= 1")
        return 1
    if next_regions is None:
        return _check(regions, unfence_after)
    if len(set(regions)) != len(regions) or len(set(next_regions)) != len(next_regions):
        raise ValueError(f"duplicate regions in {list(regions)} / {list(next_regions)}")
    if unfence_after < 1:
        raise ValueError("unfence_after must be >= 1")
    return majority_of(len(regions))


def _everyone(me: str, regions: Sequence[str], next_regions: Optional[Sequence[str]],
              hears: Mapping[str, Iterable[str]]) -> tuple[list[str], bool]:
    """The regions of the decision (current and next members, and ``me``), and whether ``me`` is a
    member. A region that is not (yet, or any longer) a member: a copy being seeded, or a writer that
    left. Its agent runs and reports, but never votes it writable."""
    everyone = list(regions) + [r for r in (next_regions or ()) if r not in regions]
    member = me in everyone
    if not member:
        everyone.append(me)
    unknown = (set(hears) | {b for v in hears.values() for b in v}) - set(everyone)
    if unknown:
        raise ValueError(f"unknown regions in the observation: {sorted(unknown)}")
    return everyone, member


def _chosen(me: str, members: Sequence[str], quorum: int, graph: Mapping[str, frozenset[str]],
            possible: Mapping[str, frozenset[str]]) -> tuple[frozenset[str], bool]:
    """The clique ``members`` select from the known edges, and whether ``me`` is in the selected clique
    of every graph up to ``possible`` too (``_certain``)."""
    known = select_majority(members, {r: graph[r] & frozenset(members) for r in members}, quorum)
    sure = _certain(me, members, known, {r: possible[r] & frozenset(members) for r in members}, quorum)
    return known, sure


def _confirmed(me: str, members: Sequence[str], clique: frozenset[str], *, selections: Optional[Mapping[str, Selections]],
               previous_selected: Optional[Selections], previous_writable: Optional[bool],
               moved_on: Optional[tuple[str, frozenset[str]]] = None) -> bool:
    """Whether every other member of ``clique`` reports selecting it (for the membership ``members``).

    A region that selected differently, or has not said, holds it back. Two regions whose views
    differ for a moment (one has a newer report than the other) would each select a clique of their
    own with the same third region; the third region selects one of them, and only that one writes
    (during a membership change, for the current list: only current members can write). ``None``:
    every region holds this same view (the all-regions ``decide`` helper), so they select alike.
    While the clique only shrinks or grows from the one a writable region had confirmed
    (``previous_selected``; a member went silent or came back), a member that still reports that
    previous clique confirms it too: every member of the smaller of the two was writable with it
    already, so a failed region does not stop the others for the probe it takes their reports to
    catch up.
    """
    if selections is None:
        return True
    sig = signature(members)
    before = (previous_selected or {}).get(sig) if previous_writable else None
    held = before is not None and me in before and (before <= clique or clique <= before)

    def says(z: str) -> bool:
        theirs = selections.get(z, {})
        if theirs.get(sig) == clique or (held and theirs.get(sig) == before):
            return True
        # A member already running the next list reports only that list's clique: it confirms
        # when it selected the same next clique as this region (two regions that agree on one
        # clique of the next list cannot be writing apart, as for the current list).
        return moved_on is not None and sig not in theirs and theirs.get(moved_on[0]) == moved_on[1]

    return all(z == me or says(z) for z in clique)


def _eligible_since(everyone: Sequence[str], majority: frozenset[str], *, eligible: bool, now_s: Optional[float],
                    previous_streak: int, previous_eligible_since: Optional[float]) -> tuple[Optional[float], float]:
    """Since when the deciding region has been eligible without a break (``None``: it is not, or no
    clock was given), and for how long that counts against the unfence hold.

    A fenced region stays fenced until it has been eligible without a break for ``unfence_hold_s``
    (``now_s`` and ``previous_eligible_since``, on the caller's clock; see ``unfence_hold``): when the
    selected clique moves from {X, Z} to {Y, Z}, X may still hold a lease granted on Z's last report
    that selected it, and Y must not write beside it. Y's first eligible observation comes after Z's
    switch (Y needs Z's report of the new clique), and X's lease ends at most ``stale_after + lease``
    (plus a link delay) after it. The hold is waived only when the selected clique is every member:
    nobody departed, so there is no departing lease to wait for. (A waiver on peers reporting they are
    not eligible was circular: two fenced regions apart each waived on the other's report,
    tests/redteam/test_red5_mutual_waiver.py.)
    """
    since: Optional[float] = None
    if eligible and now_s is not None:
        since = previous_eligible_since if (previous_streak > 0 and previous_eligible_since is not None) else now_s
    held_s = now_s - since if (now_s is not None and since is not None) else float("inf")
    if all(r in majority for r in everyone):
        held_s = float("inf")  # the clique is every member: no departing lease to wait for
    return since, held_s


def _alert(me: str, regions: Sequence[str], majority: frozenset[str], *, reduced: bool, member: bool,
           in_majority: bool, certain: bool, agreed: bool, reason: Reason) -> Optional[str]:
    """Something an operator must look at, or ``None``."""
    if not majority:
        return "no region has write quorum: all writes are refused"
    if reduced and in_majority:
        return f"quorum reduced to {len(majority)}/{len(regions)}: one more failure stops all writes"
    if not member:
        return f"{me} is not a quorum member: it takes no writes (being seeded, or it left the mesh)"
    if not in_majority or not certain or not agreed:
        return f"{me} is fenced ({reason})"
    return None


def decide_region(
    me: str,
    regions: Sequence[str],
    hears: Mapping[str, Iterable[str]],
    *,
    control_on: Optional[bool] = None,
    previous_writable: Optional[bool] = None,
    previous_streak: int = 0,
    unfence_after: int = 3,
    next_regions: Optional[Sequence[str]] = None,
    selections: Optional[Mapping[str, Selections]] = None,
    previous_selected: Optional[Selections] = None,
    now_s: Optional[float] = None,
    previous_eligible_since: Optional[float] = None,
    unfence_hold_s: float = 0.0,
) -> Decision:
    """One region's decision from its own view (``hears`` of fresh regions, e.g. ``link_view``).

    ``selections``: the selection each region reported, for the regions with a fresh report. A
    region writes only if every other member of its selected clique reports selecting that same
    clique, for the same membership list (``_confirmed``).

    ``previous_writable``/``previous_streak`` come from the caller's persisted state; ``None``
    means a cold start, which is taken at face value (a new mesh must be able to start writing).

    A fenced region also stays fenced until it has been eligible without a break for
    ``unfence_hold_s``, unless the selected clique is every member (``_eligible_since``).

    ``next_regions``: during a membership change (joint consensus), the members after it. A region
    then writes only if it is in the selected majority of *both* memberships: an agent still on the
    old membership and one already on the joint one select the same old-membership clique from the
    same view, so they never write apart; likewise joint and new. Joining regions write only once
    the change is complete; leaving regions stop writing when it starts.
    """
    quorum = _membership_quorum(regions, next_regions, unfence_after)
    everyone, member = _everyone(me, regions, next_regions, hears)
    graph = mutual_graph(everyone, hears)
    possible = possible_graph(everyone, hears)

    majority, certain = _chosen(me, regions, quorum, graph, possible)
    in_majority = member and me in majority
    selected = {signature(regions): majority}
    moved_on = None
    if next_regions is not None:
        next_majority, next_certain = _chosen(me, next_regions, majority_of(len(next_regions)), graph, possible)
        in_majority = in_majority and me in next_majority
        certain = certain and next_certain
        # Only the current members can be writable (a region must be in the current list's clique),
        # and they confirm that clique among themselves: that is what keeps two of them from writing
        # apart. The next list's clique is published (so the new membership starts confirmed) but not
        # waited for: a joining region's first reports must not pause the writers.
        selected[signature(next_regions)] = next_majority
        moved_on = (signature(next_regions), next_majority)
    agreed = _confirmed(me, regions, majority, selections=selections, previous_selected=previous_selected,
                        previous_writable=previous_writable, moved_on=moved_on)
    control = True if control_on is None else control_on
    eligible = in_majority and certain and agreed and control
    streak = (previous_streak + 1 if previous_writable is not None else 1) if eligible else 0
    since, held_s = _eligible_since(everyone, majority, eligible=eligible, now_s=now_s, previous_streak=previous_streak,
                                    previous_eligible_since=previous_eligible_since)
    if not member:
        reason: Reason = "not_member"
    elif not in_majority:
        reason = "no_quorum" if len(graph[me]) < quorum else "other_majority_selected"
    elif not certain:
        reason = "uncertain"
    elif not agreed:
        reason = "unconfirmed"
    elif not control:
        reason = "control_off"
    elif previous_writable is False and (streak < unfence_after or held_s < unfence_hold_s):
        reason = "stabilizing"
    else:
        reason = "writable"
    reduced = len(majority) == quorum
    return Decision(
        region=me,
        writable=reason == "writable",
        reason=reason,
        quorum=quorum,
        majority=majority,
        sees=graph[me],
        quorum_reduced=reduced,
        healthy_streak=streak,
        alert=_alert(me, regions, majority, reduced=reduced, member=member, in_majority=in_majority, certain=certain,
                     agreed=agreed, reason=reason),
        selected=selected,
        eligible_since=since,
        eligible=eligible,
    )


def decide(
    regions: Sequence[str],
    reachable: Mapping[str, Iterable[str]],
    control_on: Optional[Mapping[str, bool]] = None,
    previous: Optional[Mapping[str, Decision]] = None,
    *,
    unfence_after: int = 3,
) -> dict[str, Decision]:
    """Every region's decision when all of them hold the same view ``reachable`` (what the relays
    converge to). A missing entry means that region is silent. Used to reason about the choice over
    whole partitions; agents call ``decide_region`` with their own view.
    """
    _check(regions, unfence_after)
    unknown = (set(reachable) | {b for v in reachable.values() for b in v} | set(control_on or {})) - set(regions)
    if unknown:
        raise ValueError(f"unknown regions in the observation: {sorted(unknown)}")
    out = {}
    for r in regions:
        prev = (previous or {}).get(r)
        out[r] = decide_region(
            r,
            regions,
            reachable,
            control_on=(control_on or {}).get(r),
            previous_writable=None if prev is None else prev.writable,
            previous_streak=0 if prev is None else prev.healthy_streak,
            unfence_after=unfence_after,
        )
    return out


def writers(decisions: Mapping[str, Decision]) -> set[str]:
    """Regions allowed to write."""
    return {r for r, d in decisions.items() if d.writable}


def detection_bound(
    n: int,
    *,
    probe_s: float,
    stale_after_s: float,
    lease_s: float,
    max_link_delay_s: float,
    clock_step_s: float = 0.0,
) -> float:
    """Longest time two regions that cannot replicate to each other may both stay writable.

    Live agents: each end of a cut sees its incoming side go silent after ``stale_after_s`` and
    acts on its next probe; what the other regions know reaches everyone through at most ``n - 1``
    relays, each costing one probe and one link delay, and is acted on at the next probe.
    A dead, stalled or paused agent stops renewing its lease. A lease runs from the moment of the
    observation it was granted on, not from when the agent got round to writing it, and that
    observation counted a peer as heard for at most ``stale_after_s`` after its last heartbeat:
    so at most ``stale_after_s + lease_s`` after a cut. A step of a region's own clock shifts both
    by at most ``clock_step_s``.
    """
    live = stale_after_s + probe_s + (n - 1) * (probe_s + max_link_delay_s) + probe_s
    return max(live, stale_after_s + lease_s) + clock_step_s


def unfence_hold(*, probe_s: float, stale_after_s: float, lease_s: float) -> float:
    """How long a fenced region must be eligible without a break before it writes again.

    A region that leaves the selected clique keeps the lease it was granted on the last report that
    still selected it: that report stays fresh for ``stale_after_s`` after it was observed (a link
    delay later at the receiver) and the lease runs ``lease_s`` from the observation it was granted
    on. A region joining the clique in its place is first eligible after that report was superseded,
    so waiting this long means every lease of the departed member has run out. One probe of margin
    covers the link delay and a clock step (both assumed shorter than a probe).
    """
    return stale_after_s + lease_s + probe_s


#: Slack for a late probe, in probe intervals, on top of the longest relay path.
RELAY_SLACK_PROBES = 1.0


def min_stale_after(n: int, probe_s: float) -> float:
    """The shortest ``stale_after`` under which every report stays fresh in a healthy mesh.

    A report reaches a region through at most ``n - 1`` relays. Each relay reads it on its next probe
    (up to ``probe_s`` after it arrived) and passes it on with that age added (``merge_reports``), so
    a report arrives aged up to ``(n - 1) * probe_s`` plus each agent's own delay between observing
    and publishing, which is counted too. One more probe of slack covers a late probe.
    """
    return (n - 1 + RELAY_SLACK_PROBES) * probe_s


def timing_problems(n: int, *, probe_s: float, stale_after_s: float, lease_s: float) -> list[str]:
    """What is wrong with a fence timing for ``n`` voting regions, each problem with its fix.

    The one rule on timing: config validation, the agent and the drills call it.
    """
    out = []
    floor = min_stale_after(n, probe_s)
    if stale_after_s < floor:
        out.append(
            f"stale_after_seconds ({stale_after_s:g}) must be at least {floor:g} with {n} regions and a "
            f"{probe_s:g} s probe: a report can reach a region through {n - 1} relay(s), each adding up to one "
            f"probe of age, plus one probe of slack; shorter, and relayed reports go stale in a healthy mesh "
            f"(regions fence for no reason); e.g. stale_after_seconds: {floor:g}")
    if lease_s <= probe_s + 0.5:
        out.append(
            f"lease_seconds ({lease_s:g}) must exceed probe_interval_seconds ({probe_s:g}) by more than 0.5 s, "
            f"or a healthy region fences itself between renewals; e.g. lease_seconds: {3 * probe_s:g}")
    return out
