"""Moving a live mesh: phase A to B, a region joining, a lost writer replaced, regions leaving.

One mechanism serves all of them, *join by replica promotion*: a new writer starts as a physical
copy (an RDS cross-region read replica) of a writer already in the mesh, and is promoted at a point
where nothing it needs can be missing:

1. every writer it will subscribe to creates a logical slot for it first (from then on, that
   writer's changes are kept for it);
2. every such writer's slot creation is followed by a watermark in its change stream, and the copy's
   source has applied all of them, and the copy has replayed its source past that point;
3. the copy is promoted, takes its own identity (name, index, fresh lease, its own slots), and
   subscribes to every writer from those slots. Changes that reached it both ways (in the physical
   copy and again through a slot) arrive twice and merge as duplicates: images are states.

Membership changes go through joint consensus (``replication.quorum.decide_region``): agents move
old -> joint(old, new) -> new, and every running agent must report the joint membership before any
runs the new one. Joining writers run an agent only once they are seeded and subscribed; leaving
writers stop writing when the joint membership starts and are dropped after their last changes
have reached every remaining writer.

``plan_*`` are pure and property-tested (``check_plan``: no order of steps lets a minority write, or
a writer take writes before it is seeded); ``Runner`` carries a plan out through a ``Backend`` (the
drills' local servers, or RDS and the stack's writers in ``ops``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional, Protocol

from replication.bootstrap import apply
from replication.model import ConflictPolicy, Node
from replication.sql import (
    ENDED_SQLSTATE,
    LEASE_TABLE,
    control_subscription_name,
    render_conflict_objects,
    render_lease,
    render_local_objects,
    render_publication,
    render_slots,
    render_subscriptions,
    slot_name,
    subscription_name,
)

__all__ = ["Backend", "PlanError", "Runner", "Step", "check_plan", "plan_a_to_b", "plan_join", "plan_replace",
           "plan_shrink"]


class PlanError(ValueError):
    """A lifecycle request that cannot be carried out safely (named, with what to do instead)."""


@dataclass(frozen=True)
class Step:
    """One step of a plan. ``members``/``next_members`` on a ``membership`` step: what every agent
    must run once it is done."""

    kind: str
    regions: tuple[str, ...]
    detail: str
    source: Optional[str] = None
    joining: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    next_members: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.kind} {', '.join(self.regions)}: {self.detail}"


def _membership(members: Sequence[str], nxt: Sequence[str] = ()) -> Step:
    joint = " | next " + ", ".join(nxt) if nxt else ""
    return Step("membership", tuple(members), f"agents run members {', '.join(members)}{joint}",
                members=tuple(members), next_members=tuple(nxt))


def _seed(joining: Sequence[str], source: str, peers: Sequence[str]) -> list[Step]:
    """Slots on every peer, catch-up, promotion, identity, subscriptions: joining writers seeded."""
    return [
        Step("slots", tuple(peers), f"create slots for {', '.join(joining)} (from here their changes are kept)",
             joining=tuple(joining)),
        Step("marker", tuple(peers), f"watermark after the slots; wait until {source} applied every one", source=source),
        Step("catch-up", tuple(joining), f"wait until the copies of {source} replayed past the markers", source=source),
        Step("promote", tuple(joining), f"promote the copies of {source}", source=source),
        Step("identify", tuple(joining), "own name, index and sequences; fenced lease; copied subscriptions dropped; "
                                         "own slots for every peer"),
        Step("subscribe", tuple(peers) + tuple(joining), "every writer subscribes to every other one"),
        Step("agents", tuple(joining), "start their fence agents"),
    ]


def plan_a_to_b(primary: str, standby: str, others: Sequence[str], order: Sequence[str]) -> list[Step]:
    """Phase A (``primary`` streaming to ``standby``) to a mesh of ``order`` (primary, standby and
    ``others``, each seeded as a copy of the primary). The primary keeps taking writes throughout:
    a transition lease bridges the install, then its agent runs it as the single member (its
    copies cannot write, so one writer cannot split), and the membership grows by a joint change."""
    members = tuple(order)
    if set(members) != {primary, standby, *others} or len(members) != len(set(members)):
        raise PlanError(f"the mesh {list(order)} must be exactly the primary, the standby and the new regions")
    if len(members) < 3 or len(members) % 2 == 0:
        raise PlanError(f"a mesh needs an odd number of writers, at least 3 (got {len(members)}): add or drop a region")
    return [
        Step("install", (primary,), "conflict objects, change log, publication and lease (a transition lease: "
                                    "the primary keeps writing)"),
        Step("agents", (primary,), "start its fence agent (the only member), which takes the transition lease over"),
        *_grow((primary,), tuple(r for r in members if r != primary), primary, order),
    ]


def _grow(members: Sequence[str], joining: Sequence[str], source: str, order: Sequence[str]) -> list[Step]:
    # Seeded first, with agents that run but are not members (so fenced); then old -> joint -> new.
    # Joint first would stop every write during the seeding unless a majority of the new list ran.
    new = tuple(r for r in order if r in set(members) | set(joining))
    return [
        *_seed(joining, source, members),
        _membership(members, new),
        _membership(new),
        Step("verify", new, "every replicated table equal on every writer"),
    ]


def plan_join(members: Sequence[str], joining: Sequence[str], source: str,
              order: Optional[Sequence[str]] = None) -> list[Step]:
    """Grow the mesh by ``joining`` writers, seeded from ``source``."""
    if source not in members:
        raise PlanError(f"the seed source {source} is not a member ({', '.join(members)})")
    if set(joining) & set(members):
        raise PlanError(f"{sorted(set(joining) & set(members))} already members: use replace for a lost writer")
    if not joining:
        raise PlanError("name at least one region to join")
    new = (*members, *joining)
    if len(new) % 2 == 0:
        raise PlanError(f"{len(new)} writers would have no strict majority in a clean split: join an even number "
                        "of regions at once")
    return _grow(members, joining, source, order or new)


def plan_replace(members: Sequence[str], lost: str, source: str) -> list[Step]:
    """Rebuild the writer of region ``lost`` (gone, its slots likely invalidated) from ``source``."""
    if lost not in members or source not in members or source == lost:
        raise PlanError(f"replace needs the lost writer and a different seed source among {', '.join(members)}")
    survivors = tuple(m for m in members if m != lost)
    return [
        Step("drop", survivors, f"drop the subscriptions to {lost} and its slots (lost with it)", source=lost),
        *_seed((lost,), source, survivors),
        Step("verify", tuple(members), "every replicated table equal on every writer"),
    ]


def plan_shrink(members: Sequence[str], leaving: Sequence[str]) -> list[Step]:
    """Take ``leaving`` writers out of the mesh, their last changes kept."""
    remaining = tuple(m for m in members if m not in leaving)
    if set(leaving) - set(members):
        raise PlanError(f"{sorted(set(leaving) - set(members))} are not members")
    if len(remaining) < 3 or len(remaining) % 2 == 0:
        raise PlanError(f"{len(remaining)} writers would remain; keep an odd number, at least 3")
    return [
        _membership(members, remaining),
        Step("drain", tuple(leaving), f"wait until their last changes reached {', '.join(remaining)}"),
        Step("stop-agents", tuple(leaving), "stop their fence agents (they stay fenced)"),
        # The new membership before the drop: while the old one still counts the leavers, a writer
        # that dropped its links to them first would be outvoted by a larger clique that still
        # includes them (their last reports stay fresh for a moment) and fence itself for a lease.
        _membership(remaining),
        Step("drop", remaining, f"drop the subscriptions to {', '.join(leaving)} and their slots"),
        Step("verify", remaining, "every replicated table equal on every writer"),
    ]


def check_plan(initial_members: Sequence[str], steps: Sequence[Step],
               agents_running: Optional[Sequence[str]] = None) -> Optional[str]:
    """Why ``steps`` could let a minority write or a writer write unseeded, or None.

    Membership moves only old -> joint -> new while agents run (before any agent runs, as in phase
    A, the first membership is free); a region votes only once seeded (promoted, identified and
    subscribed); a region runs an agent, and so can take writes, only once seeded; a leaving region
    is drained before it is dropped; a region is promoted only after slots exist on every writer it
    subscribes to and it caught up. ``agents_running`` defaults to the initial members.
    """
    current: tuple[tuple[str, ...], tuple[str, ...]] = (tuple(initial_members), ())
    seeded = set(initial_members)
    slotted: set[str] = set()
    marked: set[str] = set()
    caught_up: set[str] = set()
    promoted: set[str] = set()
    identified: set[str] = set()
    agents = set(initial_members if agents_running is None else agents_running)
    drained: set[str] = set()
    dropped: set[str] = set()
    for i, st in enumerate(steps):
        where = f"step {i + 1} ({st.kind})"
        if st.kind == "membership":
            old, nxt = current
            want = (st.members, st.next_members)
            ordered = ((not nxt and want[0] == old and bool(want[1])) or (bool(nxt) and want == (nxt, ()))
                       or want == current)
            if agents and not ordered:
                return f"{where}: membership {want} does not follow {current} (old -> joint -> new only)"
            for r in want[0]:
                if r not in seeded:
                    return f"{where}: {r} votes before it is seeded"
            if agents:  # a member without a running agent counts as silent: the change could stop writes
                missing = [r for r in (*want[0], *want[1]) if r not in agents]
                if missing:
                    return f"{where}: {sorted(set(missing))} vote without a running agent"
            current = want
        elif st.kind == "slots":
            slotted |= set(st.joining)
            marked.clear()  # a marker counts only if it follows the slots
        elif st.kind == "marker":
            if not slotted:
                return f"{where}: a marker before any slot exists marks nothing the copy needs"
            if st.source is not None:
                marked.add(st.source)
        elif st.kind == "catch-up":
            if st.source not in marked:
                return f"{where}: catching up with {st.source} before it applied every writer's changes up to the slots"
            caught_up |= set(st.regions)
        elif st.kind == "promote":
            for r in st.regions:
                if r not in caught_up or r not in slotted:
                    return f"{where}: {r} promoted before its slots exist everywhere and it caught up"
            promoted |= set(st.regions)
        elif st.kind == "identify":
            if not set(st.regions) <= promoted:
                return f"{where}: identify before promotion"
            identified |= set(st.regions)
        elif st.kind == "subscribe":
            seeded |= set(st.regions) & identified
        elif st.kind == "agents":
            unseeded = [r for r in st.regions if r not in seeded]
            if unseeded:
                return f"{where}: {unseeded} run an agent (and could take writes) before they are seeded"
            agents |= set(st.regions)
        elif st.kind == "drain":
            old, nxt = current
            if not nxt or any(r in nxt for r in st.regions):
                return f"{where}: draining {list(st.regions)} while they can still be voted writable"
            drained |= set(st.regions)
        elif st.kind == "drop" and st.source is not None:
            seeded.discard(st.source)  # a lost writer: it votes again only once rebuilt and seeded
            slotted.discard(st.source)  # and whatever slots were made for it are gone
        elif st.kind == "drop" and st.source is None:
            leaving = (set(initial_members) | set(current[0]) | set(current[1])) - set(st.regions)
            if leaving - drained:
                return f"{where}: dropping {sorted(leaving - drained)} before their last changes arrived"
            dropped |= leaving
        elif st.kind == "stop-agents":
            agents -= set(st.regions)
    if current[1]:
        return f"the plan ends in the middle of a membership change ({current}); end with the new membership alone"
    kept = sorted(set(initial_members) - set(current[0]) - dropped)
    if kept:
        return f"the plan ends with the slots of {kept}, which left, still kept on every writer (their WAL grows)"
    idle = [r for r in current[0] if r not in agents]
    if idle:
        return f"the plan ends with members {idle} whose agents do not run: they stay fenced"
    return None


# -- carrying a plan out -------------------------------------------------------------------------


class Backend(Protocol):
    """What a runner needs from where the writers live (the drills' servers, or RDS)."""

    def node(self, region: str) -> Node: ...
    def connect(self, region: str) -> Any: ...
    def conninfo(self, subscriber: str, publisher: str) -> str: ...
    def replay_lsn(self, region: str) -> Optional[str]: ...
    def promote(self, region: str) -> None: ...
    def after_identify(self, region: str) -> None: ...
    def start_agents(self, regions: Sequence[str], members: Sequence[str], next_members: Sequence[str]) -> None: ...
    def stop_agents(self, regions: Sequence[str]) -> None: ...
    def set_membership(self, members: Sequence[str], next_members: Sequence[str]) -> None: ...


@dataclass
class Runner:
    backend: Backend
    policy: ConflictPolicy
    order: Sequence[str]                      # every region the plan involves, in configured order
    log: Callable[[dict[str, Any]], None] = lambda rec: None
    timeout_s: float = 120.0
    transition_lease_s: float = 600.0
    #: After every agent reports a membership, how long it must keep reporting it (an invocation
    #: started just before a deploy may still run the old one for a moment).
    membership_settle_s: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)

    def nodes(self, regions: Sequence[str]) -> list[Node]:
        return [self.backend.node(r) for r in regions]

    def _sql(self, region: str, statements: Sequence[str]) -> None:
        with self.backend.connect(region) as c:
            apply(c, statements)

    def _one(self, region: str, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.backend.connect(region) as c:
            row = c.execute(sql, params).fetchone()
        return row[0] if row else None

    def _wait(self, what: str, check: Callable[[], bool]) -> float:
        t0 = time.monotonic()
        while not check():
            if time.monotonic() - t0 > self.timeout_s:
                raise TimeoutError(f"{what}: not done after {self.timeout_s:g} s")
            time.sleep(0.1)
        return time.monotonic() - t0

    def run(self, steps: Sequence[Step], members: Sequence[str],
            agents_running: Optional[Sequence[str]] = None, *, start_at: int = 0,
            done: Callable[[int, dict[str, Any]], None] = lambda i, state: None) -> dict[str, Any]:
        """Carry ``steps`` out, from ``start_at`` (a resumed run: ``self.state`` restored by the caller);
        ``done(i, state)`` after each step, so a caller can persist progress."""
        problem = check_plan(members, steps, agents_running)
        if problem:
            raise PlanError(problem)
        self.state.setdefault("agents", set(members if agents_running is None else agents_running))
        current: tuple[tuple[str, ...], tuple[str, ...]] = (tuple(members), ())
        for i, st in enumerate(steps):
            if i < start_at:
                if st.kind == "membership":
                    current = (st.members, st.next_members)
                continue
            t0 = time.monotonic()
            getattr(self, "_" + st.kind.replace("-", "_"))(st, current)
            if st.kind == "membership":
                current = (st.members, st.next_members)
            self.log({"step": st.kind, "regions": list(st.regions), "detail": st.detail,
                      "seconds": round(time.monotonic() - t0, 3)})
            done(i, self.state)
        return self.state

    # -- steps ---------------------------------------------------------------------------------

    def _install(self, st: Step, current: Any) -> None:
        (primary,) = st.regions
        everyone = self.nodes(self.order)
        node = self.backend.node(primary)
        statements = render_conflict_objects(self.policy, node, everyone, transition_lease_s=self.transition_lease_s)
        self._sql(primary, statements + render_publication(self.policy))

    def _slots(self, st: Step, current: Any) -> None:
        for peer in st.regions:
            node = self.backend.node(peer)
            self._sql(peer, render_slots(node, [node, *self.nodes(st.joining)]))

    def _marker(self, st: Step, current: Any) -> None:
        source = st.source
        marks: dict[str, float] = {}
        for peer in st.regions:
            self._emit_watermark(peer)  # one the fence ended is asked again by _has_applied, until one claims past the mark
            with self.backend.connect(peer) as c:
                marks[peer] = float(c.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
        assert source is not None
        for peer, at in marks.items():
            if peer == source:
                continue
            self._wait(f"{source} applies {peer}'s changes up to the slots", partial(self._has_applied, source, peer, at))
        self.state["marker_lsn"] = self._one(source, "SELECT pg_current_wal_lsn()::text")

    def _catch_up(self, st: Step, current: Any) -> None:
        target = self.state.get("marker_lsn") or self._one(st.source or "", "SELECT pg_current_wal_lsn()::text")
        for r in st.regions:
            self._wait(f"{r} replays {st.source} past {target}", partial(self._replayed, r, target))

    def _has_applied(self, region: str, origin: str, at: float) -> bool:
        """Whether ``region`` has applied every transaction ``origin`` committed before ``at`` (``origin``'s
        clock): it merged a watermark of ``origin`` that claims ``at`` or later.

        A watermark claims no later than the start of the oldest write still open on its writer, so the
        one the marker emitted may claim less while writes go on: ``origin`` emits another each time
        this is asked, until one claims past ``at`` (every transaction begun before ``at`` has ended,
        and committed before it). No slack: an older watermark, merged before the slots existed, says
        nothing of what ``origin`` committed between it and the slots, and a writer seeded on it would
        miss those transactions for good (the lifecycle drill lost one such row on the rebuilt writer
        while a watermark one second older was accepted)."""
        if not self._emit_watermark(origin):
            return False
        return bool((self._one(region, "SELECT extract(epoch FROM at)::float8 FROM fraiseql_repl.applied WHERE origin = %s",
                               (origin,)) or 0.0) >= at)

    def _emit_watermark(self, origin: str) -> bool:
        """Whether ``origin`` emitted a watermark. A leaving writer is fenced from the membership
        step on, and its agent ends every transaction that writes to the change log
        (``fraiseql_repl.end_writes``), an emission it catches included: that one is asked again."""
        try:
            with self.backend.connect(origin) as c:
                c.execute("SELECT fraiseql_repl.emit_watermark()")
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != ENDED_SQLSTATE:
                raise
            self.log({"step": "watermark", "region": origin, "detail": "ended by the fence agent; asked again",
                      "seconds": 0.0})
            return False
        return True

    def _replayed(self, region: str, lsn: str) -> bool:
        got = self.backend.replay_lsn(region)
        return got is not None and _lsn(got) >= _lsn(lsn)

    def _promote(self, st: Step, current: Any) -> None:
        for r in st.regions:
            t0 = time.monotonic()
            self.backend.promote(r)
            self.state.setdefault("promoted_at", {})[r] = time.time()
            self.log({"step": "promote", "region": r, "seconds": round(time.monotonic() - t0, 3)})

    def _identify(self, st: Step, current: Any) -> None:
        everyone = self.nodes(self.order)
        for r in st.regions:
            node = self.backend.node(r)
            with self.backend.connect(r) as c:
                # Fenced first: the copy carries its source's lease.
                apply(c, render_lease(None, f"{r}: joining, not yet voted writable"))
                # Its source's subscriptions came with the copy: they would consume the source's slots.
                for (sub,) in c.execute("SELECT subname FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d "
                                        "ON d.oid = s.subdbid AND d.datname = current_database()").fetchall():
                    c.execute(f"ALTER SUBSCRIPTION {sub} DISABLE")
                    c.execute(f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")
                    c.execute(f"DROP SUBSCRIPTION {sub}")
                c.execute("DELETE FROM fraiseql_repl.changes")  # the source's, read from WAL long ago
                c.execute("UPDATE fraiseql_repl.agent_state SET writable = NULL, healthy_streak = 0, traffic_out = false")
                apply(c, render_local_objects(node, everyone, self.policy))
            self.backend.after_identify(r)

    def _subscribe(self, st: Step, current: Any) -> None:
        everyone = self.nodes(self.order)
        for r in st.regions:
            node = self.backend.node(r)
            peers = [n for n in everyone if n.name in self._live()]
            self._sql(r, render_subscriptions(node, peers, partial(self._conninfo, r)))

    def _conninfo(self, region: str, peer: Node) -> str:
        """How ``region`` connects to ``peer`` for its subscription."""
        return self.backend.conninfo(region, peer.name)

    def _live(self) -> set[str]:
        return set(self.state.get("live", self.order))

    def _agents(self, st: Step, current: Any) -> None:
        old, nxt = current
        self.backend.start_agents(st.regions, old, nxt)
        self.state["agents"] |= set(st.regions)
        for r in st.regions:  # running: its heartbeat is on its own writer
            self._wait(f"{r}'s agent beats", partial(self._beats, r))

    def _beats(self, region: str) -> bool:
        """Whether ``region``'s agent beat in the last 5 seconds (its heartbeat is on its own writer)."""
        return bool(self._one(region, "SELECT count(*) FROM fraiseql_repl.heartbeats WHERE node = %s AND received_at > "
                              "clock_timestamp() - interval '5 seconds'", (region,)) == 1)

    def _membership(self, st: Step, current: Any) -> None:
        self.backend.set_membership(st.members, st.next_members)
        want = ",".join(st.members) + ("|" + ",".join(st.next_members) if st.next_members else "")
        voters = [r for r in self.order if r in set(st.members) | set(st.next_members) and r in self._agents_running()]
        # Every running agent must report the membership before the next step.
        def reported(r: str) -> bool:
            return bool(self._one(r, "SELECT membership FROM fraiseql_repl.heartbeats WHERE node = %s", (r,)) == want)

        for r in voters:
            self._wait(f"{r}'s agent runs {want}", partial(reported, r))
        if self.membership_settle_s > 0:
            time.sleep(self.membership_settle_s)
            for r in voters:
                self._wait(f"{r}'s agent still runs {want}", partial(reported, r))

    def _agents_running(self) -> set[str]:
        return set(self.state.get("agents", ()))

    def _drain(self, st: Step, current: Any) -> None:
        old, nxt = current
        for leaving in st.regions:
            self._wait(f"{leaving} emits a watermark", partial(self._emit_watermark, leaving))
            at = float(self._one(leaving, "SELECT extract(epoch FROM clock_timestamp())"))
            for r in nxt:
                self._wait(f"{r} has {leaving}'s last changes", partial(self._has_applied, r, leaving, at))

    def _stop_agents(self, st: Step, current: Any) -> None:
        self.backend.stop_agents(st.regions)
        for r in st.regions:
            with self.backend.connect(r) as c:
                apply(c, render_lease(None, f"{r}: left the mesh"))
        self.state["agents"] = self._agents_running() - set(st.regions)

    def _drop(self, st: Step, current: Any) -> None:
        gone = [st.source] if st.source else [r for r in self.order if r not in st.regions]
        for r in st.regions:
            me = self.backend.node(r)
            with self.backend.connect(r) as c:
                for g in gone:
                    other = Node(name=g, region=g, host="")
                    for sub in (subscription_name(me, other), control_subscription_name(me, other)):
                        if c.execute("SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = %s", (sub,)).fetchone():
                            c.execute(f"ALTER SUBSCRIPTION {sub} DISABLE")
                            c.execute(f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")
                            c.execute(f"DROP SUBSCRIPTION {sub}")
                    for slot in (slot_name(other, me), control_subscription_name(other, me)):
                        c.execute("SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots "
                                  "WHERE slot_name = %s AND NOT active", (slot,))
        if not st.source:
            self.state["live"] = list(st.regions)

    def _hears(self, region: str, peer: str, since: Any) -> bool:
        """Whether ``region`` received a heartbeat of ``peer``'s after ``since`` (its clock): the control link works."""
        return bool(self._one(region, "SELECT count(*) FROM fraiseql_repl.heartbeats WHERE node = %s AND received_at > %s",
                              (peer, since)) == 1)

    def _control_link(self, region: str, peer: str) -> str:
        """What ``region``'s control subscription to ``peer`` looks like, for an error message."""
        sub = control_subscription_name(self.backend.node(region), self.backend.node(peer))
        with self.backend.connect(region) as c:
            row = c.execute("SELECT s.subenabled, coalesce(ss.apply_error_count, 0) FROM pg_catalog.pg_subscription s "
                            "LEFT JOIN pg_catalog.pg_stat_subscription_stats ss ON ss.subid = s.oid WHERE s.subname = %s",
                            (sub,)).fetchone()
        if row is None:
            return f"subscription {sub} missing"
        return f"subscription {sub} {'enabled' if row[0] else 'disabled'}, {row[1]} failed applies (the server log says why)"

    def _verify(self, st: Step, current: Any) -> None:
        from replication.verify import verify  # noqa: PLC0415

        # Every writer hears every other before the change counts as done: equal data with a
        # control link stopped (a writer that never hears a peer) would leave that peer fenced.
        beating = [r for r in st.regions if r in self._agents_running()]
        for r in beating:
            since = self._one(r, "SELECT clock_timestamp()")
            for p in beating:
                if p == r:
                    continue
                try:
                    self._wait(f"{r} hears {p}", partial(self._hears, r, p, since))
                except TimeoutError as exc:
                    raise TimeoutError(f"{exc}: {self._control_link(r, p)}") from exc
        conns = {r: self.backend.connect(r) for r in st.regions}
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:
                report = verify(conns, buckets=64, margin_s=1.0)
                if report.diverged_rows == 0 or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        finally:
            for c in conns.values():
                c.close()
        self.state["verify"] = {"diverged_rows": report.diverged_rows, "tables": report.tables}
        if report.diverged_rows:
            raise RuntimeError(f"writers differ on {report.diverged_rows} rows after the change: "
                               + json.dumps([d.summary() for d in report.divergences][:5], default=str))


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lease_state(conn: Any) -> tuple[bool, str]:
    """(writable now, who granted the lease)."""
    row = conn.execute(f"SELECT clock_timestamp() + interval '100 ms' < valid_until, granted_by FROM {LEASE_TABLE}").fetchone()
    return bool(row[0]), str(row[1])


