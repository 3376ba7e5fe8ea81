"""The fence in time: a model of the agents that runs the real decision code (``quorum.assess``) on a
simulated clock, with probe phases, link delays, cuts and agent pauses, and measures how long two
regions that cannot replicate to each other are both writable.

What the model keeps of the agent: each probe observes the rows its writer holds, aged at the
moment of observation (time since arrival plus the sender's own delay between observing and
writing); decides; then, after an optional pause, publishes its heartbeat and writes its lease. The
lease runs ``lease_s`` from the observation (``anchored``) or, as before this model existed, from
the write. A cut drops every heartbeat sent over the link while it lasts.

The claims it checks, for every timing ``timing_problems`` accepts:
* the worst both-writable window after a cut stays within ``detection_bound``, whatever the probe
  phases, delays and cut;
* an agent that pauses between observing and writing grants nothing past ``stale_after + lease``
  after the cut (the bound's paused-agent term), however long the pause;
* a healthy mesh never fences anyone (relays stay fresh).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.quorum import HeartbeatRow, assess, detection_bound, min_stale_after, timing_problems, unfence_hold

R3 = ("us-east-1", "us-west-2", "eu-west-1")
R5 = ("r1", "r2", "r3", "r4", "r5")


@dataclass
class Timing:
    probe: float
    stale: float
    lease: float
    max_delay: float = 0.05


@dataclass
class Sent:
    row: HeartbeatRow  # since_received_s unused here: ages come from arrival times
    published_at: float


@dataclass
class Agent:
    region: str
    phase: float
    held: dict[str, tuple[Sent, float]] = field(default_factory=dict)  # peer -> (row, arrived at)
    writable_until: float = float("-inf")
    previous: bool | None = None
    streak: int = 0
    selected: dict = field(default_factory=dict)
    eligible_since: float | None = None
    seq: int = 0
    intervals: list[tuple[float, float]] = field(default_factory=list)


def run(regions: tuple[str, ...], t: Timing, *, seed: int, horizon: float, cuts: list[tuple[str, str, float, float]],
        pauses: dict[str, tuple[float, float]] | None = None, anchored: bool = True,
        jitter: float = 0.0, unfence_after: int = 2) -> dict[str, list[tuple[float, float]]]:
    """Simulate; return each region's writable intervals. ``cuts``: (listener, speaker, from, to): the
    listener does not receive what the speaker sends meanwhile. ``pauses``: region -> (at, seconds):
    its first probe at or after ``at`` pauses that long between observing and writing."""
    rng = random.Random(seed)
    delay = {(a, b): rng.uniform(0.2, 1.0) * t.max_delay for a, b in permutations(regions, 2)}
    agents = {r: Agent(r, rng.uniform(0, t.probe)) for r in regions}
    pending = dict(pauses or {})
    events: list[tuple[float, int, str, str, object]] = []
    n = 0

    def push(at: float, kind: str, region: str, payload: object = None) -> None:
        nonlocal n
        n += 1
        heapq.heappush(events, (at, n, kind, region, payload))

    def cut(listener: str, speaker: str, at: float) -> bool:
        return any(c[0] == listener and c[1] == speaker and c[2] <= at < c[3] for c in cuts)

    for a in agents.values():
        push(a.phase, "probe", a.region)
    while events:
        now, _, kind, region, payload = heapq.heappop(events)
        if now > horizon:
            break
        me = agents[region]
        if kind == "deliver":
            sent = payload
            assert isinstance(sent, Sent)
            me.held[sent.row.node] = (sent, now)
            continue
        if kind == "probe":
            rows = [HeartbeatRow(p, s.row.seq, s.row.hears, now - at, s.row.relay, s.row.lag_s, s.row.selected)
                    for p, (s, at) in me.held.items()]
            me.seq += 1
            # as the agent does: a region whose lease ran out since its last decision is fenced
            lapsed = me.previous is True and me.writable_until <= now
            a = assess(region, regions, rows=rows, links_healthy=[p for p in regions if p != region], seq=me.seq,
                       stale_after_s=t.stale, previous_writable=False if lapsed else me.previous,
                       previous_streak=0 if lapsed else me.streak, unfence_after=unfence_after,
                       previous_selected=me.selected, observed_s=now, previous_eligible_since=me.eligible_since,
                       unfence_hold_s=unfence_hold(probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease))
            me.eligible_since = a.decision.eligible_since
            pause = 0.0
            if region in pending and now >= pending[region][0]:
                pause = pending.pop(region)[1]
            done = now + rng.uniform(0.005, 0.05) + pause  # a few round trips, and the pause
            push(done, "commit", region, (now, a))
            # the loop is sequential: the next probe comes a probe interval after this one, or right
            # after this one's commit if that took longer (a paused agent does not probe)
            push(max(now + t.probe, done + 0.005) + rng.uniform(0, jitter), "probe", region)
            continue
        # commit: write the lease, publish the heartbeat
        observed, a = payload  # type: ignore[misc]
        writable = a.decision.writable
        start = now
        if writable:
            until = (observed if anchored else now) + t.lease
            # a grant replaces the lease (set_lease writes one end): earlier grants end here
            me.intervals = [(s, min(e, start)) for s, e in me.intervals if s < start]
            if until > start:
                me.intervals.append((start, until))
            me.writable_until = until
        else:
            # a revoke ends every lease granted before
            me.intervals = [(s, min(e, now)) for s, e in me.intervals if s < now]
            me.writable_until = float("-inf")
        me.previous, me.streak, me.selected = writable, a.decision.healthy_streak, dict(a.decision.selected)
        row = HeartbeatRow(region, me.seq, a.hears, 0.0, a.relay, lag_s=(now - observed) if anchored else 0.0,
                           selected=a.decision.selected)
        for peer in regions:
            if peer != region and not cut(peer, region, now):
                push(now + delay[(region, peer)], "deliver", peer, Sent(row, now))
    return {r: _merge(a.intervals) for r, a in agents.items()}


def _merge(iv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def overlap_after(a: list[tuple[float, float]], b: list[tuple[float, float]], start: float, end: float) -> float:
    """Length of the last stretch, inside [start, end), in which both were writable."""
    total = 0.0
    for s1, e1 in a:
        for s2, e2 in b:
            s, e = max(s1, s2, start), min(e1, e2, end)
            if e > s:
                total = max(total, e - start)  # writable together until e: the window measured from the cut
    return total


def worst_window(regions: tuple[str, ...], iv: dict[str, list[tuple[float, float]]],
                 cuts: list[tuple[str, str, float, float]]) -> float:
    worst = 0.0
    for listener, speaker, start, end in cuts:
        worst = max(worst, overlap_after(iv[listener], iv[speaker], start, end))
    return worst


def bound(n: int, t: Timing) -> float:
    return detection_bound(n, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease, max_link_delay_s=t.max_delay)


timings = st.builds(
    lambda probe, stale_x, lease_x: (probe, stale_x, lease_x),
    st.sampled_from([0.5, 1.0, 5.0]), st.floats(min_value=0.0, max_value=2.0), st.floats(min_value=1.0, max_value=4.0))


def _accepted(n: int, probe: float, stale_x: float, lease_x: float) -> Timing:
    stale = min_stale_after(n, probe) * (1 + stale_x / 4)
    lease = max(probe + 0.6, probe * lease_x)
    t = Timing(probe, stale, lease)
    assert timing_problems(n, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    return t


@settings(max_examples=120, deadline=None)
@given(st.sampled_from([R3, R5]), timings, st.integers(0, 10_000), st.data())
def test_a_cut_link_is_writable_on_both_ends_no_longer_than_the_bound(regions, timing, seed, data) -> None:
    t = _accepted(len(regions), *timing)
    a, b = data.draw(st.sampled_from(list(permutations(regions, 2))), label="cut link")
    both_ways = data.draw(st.booleans(), label="both ways")
    start = 10 * t.stale
    end = start + 4 * bound(len(regions), t)
    cuts = [(a, b, start, end)] + ([(b, a, start, end)] if both_ways else [])
    iv = run(regions, t, seed=seed, horizon=end, cuts=cuts, jitter=0.2 * t.probe)
    assert worst_window(regions, iv, cuts) <= bound(len(regions), t) + 1e-9


@settings(max_examples=80, deadline=None)
@given(timings, st.integers(0, 10_000), st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=1.0, max_value=20.0))
def test_an_agent_paused_between_looking_and_writing_grants_nothing_past_the_bound(timing, seed, when, pause_x) -> None:
    t = _accepted(3, *timing)
    start = 10 * t.stale
    end = start + 40 * t.probe
    a, b = R3[0], R3[1]
    cuts = [(a, b, start, end), (b, a, start, end)]
    # each end pauses once, at some moment just before or after the cut, for up to 20 probes
    pauses = {r: (start - t.probe + when * 2 * t.probe, pause_x * t.probe) for r in (a, b)}
    iv = run(R3, t, seed=seed, horizon=end, cuts=cuts, pauses=pauses)
    assert worst_window(R3, iv, cuts) <= bound(3, t) + 1e-9


def test_a_lease_counted_from_the_write_outlives_the_bound_by_the_pause() -> None:
    # The failure this replaced, in the model: the pause right after a pre-cut observation extends
    # the lease by the pause. Anchored at the observation, the same run stays within the bound.
    t = Timing(probe=1.0, stale=3.0, lease=3.0)
    start, end = 30.0, 60.0
    cuts = [(R3[0], R3[2], start, end), (R3[2], R3[0], start, end)]
    worst_old = worst_new = 0.0
    for seed in range(20):
        for when in (start - 0.5, start + 1.0, start + 2.0):
            pauses = {R3[2]: (when, 8.0), R3[0]: (when, 8.0)}
            worst_old = max(worst_old, worst_window(R3, run(R3, t, seed=seed, horizon=end, cuts=cuts, pauses=pauses,
                                                            anchored=False), cuts))
            worst_new = max(worst_new, worst_window(R3, run(R3, t, seed=seed, horizon=end, cuts=cuts, pauses=pauses), cuts))
    assert worst_old > bound(3, t) + 1.0
    assert worst_new <= bound(3, t)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([R3, R5]), timings, st.integers(0, 10_000))
def test_a_healthy_mesh_never_fences_anyone_once_warm(regions, timing, seed) -> None:
    t = _accepted(len(regions), *timing)
    warm = 4 * t.stale
    iv = run(regions, t, seed=seed, horizon=warm + 20 * t.probe, cuts=[], jitter=min(0.1 * t.probe, 0.4))
    for r, spans in iv.items():
        covering = [s for s in spans if s[0] <= warm and s[1] >= warm + 19 * t.probe]
        assert covering, f"{r} was fenced in a healthy mesh: {spans}"


def test_the_review_timing_is_refused_and_would_split_without_the_uncertainty_rule() -> None:
    # probe 1 s, stale 1.5 s, lease 3 s: accepted before; relayed reports outlive stale_after.
    problems = timing_problems(3, probe_s=1.0, stale_after_s=1.5, lease_s=3.0)
    assert problems and "stale_after_seconds" in problems[0] and "at least 3" in problems[0]
    # Even so, the decision itself holds: no phase alignment gives a window past the bound.
    t = Timing(probe=1.0, stale=1.5, lease=3.0)
    start, end = 20.0, 50.0
    for seed in range(40):
        for a, b in permutations(R3, 2):
            cuts = [(a, b, start, end), (b, a, start, end)]
            iv = run(R3, t, seed=seed, horizon=end, cuts=cuts)
            assert worst_window(R3, iv, cuts) <= bound(3, t) + 1e-9, (seed, a, b)


@pytest.mark.parametrize("n,probe,stale,ok", [(3, 5, 15, True), (3, 0.5, 1.5, True), (5, 0.5, 1.5, False),
                                               (5, 0.5, 2.5, True), (3, 1, 1.5, False), (7, 1, 7, True)])
def test_timing_rule(n: int, probe: float, stale: float, ok: bool) -> None:
    assert (timing_problems(n, probe_s=probe, stale_after_s=stale, lease_s=3 * probe) == []) is ok


def test_the_model_sees_the_split_the_uncertainty_rule_prevents(monkeypatch: pytest.MonkeyPatch) -> None:
    # The model can fail: trusting the known edges alone, with no confirmation from the clique's
    # other members (the rules before), the review's timing leaves both ends of a cut writable for
    # the whole cut in some phase alignments.
    import replication.quorum as q

    monkeypatch.setattr(q, "_certain", lambda me, regions, chosen, possible, quorum: me in chosen)
    decide = q.decide_region
    monkeypatch.setattr(q, "decide_region", lambda *a, **k: decide(*a, **{**k, "selections": None}))
    t = Timing(probe=1.0, stale=1.5, lease=3.0)
    start, end = 20.0, 50.0
    windows = []
    for seed in range(20):
        cuts = [(R3[0], R3[1], start, end), (R3[1], R3[0], start, end)]
        windows.append(worst_window(R3, run(R3, t, seed=seed, horizon=end, cuts=cuts), cuts))
    assert max(windows) >= end - start - 1


def _apart_since(cuts: list[tuple[str, str, float, float]], a: str, b: str, at: float) -> float:
    """How long before ``at`` one of ``a``, ``b`` has not heard the other without a break (0: they replicate)."""
    return max((at - s for lsn, sp, s, e in cuts if {lsn, sp} == {a, b} and s <= at < e), default=0.0)


def _random_faults(seed: int) -> tuple[Timing, list[tuple[str, str, float, float]], dict[str, tuple[float, float]], int, float]:
    rng = random.Random(seed * 7919)
    probe = rng.choice([0.5, 1.0])
    t = Timing(probe=probe, stale=min_stale_after(3, probe) * (1 + rng.random() / 2),
               lease=(probe + 0.5) * (1.01 + rng.random() * 2))
    cuts = []
    for _ in range(rng.randint(1, 5)):
        a, b = rng.sample(R3, 2)
        s = rng.uniform(15, 60)
        e = s + rng.choice([rng.uniform(1, 6), rng.uniform(10, 60)])
        cuts.append((a, b, s, e))
        if rng.random() < 0.5:
            cuts.append((b, a, s, e))
    pauses = {rng.choice(R3): (rng.uniform(15, 60), rng.uniform(0.5, 8))} if rng.random() < 0.5 else {}
    return t, cuts, pauses, rng.choice([1, 1, 2, 3]), rng.choice([0, 0.15, 0.3]) * probe


@pytest.mark.parametrize("seed", range(200))
def test_no_two_regions_apart_for_longer_than_the_bound_are_both_writable_under_random_faults(seed: int) -> None:
    # Cuts one way and both, transient and long, a pause right after the look, unfence_after down to 1
    # (the validator's minimum): the random search that found the clique handover (red-team round 3);
    # without the unfence hold it finds windows past the bound (13 of these 200 seeds with the hold set to 0).
    t, cuts, pauses, unfence_after, jitter = _random_faults(seed)
    assert timing_problems(3, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    iv = run(R3, t, seed=seed, horizon=90, cuts=cuts, pauses=pauses, jitter=jitter, unfence_after=unfence_after)
    b = bound(3, t)
    for i, a in enumerate(R3):
        for c in R3[i + 1:]:
            for s1, e1 in iv[a]:
                for s2, e2 in iv[c]:
                    s, e = max(s1, s2), min(e1, e2)
                    assert not (e > s and _apart_since(cuts, a, c, s) > b), (a, c, s, e, b)
