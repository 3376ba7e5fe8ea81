"""The write-quorum decision: every partition and reachability pattern, cascades, flapping, properties."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import combinations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.quorum import Decision, decide, decide_region, mutual_graph, quorum_size, unfence_hold, writers

R3 = ("us-east-1", "us-west-2", "eu-west-1")
R5 = ("r1", "r2", "r3", "r4", "r5")


def _full(regions: tuple[str, ...]) -> dict[str, set[str]]:
    return {r: set(regions) for r in regions}


def _set_partitions(items: list[str]) -> Iterator[list[list[str]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1 :]
        yield [[first]] + part


def _assert_safe(regions: tuple[str, ...], reach: Mapping[str, set[str]], d: Mapping[str, Decision]) -> None:
    w = writers(d)
    g = mutual_graph(regions, reach)
    q = quorum_size(len(regions))
    for a in w:
        assert w <= g[a], f"writer {a} cannot see writers {w - g[a]}"
        assert len(g[a]) >= q, f"writer {a} sees no majority"
    if w:
        assert len({d[a].majority for a in w}) == 1
        assert w <= next(iter(d.values())).majority


@pytest.mark.parametrize("n", [0, 1, 2, 4, 6])
def test_rejects_even_or_small_clusters(n: int) -> None:
    regions = tuple(f"r{i}" for i in range(n))
    with pytest.raises(ValueError, match="odd number of regions >= 3"):
        decide(regions, {r: {r} for r in regions})


def test_rejects_unknown_or_duplicate_regions() -> None:
    with pytest.raises(ValueError, match="unknown"):
        decide(R3, {"us-east-1": {"us-east-1", "ap-south-1"}})
    with pytest.raises(ValueError, match="duplicate"):
        decide(("a", "a", "b"), {})


def test_all_set_partitions_of_three_regions() -> None:
    parts = list(_set_partitions(list(R3)))
    assert len(parts) == 5  # Bell(3)
    for part in parts:
        reach = {r: set(block) for block in part for r in block}
        d = decide(R3, reach)
        w = writers(d)
        writing_blocks = [b for b in part if set(b) & w]
        assert len(writing_blocks) <= 1, part
        majority = [b for b in part if len(b) >= 2]
        if majority:
            assert w == set(majority[0]), (part, w)
            assert all(d[r].reason == "no_quorum" for r in set(R3) - w)
        else:
            assert w == set()
            assert all(x.alert and "all writes are refused" in x.alert for x in d.values())


def test_every_directed_reachability_pattern_of_three_regions() -> None:
    edges = [(a, b) for a in R3 for b in R3 if a != b]
    for mask in product([False, True], repeat=len(edges)):
        reach = {r: {r} for r in R3}
        for present, (a, b) in zip(mask, edges):
            if present:
                reach[a].add(b)
        d = decide(R3, reach)
        _assert_safe(R3, reach, d)
        g = mutual_graph(R3, reach)
        has_majority_pair = any(b in g[a] for a, b in combinations(R3, 2))
        # Liveness: some mutually connected pair exists => somebody writes.
        assert bool(writers(d)) == has_majority_pair, reach


def test_asymmetric_link_is_not_trusted() -> None:
    reach = {"us-east-1": {"us-east-1", "us-west-2"}, "us-west-2": {"us-west-2"}, "eu-west-1": {"eu-west-1"}}
    assert writers(decide(R3, reach)) == set()


def test_overlapping_majorities_only_one_side_writes() -> None:
    a, b, c = R3
    reach = {a: {a, b}, b: {a, b, c}, c: {b, c}}  # a and c cut, b sees both
    d = decide(R3, reach)
    w = writers(d)
    assert len(w) == 2 and b in w and not {a, c} <= w
    loser = ({a, c} - w).pop()
    assert d[loser].reason == "other_majority_selected"


def test_cascade_one_then_two_regions_down() -> None:
    a, b, c = R3
    d0 = decide(R3, _full(R3))
    assert writers(d0) == set(R3) and not any(x.quorum_reduced for x in d0.values())
    assert all(x.alert is None for x in d0.values())
    d1 = decide(R3, {a: {a, b}, b: {a, b}}, previous=d0)  # c down
    assert writers(d1) == {a, b}
    assert d1[a].quorum_reduced and d1[a].alert and "quorum reduced" in d1[a].alert
    d2 = decide(R3, {a: {a}}, previous=d1)  # b down too
    assert writers(d2) == set()
    assert d2[a].reason == "no_quorum" and d2[a].alert and "all writes are refused" in d2[a].alert


def test_flapping_link_needs_consecutive_healthy_observations() -> None:
    a, b, c = R3
    cut = {a: {a, b}, b: {a, b}, c: {c}}
    d = decide(R3, _full(R3))
    d = decide(R3, cut, previous=d)
    assert not d[c].writable  # fenced at once
    for _ in range(5):  # flapping: healthy, cut, healthy, cut ...
        d = decide(R3, _full(R3), previous=d, unfence_after=3)
        assert not d[c].writable and d[c].reason == "stabilizing"
        d = decide(R3, cut, previous=d, unfence_after=3)
        assert not d[c].writable
    # heal for good: un-fenced on the third consecutive healthy observation
    seen = []
    for _ in range(3):
        d = decide(R3, _full(R3), previous=d, unfence_after=3)
        seen.append(d[c].writable)
    assert seen == [False, False, True]
    assert writers(d) == set(R3)
    assert d[a].writable  # the majority never stopped


def test_routing_control_off_blocks_writes_but_counts_for_quorum() -> None:
    a, b, c = R3
    d = decide(R3, _full(R3), control_on={c: False})
    assert writers(d) == {a, b} and d[c].reason == "control_off"
    d = decide(R3, {a: {a, c}, c: {a, c}}, control_on={c: False})
    assert writers(d) == {a}


def test_five_regions_minority_partition() -> None:
    left, right = R5[:3], R5[3:]
    reach = {r: set(left) for r in left} | {r: set(right) for r in right}
    d = decide(R5, reach)
    assert writers(d) == set(left) and d["r1"].quorum_reduced


def _observation(regions: tuple[str, ...]) -> st.SearchStrategy[tuple[dict[str, set[str]], dict[str, bool]]]:
    return st.tuples(
        st.fixed_dictionaries({r: st.sets(st.sampled_from(regions)) for r in regions}),
        st.fixed_dictionaries({r: st.booleans() for r in regions}),
    )


histories = st.sampled_from([R3, R5]).flatmap(
    lambda regions: st.tuples(st.just(regions), st.lists(_observation(regions), min_size=1, max_size=6))
)


@settings(max_examples=300, deadline=None)
@given(histories, st.integers(min_value=1, max_value=4))
def test_property_writers_always_one_mutually_connected_majority(
    history: tuple[tuple[str, ...], list[tuple[dict[str, set[str]], dict[str, bool]]]], k: int
) -> None:
    regions, steps = history
    prev: dict[str, Decision] | None = None
    for reach, control in steps:
        d = decide(regions, reach, control, prev, unfence_after=k)
        _assert_safe(regions, reach, d)
        w = writers(d)
        g = mutual_graph(regions, reach)
        # pairwise connected, inside the selected majority, control respected
        assert all(b in g[a] for a in w for b in w)
        if w:
            maj = next(iter(d.values())).majority
            assert w <= maj and len(maj) >= quorum_size(len(regions))
        assert all(control[r] for r in w)
        # fencing is immediate: nobody writes without an eligible observation now
        assert all(d[r].healthy_streak >= 1 for r in w)
        if prev is not None:
            for r in w:
                assert prev[r].writable or d[r].healthy_streak >= k
        prev = d


def _east_cut_off() -> dict[str, set[str]]:
    return {"us-east-1": {"us-east-1"}, "us-west-2": {"us-west-2", "eu-west-1"}, "eu-west-1": {"us-west-2", "eu-west-1"}}


def test_a_fenced_region_unfences_only_after_the_hold_of_unbroken_eligibility() -> None:
    # The clique moved to one this region is in; the member that left (east) may still hold a lease
    # granted on the last report that selected it, so the region waits stale + lease + probe, not 3 probes.
    hold = unfence_hold(probe_s=1.0, stale_after_s=3.0, lease_s=3.0)
    since = None
    streak, writable_at = 0, None
    for t in range(0, 20):
        d = decide_region("us-west-2", R3, _east_cut_off(), previous_writable=False, previous_streak=streak,
                          now_s=100.0 + t, previous_eligible_since=since, unfence_hold_s=hold)
        since, streak = d.eligible_since, d.healthy_streak
        if d.writable:
            writable_at = t
            break
        assert d.reason == "stabilizing" and d.eligible
    assert since == 100.0 and writable_at == hold  # eligible since the first probe; writes once it held


def test_the_hold_is_waived_only_when_the_clique_is_every_member() -> None:
    kw = dict(previous_writable=False, previous_streak=3, now_s=101.0, previous_eligible_since=100.0, unfence_hold_s=7.0)
    # east is outside the clique and may still hold a lease: wait, whatever east reports
    assert not decide_region("us-west-2", R3, _east_cut_off(), **kw).writable  # type: ignore[arg-type]
    # nobody outside the clique at all: nothing to wait for (a mesh whose members all hear each other)
    assert decide_region("us-west-2", R3, _full(R3), **kw).writable  # type: ignore[arg-type]


def test_a_break_in_eligibility_starts_the_hold_again() -> None:
    d = decide_region("us-west-2", R3, _east_cut_off(), previous_writable=False, previous_streak=5, now_s=10.0,
                      previous_eligible_since=1.0, unfence_hold_s=8.0)
    assert d.writable  # eligible since 1.0, 9 s ago
    alone = {"us-west-2": {"us-west-2"}, "us-east-1": {"us-east-1", "eu-west-1"}, "eu-west-1": {"us-east-1", "eu-west-1"}}
    d = decide_region("us-west-2", R3, alone, previous_writable=False, previous_streak=5, now_s=10.0,
                      previous_eligible_since=1.0, unfence_hold_s=8.0)
    assert not d.writable and d.eligible_since is None and d.healthy_streak == 0 and not d.eligible
    d = decide_region("us-west-2", R3, _east_cut_off(), previous_writable=False, previous_streak=0, now_s=11.0,
                      previous_eligible_since=None, unfence_hold_s=8.0)
    assert not d.writable and d.eligible_since == 11.0
