"""The fence agent's probe on three real PostgreSQL 18 writers, each agent with only its own writer.

Every region's probe runs on its own connection and sees only what replication delivered to its
writer; links are cut with the delay proxies. Probes are driven round-robin by the test (the
agent's loop does the same on a timer), so each case is deterministic up to replication delay.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent import ProbeResult, Settings, probe
from replication.sql import FENCE_SQLSTATE

EAST, WEST, EU = REGIONS
PROBE_S = 0.25
STALE_S = 1.0
LEASE_S = 0.8


def settings(region: str) -> Settings:
    return Settings(region=region, regions=REGIONS, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S,
                    unfence_after=3, db_host="127.0.0.1", db_port=0, db_name="postgres", db_sslmode="disable",
                    db_secret_arn="unused")


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False, leases=False) as running:
        yield running


@pytest.fixture
def agents(m: Mesh) -> Iterator[dict[str, psycopg.Connection]]:
    conns = {r: m.connect(r) for r in REGIONS}
    yield conns
    m.heal()
    for r in REGIONS:  # back to healthy for the next case
        conns[r].execute("UPDATE fraiseql_repl.agent_state SET writable = NULL, healthy_streak = 0")
    for c in conns.values():
        c.close()


def rounds(conns: dict[str, psycopg.Connection], n: int, *, only: tuple[str, ...] = REGIONS,
           control: dict[str, bool] | None = None) -> dict[str, ProbeResult]:
    last: dict[str, ProbeResult] = {}
    for _ in range(n):
        for r in only:
            last[r] = probe(conns[r], settings(r), control_on=(control or {}).get(r))
        time.sleep(PROBE_S)
    return last


def warm(conns: dict[str, psycopg.Connection], timeout: float = 30.0) -> dict[str, ProbeResult]:
    """Probe rounds until every region is writable (a fenced region serves the unfence hold first)."""
    deadline = time.monotonic() + timeout
    while True:
        last = rounds(conns, 1)
        if all(res.decision.writable for res in last.values()) or time.monotonic() > deadline:
            return last


_keys = itertools.count(1)


def can_write(m: Mesh, region: str) -> bool:
    try:
        key = (REGIONS.index(region) + 1) * 1_000_000 + next(_keys)  # disjoint per region
        m.execute(region, "INSERT INTO items (id, v) VALUES (%s, 'w')", (key,))
        return True
    except psycopg.Error as e:
        assert e.sqlstate == FENCE_SQLSTATE, e
        return False


def cut(m: Mesh, a: str, b: str) -> None:
    m.links[(a, b)].partition()
    m.links[(b, a)].partition()


def test_a_new_mesh_starts_fenced_and_every_agent_grants_its_own_lease(m: Mesh, agents) -> None:
    assert not any(can_write(m, r) for r in REGIONS)  # fail closed before any agent ran
    last = warm(agents)
    assert all(res.decision.writable for res in last.values())
    assert {res.decision.majority for res in last.values()} == {frozenset(REGIONS)}
    # Each region takes a write while its agent keeps renewing (a 0.8 s lease can run out between a
    # round and a write on a loaded machine: so, a round before each try).
    wrote: set[str] = set()
    deadline = time.monotonic() + 30
    while wrote != set(REGIONS) and time.monotonic() < deadline:
        rounds(agents, 1)
        wrote |= {r for r in REGIONS if r not in wrote and can_write(m, r)}
    assert wrote == set(REGIONS), f"never took a write: {set(REGIONS) - wrote}"
    relay = m.execute(EAST, "SELECT relay FROM fraiseql_repl.heartbeats WHERE node = %s", (WEST,))[0][0]
    assert set(relay) == {EAST, EU}  # west tells east what it knows of eu (and of east itself)


def test_a_single_cut_link_fences_exactly_one_end_and_every_agent_agrees(m: Mesh, agents) -> None:
    warm(agents)
    cut(m, WEST, EU)  # the non-transitive case: both still reach east
    last = rounds(agents, 12)
    writable = {r for r, res in last.items() if res.decision.writable}
    assert EAST in writable and len(writable & {WEST, EU}) == 1, writable
    assert len({res.decision.majority for res in last.values()}) == 1  # one choice, made everywhere
    loser = ({WEST, EU} - writable).pop()
    assert last[loser].decision.reason == "other_majority_selected"
    assert not can_write(m, loser) and all(can_write(m, r) for r in writable)


def test_one_way_loss_is_learned_through_the_peer_and_fences_one_end(m: Mesh, agents) -> None:
    warm(agents)
    m.links[(EU, WEST)].partition()  # eu stops hearing west; west still hears eu
    last = rounds(agents, 14)
    writable = {r for r, res in last.items() if res.decision.writable}
    assert not {WEST, EU} <= writable, writable
    assert EAST in writable


def test_an_isolated_region_fences_and_unfences_only_after_three_healthy_probes(m: Mesh, agents) -> None:
    # (After the heal every region is in the clique, so the unfence hold is waived: nobody outside it
    # can hold a lease. The hold itself: tests/test_quorum.py and the timing model.)
    warm(agents)
    m.partition(EU)
    last = rounds(agents, 8)
    assert last[EU].decision.reason == "no_quorum" and not can_write(m, EU)
    assert last[EAST].decision.writable and last[EAST].decision.quorum_reduced
    m.heal()
    time.sleep(STALE_S / 2)
    streaks = []
    for _ in range(40):
        res = rounds(agents, 1)[EU]
        streaks.append((res.decision.writable, res.decision.healthy_streak))
        if res.decision.writable:
            break
    first_eligible = next(i for i, (_, s) in enumerate(streaks) if s >= 1)
    assert [w for w, _ in streaks[first_eligible:]] == [False, False, True]  # hysteresis


def test_hysteresis_survives_a_new_agent_process(m: Mesh, agents) -> None:
    warm(agents)
    m.partition(EU)
    rounds(agents, 8)
    m.heal()
    time.sleep(STALE_S / 2)
    rounds(agents, 1, only=(EAST, WEST))
    with m.connect(EU) as fresh:  # a new invocation: nothing in memory, everything in the database
        res = probe(fresh, settings(EU), control_on=None)
    # not writable at once: still stabilizing, or its peers have not yet confirmed the clique with it
    assert not res.decision.writable and res.decision.reason in ("stabilizing", "no_quorum", "unconfirmed")


def test_an_agent_that_stops_fences_its_region_within_one_lease(m: Mesh, agents) -> None:
    warm(agents)
    assert can_write(m, WEST)
    t0 = time.monotonic()
    rounds(agents, int((LEASE_S + 0.2) / PROBE_S) + 1, only=(EAST, EU))  # west's agent is gone
    assert time.monotonic() - t0 > LEASE_S
    assert not can_write(m, WEST)
    assert can_write(m, EAST)


def test_an_agent_back_after_its_lease_ran_out_unfences_only_after_the_hold(m: Mesh, agents) -> None:
    # Its last decision was "writable", but the lease ran out while it was away (a dead or frozen
    # agent), though not long enough for its peers to stop hearing it: it comes back fenced and serves
    # the hold, like any fenced region, instead of writing on its first look.
    warm(agents)
    time.sleep(LEASE_S + 0.05)  # every agent away a little longer than a lease, less than stale_after
    assert not can_write(m, WEST)
    back = rounds(agents, 1)[WEST]
    assert not back.decision.writable and not can_write(m, WEST), back.decision.reason
    assert warm(agents)[WEST].decision.writable and can_write(m, WEST)


def test_routing_control_off_fences_even_with_quorum(m: Mesh, agents) -> None:
    warm(agents)
    last = rounds(agents, 2, control={EU: False})
    assert last[EU].decision.reason == "control_off" and not can_write(m, EU)
    assert warm(agents)[EU].decision.writable


def test_an_apply_error_makes_the_link_unheard(m: Mesh, agents) -> None:
    warm(agents)
    # Disable west's data subscription from east: its heartbeats still arrive, its data does not.
    m.execute(WEST, "ALTER SUBSCRIPTION fq_us_west_2_from_us_east_1 DISABLE")
    try:
        last = rounds(agents, 6)
        assert EAST not in last[WEST].hears
        assert last[WEST].subscriptions_down >= 1
        writable = {r for r, res in last.items() if res.decision.writable}
        assert not {EAST, WEST} <= writable
    finally:
        m.execute(WEST, "ALTER SUBSCRIPTION fq_us_west_2_from_us_east_1 ENABLE")


def test_no_walsender_means_no_lag_figure(m: Mesh, agents) -> None:
    rounds(agents, 4)
    m.partition(EU, reset=True)
    time.sleep(0.5)
    res = rounds(agents, 1, only=(EAST,))[EAST]
    assert res.lag_s[EU] is None and res.lag_s[WEST] is not None


def test_a_deployed_membership_takes_the_loop_over_at_the_next_probe(m: Mesh, agents) -> None:
    # A Lambda invocation holds the loop for up to 15 minutes; after a deploy (a membership change) the
    # next invocation must not wait for that deadline, or a joint change would take a quarter hour.
    import dataclasses
    import threading

    from replication.agent import acquire_loop, hand_over, newer_configuration_waiting

    old = settings(EAST)
    new = dataclasses.replace(old, regions_next=REGIONS)  # "a,b,c|a,b,c": another membership string
    holder, waiter = m.connect(EAST), m.connect(EAST)
    try:
        assert acquire_loop(holder, old) is None
        probe(holder, old, control_on=None)  # its heartbeat says which membership it runs
        assert newer_configuration_waiting(holder, old) == ""
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(acquire_loop(waiter, new)))
        t.start()
        deadline = time.monotonic() + 10
        while newer_configuration_waiting(holder, old) != new.membership:
            assert time.monotonic() < deadline, "the newer invocation never asked for the loop"
            time.sleep(0.05)
        assert t.is_alive()  # it waits for the holder, which hands over at its next probe
        hand_over(holder, old)
        t.join(10)
        assert got == [None]
        probe(waiter, new, control_on=None, holder_until_s=60.0)
        # The new holder is not asked to hand back by the configuration it replaced, even by an
        # invocation of it that starts after the handover (the deploy still rolling out).
        assert newer_configuration_waiting(waiter, new) == ""
        late = m.connect(EAST)
        try:
            assert acquire_loop(late, dataclasses.replace(old, handoff_wait_s=0.5)) == "another invocation holds the agent loop"
            assert newer_configuration_waiting(waiter, new) == ""
        finally:
            late.close()
    finally:
        holder.close()
        waiter.close()


def test_a_single_member_writes_with_its_new_routing_control_still_off(m: Mesh, agents) -> None:
    # The start of A -> B: ARC controls are created Off; the one writer must not stop for that.
    import dataclasses

    alone = dataclasses.replace(settings(EAST), regions=(EAST,))
    r = probe(agents[EAST], alone, control_on=False)
    assert r.decision.writable and can_write(m, EAST)
    # As soon as the membership grows, the control counts again.
    joint = dataclasses.replace(alone, regions_next=REGIONS)
    assert not probe(agents[EAST], joint, control_on=False).decision.writable


def test_a_peer_that_missed_a_heartbeat_row_gets_it_back_on_the_next_beat(m: Mesh, agents) -> None:
    # A copy promoted and subscribed after its peer's agent first beat never had the peer's row; an
    # UPDATE of it would be skipped there (update_missing) and the link would stay unheard for good.
    rounds(agents, 6)
    m.execute(WEST, "DELETE FROM fraiseql_repl.heartbeats WHERE node = %s", (EU,))
    probe(agents[EU], settings(EU), control_on=None)
    deadline = time.monotonic() + 10
    while not m.execute(WEST, "SELECT 1 FROM fraiseql_repl.heartbeats WHERE node = %s", (EU,)):
        assert time.monotonic() < deadline, f"{WEST} never got {EU}'s heartbeat row back"
        time.sleep(0.05)
    assert EU in rounds(agents, 2)[WEST].hears


class _NoAws:
    """What the lease loop and the sides need from the AWS side, with AWS left out."""

    def control_on(self) -> None:
        return None

    def traffic_out(self) -> None:
        return None

    def offer(self, result: object) -> None:
        pass

    def offer_maintenance(self, kept: object) -> None:
        pass

    def offer_diverged(self, rows: int) -> None:
        pass


def _own_beats(m: Mesh, region: str, seconds: float) -> list[float]:
    """The sender's clock of each of ``region``'s beats written over ``seconds``, read at its writer."""
    seen: list[float] = []
    deadline = time.monotonic() + seconds
    with m.connect(region) as c:
        while time.monotonic() < deadline:
            sent = c.execute("SELECT extract(epoch FROM sent_at)::float8 FROM fraiseql_repl.heartbeats WHERE node = %s",
                             (region,)).fetchall()[0][0]
            if not seen or sent != seen[-1]:
                seen.append(sent)
            time.sleep(0.02)
    return seen


def _waiting_for_parked(m: Mesh) -> int:
    """Sessions at east waiting for the lock the test holds on the parked changes."""
    return int(m.execute(EAST, "SELECT count(*) FROM pg_locks WHERE relation = 'fraiseql_repl.parked'::regclass "
                               "AND NOT granted")[0][0])


def test_the_lease_loop_beats_on_while_the_housekeeping_waits(m: Mesh, agents) -> None:
    # Housekeeping that takes seconds (here: waiting for a lock; in the long nemesis, purging
    # 20,000 changes on a busy writer) must not hold back the next heartbeat: a peer that hears
    # nothing for stale_after fences, whether the link is cut or the sender is late.
    import dataclasses
    import threading

    from replication.agent import run_loop
    from replication.agent.maintenance_side import MaintenanceSide

    s = dataclasses.replace(settings(EAST), watermark_every_s=0.25, maintenance_every_s=0.25, stop_margin_s=0.0)
    hold_s = 4 * STALE_S
    warm(agents)
    blocker = m.connect(EAST, autocommit=False)
    side = MaintenanceSide(s, lambda: m.connect(EAST), _NoAws())  # type: ignore[arg-type]
    end = time.monotonic() + hold_s + 2.0
    loop = threading.Thread(target=run_loop, args=(agents[EAST], s, _NoAws()),
                            kwargs={"remaining_s": lambda: end - time.monotonic(), "holder": "test", "log": lambda rec: None})
    try:
        blocker.execute("LOCK TABLE fraiseql_repl.parked IN ACCESS EXCLUSIVE MODE")
        side.start()
        loop.start()
        beats = _own_beats(m, EAST, hold_s)
        waiting = _waiting_for_parked(m)
    finally:
        blocker.rollback()
        blocker.close()
        loop.join(hold_s + 10)
        side.stop()
    assert waiting >= 1, "the housekeeping was not held back: the case tests nothing"
    # The old loop wrote one beat in the whole hold; the margins below are 8 and 4 probes wide.
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert len(beats) >= hold_s / PROBE_S / 4 and max(gaps) < 2 * STALE_S, (len(beats), max(gaps, default=None))


def test_an_invocation_ends_at_once_whatever_statement_its_sides_are_in(m: Mesh) -> None:
    # Until the handler returns, the next invocation cannot take the loop, and the region sends no
    # heartbeat: stopping a side cancels its statement rather than waiting for it (a verify step may
    # run for minutes on a large table).
    import dataclasses

    from replication.agent.maintenance_side import MaintenanceSide

    s = dataclasses.replace(settings(EAST), watermark_every_s=0.25, maintenance_every_s=0.25)
    blocker = m.connect(EAST, autocommit=False)
    side = MaintenanceSide(s, lambda: m.connect(EAST), _NoAws())  # type: ignore[arg-type]
    try:
        blocker.execute("LOCK TABLE fraiseql_repl.parked IN ACCESS EXCLUSIVE MODE")
        side.start()
        deadline = time.monotonic() + 10
        while not _waiting_for_parked(m):
            assert time.monotonic() < deadline, "the housekeeping never reached the held table"
            time.sleep(0.05)
        t0 = time.monotonic()
        side.stop()
        stopped_s = time.monotonic() - t0
    finally:
        blocker.rollback()
        blocker.close()
    assert stopped_s < 6.0, stopped_s  # without the cancel: the join's 10 s (the blocker outlives it)
    assert not side._thread.is_alive()
