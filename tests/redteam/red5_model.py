"""The fence in time, with the faults round 5 attacks: the repo's timing model
(``tests/test_quorum_timing.run``) extended, still running the real ``quorum.assess`` (and through it
the real ``decide_region``) on a simulated clock.

What it adds to ``tests/test_quorum_timing.run``:

* ``data_cuts`` (listener, speaker, from, to): the *data* link stops delivering while the control
  channel still does. The listener does not hear the speaker (``links_healthy`` leaves it out, as
  ``replication.agent`` does for a silent data link) but still receives its heartbeats. The two
  cannot replicate to each other: counted as apart, like a cut.
* ``flickers`` (listener, speaker, from, to): the listener does not hear the speaker for a moment (an
  apply error: ``replication.agent._data_links`` counts the link unhealthy for ``stale_after`` after
  one) while data still replicates: *not* counted as apart.
* ``control_off`` region -> [(from, to)]: the routing control is off (an operator, ``region-out``).
* ``lists`` region -> [(at, regions, next_regions)]: the membership each agent runs from ``at`` on
  (a rolling configuration change: agents switch at different times). A switch starts a new agent
  invocation (the deploy hands the loop over), which is *warming* for ``stale + probe``.
* ``clock_steps`` region -> [(at, delta)]: that writer's clock steps by ``delta`` at ``at``; the agent
  and the lease check read that clock (the lease's end, the hold, the ages of rows received).
* the log keeps, per probe, the ``_eligible`` flag the agent used to publish (``decision.eligible or
  writable or (warming and leased)``): the circular waiver that read it is gone, and the agent no
  longer publishes it, but the log shows what a region would have said.

Every heartbeat goes out with the lease in one commit (as the agent's one message does). Writable
intervals are in true time: from the commit of a grant until the lease's end on the writer's own
clock, or the next commit (a revoke, or a grant that replaces it).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any, Optional

from replication.quorum import HeartbeatRow, assess, detection_bound, unfence_hold
from tests.test_quorum_timing import Timing

Cut = tuple[str, str, float, float]
Lists = tuple[tuple[str, ...], Optional[tuple[str, ...]]]


@dataclass
class Faults:
    cuts: list[Cut] = field(default_factory=list)
    data_cuts: list[Cut] = field(default_factory=list)
    flickers: list[Cut] = field(default_factory=list)
    pauses: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    control_off: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lists: dict[str, list[tuple[float, tuple[str, ...], Optional[tuple[str, ...]]]]] = field(default_factory=dict)
    clock_steps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


@dataclass
class _Sent:
    row: HeartbeatRow
    published_local: float  # on the sender's clock (unused: ages come from arrival and lag)


@dataclass
class _Agent:
    region: str
    phase: float
    held: dict[str, tuple[_Sent, float]] = field(default_factory=dict)  # peer -> (row, arrived at, true time)
    lease_until_local: float = float("-inf")
    previous: Optional[bool] = None
    streak: int = 0
    selected: dict = field(default_factory=dict)
    eligible_since: Optional[float] = None
    seq: int = 0
    started: float = float("-inf")  # the current invocation's start (true time)
    lists: Optional[Lists] = None
    grants: list[tuple[float, float, float]] = field(default_factory=list)  # (from, until_local, revoked_at)
    log: list[tuple[Any, ...]] = field(default_factory=list)


class Clock:
    """A writer's clock: true time plus the steps taken so far."""

    def __init__(self, steps: Sequence[tuple[float, float]] = ()) -> None:
        self.steps = sorted(steps)

    def __call__(self, t: float) -> float:
        return t + sum(d for at, d in self.steps if at <= t)

    def first_at_or_after(self, start: float, local: float, horizon: float) -> float:
        """The first true time >= start at which this clock reads >= ``local`` (horizon if never)."""
        points = [start] + [at for at, _ in self.steps if at > start] + [horizon]
        for i, p in enumerate(points[:-1]):
            nxt = points[i + 1]
            if self(p) >= local:
                return p
            # within [p, nxt) the clock runs at rate 1 from self(p)
            t = p + (local - self(p))
            if t < nxt:
                return t
        return horizon


def _in(windows: Sequence[tuple[float, float]], at: float) -> bool:
    return any(s <= at < e for s, e in windows)


def _hit(cuts: Sequence[Cut], listener: str, speaker: str, at: float) -> bool:
    return any(c[0] == listener and c[1] == speaker and c[2] <= at < c[3] for c in cuts)


def run(regions: tuple[str, ...], t: Timing, faults: Faults, *, seed: int, horizon: float, unfence_after: int = 1,
        jitter: float = 0.0, hold: Optional[float] = None, phases: Optional[dict[str, float]] = None,
        delays: Optional[dict[tuple[str, str], float]] = None, warming_flag: bool = True,
        ) -> dict[str, list[tuple[float, float]]]:
    """Simulate; return each region's writable intervals (true time)."""
    sim = _Simulation(regions, t, faults, seed=seed, unfence_after=unfence_after, jitter=jitter, hold=hold,
                      phases=phases, delays=delays, warming_flag=warming_flag)
    sim.until(horizon)
    run.agents = sim.agents  # type: ignore[attr-defined]  # for printing a schedule's decisions
    return sim.writable(horizon)


class _Simulation:
    """The event loop: each agent probes (runs the real ``assess``) then commits its one message;
    heartbeats are delivered to its peers after the link's delay unless a cut drops them."""

    def __init__(self, regions: tuple[str, ...], t: Timing, faults: Faults, *, seed: int, unfence_after: int,
                 jitter: float, hold: Optional[float], phases: Optional[dict[str, float]],
                 delays: Optional[dict[tuple[str, str], float]], warming_flag: bool) -> None:
        self.regions, self.t, self.faults = regions, t, faults
        self.unfence_after, self.jitter, self.warming_flag = unfence_after, jitter, warming_flag
        self.rng = rng = random.Random(seed)
        self.delay = {(a, b): rng.uniform(0.2, 1.0) * t.max_delay for a, b in permutations(regions, 2)}
        self.delay.update(delays or {})
        self.agents = {r: _Agent(r, rng.uniform(0, t.probe)) for r in regions}
        for r, ph in (phases or {}).items():
            self.agents[r].phase = ph
        self.clocks = {r: Clock(faults.clock_steps.get(r, ())) for r in regions}
        self.pauses = {r: sorted(v) for r, v in faults.pauses.items()}
        self.hold_s = unfence_hold(probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) if hold is None else hold
        self.events: list[tuple[float, int, str, str, object]] = []
        self.n = 0

    def push(self, at: float, kind: str, region: str, payload: object = None) -> None:
        self.n += 1
        heapq.heappush(self.events, (at, self.n, kind, region, payload))

    def lists_at(self, region: str, at: float) -> Lists:
        cur: Lists = (self.regions, None)
        for since, regs, nxt in sorted(self.faults.lists.get(region, []), key=lambda x: x[0]):
            if since <= at:
                cur = (tuple(regs), tuple(nxt) if nxt else None)
        return cur

    def until(self, horizon: float) -> None:
        for a in self.agents.values():
            self.push(a.phase, "probe", a.region)
        while self.events:
            now, _, kind, region, payload = heapq.heappop(self.events)
            if now > horizon:
                break
            if kind == "deliver":
                sent = payload
                assert isinstance(sent, _Sent)
                self.agents[region].held[sent.row.node] = (sent, now)
            elif kind == "probe":
                self.probe(region, now)
            else:
                self.commit(region, now, payload)

    def probe(self, region: str, now: float) -> None:
        """The agent reads what it holds and decides (the real ``assess``); its commit lands a moment later."""
        me, clock, t, faults = self.agents[region], self.clocks[region], self.t, self.faults
        lists = self.lists_at(region, now)
        if lists != me.lists:
            # a new configuration: the deploy starts a new invocation, which is warming
            me.lists, me.started = lists, now
        regs, nxt = lists
        local = clock(now)
        rows = [HeartbeatRow(p, s.row.seq, s.row.hears, local - clock(at), s.row.relay, s.row.lag_s, s.row.selected)
                for p, (s, at) in me.held.items()]
        me.seq += 1
        leased = me.lease_until_local > local
        lapsed = me.previous is True and not leased
        everyone = list(regs) + [r for r in (nxt or ()) if r not in regs]
        healthy = [p for p in everyone if p != region and p in self.regions
                   and not _hit(faults.data_cuts, region, p, now) and not _hit(faults.flickers, region, p, now)]
        a = assess(region, regs, rows=[r for r in rows if r.node in everyone], links_healthy=healthy, seq=me.seq,
                   stale_after_s=t.stale, control_on=not _in(faults.control_off.get(region, []), now),
                   previous_writable=False if lapsed else me.previous, previous_streak=0 if lapsed else me.streak,
                   unfence_after=self.unfence_after, next_regions=nxt, previous_selected=me.selected, observed_s=local,
                   previous_eligible_since=me.eligible_since, unfence_hold_s=self.hold_s)
        me.eligible_since = a.decision.eligible_since
        pause = 0.0
        mine = self.pauses.get(region, [])
        if mine and now >= mine[0][0]:
            pause = mine.pop(0)[1]
        warming = now - me.started < t.stale + t.probe
        done = now + self.rng.uniform(0.005, 0.05) + pause
        self.push(done, "commit", region, (now, local, a, leased, warming))
        self.push(max(now + t.probe, done + 0.005) + self.rng.uniform(0, self.jitter), "probe", region)

    def commit(self, region: str, now: float, payload: object) -> None:
        """The agent's one message: state, heartbeat, lease; the heartbeat goes to every peer no cut hides it from."""
        me, clock = self.agents[region], self.clocks[region]
        observed, observed_local, a, leased, warming = payload  # type: ignore[misc]
        d = a.decision
        writable = d.writable
        for i, (s, u, rv) in enumerate(me.grants):
            if rv == float("inf"):
                me.grants[i] = (s, u, now)  # a new lease value replaces the old one at this commit
        if writable:
            me.lease_until_local = observed_local + self.t.lease
            me.grants.append((now, me.lease_until_local, float("inf")))
        else:
            me.lease_until_local = float("-inf")
        me.previous, me.streak, me.selected = writable, d.healthy_streak, dict(d.selected)
        flag = bool(d.eligible or writable or (self.warming_flag and warming and leased))
        me.log.append((round(observed, 3), d.reason, sorted(d.majority), flag, round(now, 3)))
        row = HeartbeatRow(region, me.seq, a.hears, 0.0, a.relay, lag_s=clock(now) - observed_local,
                           selected=d.selected)
        for peer in self.regions:
            if peer != region and not _hit(self.faults.cuts, peer, region, now):
                self.push(now + self.delay[(region, peer)], "deliver", peer, _Sent(row, clock(now)))

    def writable(self, horizon: float) -> dict[str, list[tuple[float, float]]]:
        """Each region's writable intervals: from a grant's commit to the lease's end on its own clock,
        or the commit that replaced it."""
        out: dict[str, list[tuple[float, float]]] = {}
        for r, ag in self.agents.items():
            iv = []
            for s, u, rv in ag.grants:
                e = min(self.clocks[r].first_at_or_after(s, u, horizon), rv, horizon)
                if e > s:
                    iv.append((s, e))
            out[r] = _merge(iv)
        return out


def _merge(iv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def apart_since(faults: Faults, a: str, b: str, at: float) -> float:
    """How long before ``at`` ``a`` and ``b`` have not replicated to each other without a break
    (a heartbeat cut or a data cut, either direction; a flicker does not count)."""
    return max((at - s for lsn, sp, s, e in faults.cuts + faults.data_cuts if {lsn, sp} == {a, b} and s <= at < e),
               default=0.0)


def bound(n: int, t: Timing, clock_step: float = 0.0) -> float:
    return detection_bound(n, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease, max_link_delay_s=t.max_delay,
                           clock_step_s=clock_step)


def violations(regions: Sequence[str], iv: dict[str, list[tuple[float, float]]], faults: Faults, b: float,
               ) -> list[tuple[float, str, str, float, float]]:
    """Every stretch in which two regions apart for longer than ``b`` are both writable:
    (length, a, c, from, to)."""
    out = []
    regions = list(regions)
    for i, a in enumerate(regions):
        for c in regions[i + 1:]:
            cuts = sorted({(s, e) for lsn, sp, s, e in faults.cuts + faults.data_cuts if {lsn, sp} == {a, c}})
            for s1, e1 in iv[a]:
                for s2, e2 in iv[c]:
                    s, e = max(s1, s2), min(e1, e2)
                    for cs, ce in cuts:
                        # apart for longer than b: inside one cut, more than b after it began
                        lo, hi = max(s, cs + b), min(e, ce)
                        if hi > lo:
                            out.append((hi - lo, a, c, lo, hi))
    return sorted(out, reverse=True)


def describe(iv: dict[str, list[tuple[float, float]]], after: float = 0.0) -> str:
    return "; ".join(f"{r}: {[(round(x, 2), round(y, 2)) for x, y in v if y > after]}" for r, v in iv.items())
