"""Membership views merged from heartbeats and relays (pure), and what agents decide with them.

The simulation runs every agent with only what its incoming links delivered, round by round, over
random directed link states: the same algorithm the real agents run against PostgreSQL in the
nemesis drill, here exhaustively and fast.
"""

from __future__ import annotations

from itertools import permutations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import membership, slo
from replication.quorum import (
    HeartbeatRow,
    RelayEntry,
    Report,
    decide_region,
    detection_bound,
    link_view,
    majority_of,
    merge_reports,
    mutual_graph,
    quorum_size,
    select_majority,
)

R3 = ("us-east-1", "us-west-2", "eu-west-1")
R5 = ("r1", "r2", "r3", "r4", "r5")


def test_the_newest_report_wins_and_among_equals_the_youngest() -> None:
    rows = [
        HeartbeatRow("us-west-2", seq=10, hears=frozenset({"us-east-1"}), since_received_s=0.5,
                     relay={"eu-west-1": RelayEntry(7, frozenset({"us-east-1"}), 0.2)}),
        HeartbeatRow("eu-west-1", seq=6, hears=frozenset(), since_received_s=9.0),
    ]
    reports = merge_reports("us-east-1", R3, {"us-west-2"}, 99, rows)
    assert reports["eu-west-1"] == Report(7, frozenset({"us-east-1"}), 0.7)  # relayed beats stale direct
    assert reports["us-west-2"].age_s == 0.5
    assert reports["us-east-1"] == Report(99, frozenset({"us-east-1", "us-west-2"}), 0.0)


def test_unknown_regions_and_relays_about_myself_are_ignored() -> None:
    rows = [HeartbeatRow("ap-south-1", 1, frozenset(R3), 0.0),
            HeartbeatRow("us-west-2", 3, frozenset({"ap-south-1", "us-east-1"}), 0.0,
                         relay={"us-east-1": RelayEntry(10**9, frozenset(), 0.0)})]
    reports = merge_reports("us-east-1", R3, (), 5, rows)
    assert set(reports) == {"us-east-1", "us-west-2"}
    assert reports["us-west-2"].hears == {"us-east-1"}
    assert reports["us-east-1"].seq == 5


def test_a_silent_region_has_no_edges_even_if_others_claim_to_hear_it() -> None:
    view = link_view({"a": Report(1, frozenset({"a", "b"}), 0.0), "b": Report(1, frozenset({"a", "b"}), 5.0)}, 2.0)
    assert view == {"a": frozenset({"a", "b"})}
    assert mutual_graph(("a", "b", "c"), view) == {"a": {"a"}, "b": {"b"}, "c": {"c"}}


def test_ties_between_majorities_go_to_the_configured_order() -> None:
    graph = mutual_graph(R3, {"us-east-1": set(R3), "us-west-2": {"us-east-1"}, "eu-west-1": {"us-east-1"}})
    assert select_majority(R3, graph, 2) == {"us-east-1", "us-west-2"}
    reordered = ("eu-west-1", "us-east-1", "us-west-2")
    assert select_majority(reordered, graph, 2) == {"eu-west-1", "us-east-1"}


def test_detection_bound_grows_with_relays_and_covers_a_dead_agents_lease() -> None:
    b3 = detection_bound(3, probe_s=1, stale_after_s=3, lease_s=3, max_link_delay_s=0.1)
    b5 = detection_bound(5, probe_s=1, stale_after_s=3, lease_s=3, max_link_delay_s=0.1)
    assert b5 > b3 >= 3
    # an agent that stops right after an observation keeps the lease it granted on it: the
    # observation may count a peer as heard for stale_after after the cut, then the lease runs
    assert detection_bound(3, probe_s=1, stale_after_s=1.5, lease_s=20, max_link_delay_s=0) == 1.5 + 20
    assert detection_bound(3, probe_s=1, stale_after_s=3, lease_s=3, max_link_delay_s=0.1, clock_step_s=1) == b3 + 1


# -- simulation of the agents ------------------------------------------------------------------


def simulate(regions: tuple[str, ...], up: dict[tuple[str, str], bool], rounds: int, *, stale: float = 2.5,
             start: dict[str, dict[str, object]] | None = None, t0: int = 0,
             configs: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] | None = None) -> dict[str, object]:
    """Synchronous rounds of one time unit. ``up[(a, b)]``: a hears b (b's rows reach a).

    Each agent keeps only what its own writer received: the latest row of each peer that reached it
    and how long ago. Returns each agent's last decision and the rows it holds.
    """
    held: dict[str, dict[str, tuple[HeartbeatRow, float]]] = {r: {} for r in regions}
    if start:
        held = start["held"]  # type: ignore[assignment]
    seq = {r: 0 for r in regions}
    state: dict[str, tuple[bool | None, int]] = {r: (None, 0) for r in regions}
    decisions = {}
    for t in range(t0, t0 + rounds):
        sent = {}
        for me in regions:
            rows = [HeartbeatRow(row.node, row.seq, row.hears, t - at, row.relay) for row, at in held[me].values()]
            hears = {p for p, (_, at) in held[me].items() if t - at <= stale}
            seq[me] = t * 10 + 1
            reports = merge_reports(me, regions, hears, seq[me], rows)
            prev_w, prev_s = state[me]
            members, nxt = (configs or {}).get(me, (regions, None))
            d = decide_region(me, members, {r: h & frozenset(list(members) + list(nxt or ()))
                                            for r, h in link_view(reports, stale).items()
                                            if r in members or r in (nxt or ())},
                              previous_writable=prev_w, previous_streak=prev_s, unfence_after=2,
                              next_regions=nxt)
            state[me] = (d.writable, d.healthy_streak)
            decisions[me] = d
            relay = {o: RelayEntry(rep.seq, rep.hears, rep.age_s) for o, rep in reports.items() if o != me}
            sent[me] = HeartbeatRow(me, seq[me], frozenset(reports[me].hears), 0.0, relay)
        for a in regions:
            for b in regions:
                if a != b and up[(a, b)]:
                    held[a][b] = (sent[b], t + 1)
    return {"decisions": decisions, "held": held}


def _links(regions: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in permutations(regions, 2)]


def _assert_safe(regions: tuple[str, ...], up: dict[tuple[str, str], bool], decisions: dict, *,
                 one_membership: bool = True) -> None:
    writers = {r for r, d in decisions.items() if d.writable}
    for a in writers:
        for b in writers:
            if a != b:
                assert up[(a, b)] and up[(b, a)], f"{a} and {b} both write but cannot replicate to each other: {up}"
    if one_membership:  # with two memberships in play each reports its own clique; the pairs still hold
        assert len({decisions[w].majority for w in writers}) <= 1


def test_every_directed_link_state_of_three_regions_settles_safely() -> None:
    links = _links(R3)
    for mask in product([False, True], repeat=len(links)):
        up = dict(zip(links, mask))
        out = simulate(R3, up, rounds=8)
        _assert_safe(R3, up, out["decisions"])  # type: ignore[arg-type]


def test_the_non_transitive_cut_fences_one_end_in_every_agent_own_view() -> None:
    up = {l: True for l in _links(R3)}
    up[("us-west-2", "eu-west-1")] = up[("eu-west-1", "us-west-2")] = False
    decisions = simulate(R3, up, rounds=8)["decisions"]
    writers = {r for r, d in decisions.items() if d.writable}  # type: ignore[attr-defined]
    assert writers == {"us-east-1", "us-west-2"}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_five_regions_any_link_state_after_a_healthy_start_settles_safely(data: st.DataObject) -> None:
    links = _links(R5)
    healthy = {l: True for l in links}
    warm = simulate(R5, healthy, rounds=4)
    up = {l: data.draw(st.booleans(), label=f"{l[0]} hears {l[1]}") for l in links}
    # continue from the warm state: old rows age out, new ones arrive only over working links
    out = simulate(R5, up, rounds=12, start={"held": warm["held"]}, t0=4)
    _assert_safe(R5, up, out["decisions"])  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_links(R3)), min_size=1, max_size=3))
def test_a_healthy_majority_stays_writable_whatever_one_region_loses(cut: list[tuple[str, str]]) -> None:
    # Cut only links touching eu-west-1: east and west must keep writing.
    up = {l: True for l in _links(R3)}
    for a, b in cut:
        if "eu-west-1" in (a, b):
            up[(a, b)] = False
    decisions = simulate(R3, up, rounds=8)["decisions"]
    assert decisions["us-east-1"].writable and decisions["us-west-2"].writable  # type: ignore[attr-defined]


# -- membership changes (joint consensus) --------------------------------------------------------

R5_OLD = ("r1", "r2", "r3")
R5_NEW = ("r1", "r2", "r3", "r4", "r5")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_growing_three_to_five_through_a_joint_membership_never_splits(data: st.DataObject) -> None:
    # Agents adopt the change one by one: at any moment some run the old membership and others the
    # joint one, or some the joint and others the new one (never old next to new).
    step = data.draw(st.sampled_from(["old/joint", "joint/new"]), label="phase of the change")
    a, b = ((R5_OLD, None), (R5_OLD, R5_NEW)) if step == "old/joint" else ((R5_OLD, R5_NEW), (R5_NEW, None))
    # Joining regions may still run the old membership, in which they are not members (fenced).
    configs = {r: (a if data.draw(st.booleans(), label=f"{r} not yet moved") else b) for r in R5}
    links = _links(R5)
    warm = simulate(R5, {l: True for l in links}, rounds=4, configs=configs)
    up = {l: data.draw(st.booleans(), label=f"{l[0]} hears {l[1]}") for l in links}
    out = simulate(R5, up, rounds=12, start={"held": warm["held"]}, t0=4, configs=configs)
    _assert_safe(R5, up, out["decisions"], one_membership=False)  # type: ignore[arg-type]


def test_a_joining_region_writes_only_after_the_change_completes() -> None:
    full = {r: frozenset(R5) for r in R5}
    joint = decide_region("r4", R5_OLD, full, next_regions=R5_NEW)
    assert not joint.writable
    assert decide_region("r1", R5_OLD, full, next_regions=R5_NEW).writable
    assert decide_region("r4", R5_NEW, full).writable


def test_mixing_old_and_new_memberships_without_the_joint_step_can_split() -> None:
    # Why the joint step exists: r1, r2 on the old 3-member view and r3, r4, r5 on the new 5-member
    # view, split {r1, r2} | {r3, r4, r5}: each side is a majority of its own membership.
    hears = {r: frozenset({"r1", "r2"}) for r in ("r1", "r2")} | {r: frozenset({"r3", "r4", "r5"}) for r in ("r3", "r4", "r5")}
    old_side = decide_region("r1", R5_OLD, {r: h & frozenset(R5_OLD) for r, h in hears.items() if r in R5_OLD})
    new_side = decide_region("r3", R5_NEW, hears)
    assert old_side.writable and new_side.writable  # the hazard
    joint = decide_region("r3", R5_OLD, hears, next_regions=R5_NEW)
    assert not joint.writable  # with the joint step r3 needs the old majority too


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_phase_a_to_b_grows_one_member_to_three_through_a_joint_membership_and_never_splits(data: st.DataObject) -> None:
    # The start of A -> B: r1 (the phase A primary) is the only member; r2 and r3 are seeded copies
    # whose agents already run but are not members. Then r1 | r1,r2,r3, then r1,r2,r3.
    one, three = ("r1",), ("r1", "r2", "r3")
    regions = three
    step = data.draw(st.sampled_from(["old/joint", "joint/new"]), label="phase of the change")
    a, b = ((one, None), (one, three)) if step == "old/joint" else ((one, three), (three, None))
    configs = {r: (a if data.draw(st.booleans(), label=f"{r} not yet moved") else b) for r in regions}
    links = _links(regions)
    warm = simulate(regions, {l: True for l in links}, rounds=4, configs=configs)
    up = {l: data.draw(st.booleans(), label=f"{l[0]} hears {l[1]}") for l in links}
    out = simulate(regions, up, rounds=12, start={"held": warm["held"]}, t0=4, configs=configs)
    _assert_safe(regions, up, out["decisions"], one_membership=False)  # type: ignore[arg-type]


def test_a_region_that_is_not_a_member_never_writes_and_says_why() -> None:
    seen = (*R5_OLD, "r4")  # what r4's agent merges: the members' reports and its own
    full = {r: frozenset(seen) for r in seen}
    d = decide_region("r4", R5_OLD, full)
    assert not d.writable and d.reason == "not_member"
    assert "not a quorum member" in (d.alert or "")
    # The members' agents drop its reports (merge_reports keeps members only) and write as before.
    assert decide_region("r1", R5_OLD, {r: frozenset(R5_OLD) for r in R5_OLD}).writable


def test_a_single_member_writes_alone_and_only_while_it_is_the_whole_membership() -> None:
    alone = decide_region("us-east-1", ("us-east-1",), {"us-east-1": frozenset({"us-east-1"})})
    assert alone.writable and alone.majority == {"us-east-1"}
    # During the joint step it also needs a majority of the new membership.
    joint = decide_region("us-east-1", ("us-east-1",), {"us-east-1": frozenset({"us-east-1"})}, next_regions=R3)
    assert not joint.writable
    joint_ok = decide_region("us-east-1", ("us-east-1",), {"us-east-1": frozenset({"us-east-1", "us-west-2"}),
                                                           "us-west-2": frozenset({"us-east-1", "us-west-2"})},
                             next_regions=R3)
    assert joint_ok.writable


def test_a_member_already_on_the_next_list_confirms_with_that_list_s_clique() -> None:
    # 3 -> 5: us-east-1's agent already runs the final list and reports only its clique of five; the
    # writers still on the joint list take that as confirmation when it is their own next clique.
    old = ("us-east-1", "us-west-2", "eu-west-1")
    new = old + ("ap-northeast-1", "sa-east-1")
    full = {r: frozenset(new) for r in new}
    sig_old, sig_new = ",".join(old), ",".join(new)
    five, three = frozenset(new), frozenset(old)
    joint = {sig_old: three, sig_new: five}
    agreeing = {"us-east-1": {sig_new: five}, "eu-west-1": joint}
    d = decide_region("us-west-2", old, full, next_regions=new, selections=agreeing)
    assert d.writable, d.reason
    # one that selected another clique of five (it does not hear us-west-2) does not confirm
    other = {"us-east-1": {sig_new: five - {"us-west-2"}}, "eu-west-1": joint}
    assert decide_region("us-west-2", old, full, next_regions=new, selections=other).reason == "unconfirmed"
    # and one still reporting the current list confirms only with the current clique
    stale = {"us-east-1": {sig_old: three - {"us-west-2"}, sig_new: five}, "eu-west-1": joint}
    assert decide_region("us-west-2", old, full, next_regions=new, selections=stale).reason == "unconfirmed"


@pytest.mark.parametrize("n", range(1, 10))
def test_config_the_program_and_the_pack_count_a_majority_as_the_agents_do(n):
    """core.membership.majority (config validation, the program, the manifest, the pack) is the agents'
    majority_of for every member count, and the write quorum where that is defined (odd n >= 3)."""
    assert membership.majority(n) == majority_of(n)
    if n >= 3 and n % 2:
        assert membership.majority(n) == quorum_size(n) == slo.quorum_size(n)
