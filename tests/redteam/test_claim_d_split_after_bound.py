"""Claim D: "Two regions that cannot replicate to each other are never both writable for longer than
replication.quorum.detection_bound(...), for any timing that replication.quorum.timing_problems
accepts."

The mechanism: a *third* region's agent stalls during a cut (crash and restart, frozen Lambda, GC) for
longer than stale_after. Both ends of the cut lose their majority and fence. When the third agent comes
back it hears both ends, and relays what each end last said: "I hear nobody". Each end then sees the
other end's fresh report ruling out every edge of that end, so the only majority clique it can form is
{itself, third}, which it is "certain" of (``_certain`` treats a fresh report's missing edge as ruled
out, although that region is about to hear the third region again), and it unfences. Both ends are
writable until the next relay tells one of them that the other now hears the third region too: a split
brain, long after the cut, on a cut that never healed. Hysteresis (unfence_after) narrows it when the
ends probe in lockstep but does not remove it: with the default timing (probe 5 s, stale 15 s, lease
15 s, unfence_after 3) and jittered probes the model finds it too.

Each test FAILS while the claim is broken.

    .venv/bin/python -m pytest -q tests/redteam/test_claim_d_split_after_bound.py
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.quorum import detection_bound, timing_problems
from replication.roles import APP_ROLE
from tests.redteam.harness import (
    EAST,
    EU,
    LEASE_S,
    PROBE_S,
    STALE_S,
    WEST,
    connect,
    healthy,
    key,
    set_up,
    settings,
    writable,
)
from tests.test_quorum_timing import R3, Timing, bound, run, worst_window


def overlaps(iv: dict[str, list[tuple[float, float]]], a: str, b: str, after: float) -> list[tuple[float, float]]:
    return [(max(s1, s2), min(e1, e2)) for s1, e1 in iv[a] for s2, e2 in iv[b]
            if min(e1, e2) > max(s1, s2, after)]


def test_model_default_timing_a_stalled_third_agent_splits_the_cut_pair_long_after_the_bound() -> None:
    # The production defaults (Pulumi.phase-b.yaml / core.config): probe 5 s, stale 15 s, lease 15 s,
    # unfence_after 3; one-way link delay up to 0.1 s, probe start jitter up to 1 s.
    t = Timing(probe=5.0, stale=15.0, lease=15.0, max_delay=0.1)
    assert timing_problems(3, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    b = bound(3, t)
    a, c = "us-west-2", "eu-west-1"
    start = 150.0
    end = start + 30 + 6 * b
    cuts = [(a, c, start, end), (c, a, start, end)]
    # us-east-1's agent stalls for 30 s just after the cut; in the second run eu-west-1's agent also
    # stalls once, right after it unfenced, so its lease is not revoked by its next probe.
    found = []
    for pauses in ({"us-east-1": (151.8, 30.0)}, {"us-east-1": (151.8, 30.0), "eu-west-1": (200.0, 30.0)}):
        iv = run(R3, t, seed=13, horizon=end, cuts=cuts, pauses=pauses, unfence_after=3, jitter=1.0)
        both = overlaps(iv, a, c, start + b)
        print(f"\nbound {b:.1f} s; {a} and {c} (cut at {start}) both writable at "
              f"{[(round(s - start, 2), round(e - start, 2)) for s, e in both]} s after the cut "
              f"(stalls {pauses}); worst window {worst_window(R3, iv, cuts):.1f} s")
        found += [(round(s - start, 1), round(e - s, 1)) for s, e in both]
    assert not found, f"both ends of the cut writable (s after the cut, for s) {found} (bound {b:.1f} s)"


def test_model_unfence_after_one_splits_deterministically() -> None:
    t = Timing(probe=1.0, stale=3.0, lease=3.0, max_delay=0.05)
    assert timing_problems(3, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    b = bound(3, t)
    split = 0
    for seed in range(10):
        for a, c in [(R3[0], R3[1]), (R3[0], R3[2]), (R3[1], R3[2])]:
            third = next(r for r in R3 if r not in (a, c))
            cuts = [(a, c, 30.0, 60.0), (c, a, 30.0, 60.0)]
            iv = run(R3, t, seed=seed, horizon=60.0, cuts=cuts, pauses={third: (29.75, 10.0)}, unfence_after=1)
            split += bool(overlaps(iv, a, c, 30.0 + b))
    print(f"\nunfence_after=1: {split}/30 runs had both ends of the cut writable after the bound ({b:.1f} s)")
    assert split == 0


def test_real_mesh_a_stalled_third_agent_lets_both_ends_of_a_cut_write(m: Mesh, agents) -> None:
    """Real writers and agents: east and west cannot replicate to each other (both directions cut);
    eu's agent stalls for 3 s and comes back; east and west both take writes."""
    healthy(agents)
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    for x, y in ((EAST, WEST), (WEST, EAST)):
        m.links[(x, y)].partition()
    cut_at = time.monotonic()
    while time.monotonic() - cut_at < 3.0:  # eu's agent is stalled: only the ends probe
        for r in (EAST, WEST):
            probe(agents[r], settings(r), control_on=True)
        time.sleep(PROBE_S)
    committed: dict[str, list[float]] = {EAST: [], WEST: []}
    apps = {r: connect(m, r, APP_ROLE, autocommit=True) for r in (EAST, WEST)}
    views = []
    for _ in range(12):  # eu is back; everyone probes again
        for r in (EU, EAST, WEST):
            p = probe(agents[r], settings(r), control_on=True)
            views.append((round(time.monotonic() - cut_at, 2), r, writable(p), p.decision.reason))
        for r in (EAST, WEST):
            try:
                apps[r].execute("INSERT INTO items (id, v) VALUES (%s, %s)", (key(), f"written at {r}"))
                committed[r].append(time.monotonic() - cut_at)
            except psycopg.Error:
                pass
        time.sleep(PROBE_S)
    for c in apps.values():
        c.close()
    both = [t for t in committed[EAST] if any(abs(t - u) < 0.2 for u in committed[WEST])]
    print(f"\nbound {b:.2f} s; writes committed after the cut at east {committed[EAST][:4]}..., west "
          f"{committed[WEST][:4]}...; decisions {views[:9]}")
    assert not both, (f"{EAST} and {WEST}, which cannot replicate to each other, both committed writes "
                      f"{both[0]:.2f} s after the cut (detection_bound {b:.2f} s)")


def test_model_network_faults_only_a_blip_of_the_third_region_splits_the_cut_pair() -> None:
    """No agent fault at all: the cut pair stays cut, the third region is cut off from both for 10 s and
    comes back (unfence_after=1, which core.config allows)."""
    t = Timing(probe=1.0, stale=3.0, lease=3.0, max_delay=0.05)
    b = bound(3, t)
    split = []
    for seed in range(20):
        for a, c in [(R3[0], R3[1]), (R3[0], R3[2]), (R3[1], R3[2])]:
            third = next(r for r in R3 if r not in (a, c))
            start, end = 30.0, 30.0 + 10.0 + 8 * b
            cuts = [(a, c, start, end), (c, a, start, end)] + [
                (x, y, start, start + 10.0) for x, y in ((third, a), (a, third), (third, c), (c, third))]
            iv = run(R3, t, seed=seed, horizon=end, cuts=cuts, unfence_after=1)
            split += [(round(s - start, 1), round(e - s, 2)) for s, e in overlaps(iv, a, c, start + b)]
    print(f"\nnetwork faults only: {len(split)} split windows after the bound ({b:.1f} s), e.g. {split[:3]}")
    assert not split


def test_real_mesh_network_faults_only(m: Mesh, agents) -> None:
    """Real writers, agents all running: east-west cut for good; eu cut off from both for 3 s, then back."""
    healthy(agents)
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    for x, y in ((EAST, WEST), (WEST, EAST)):
        m.links[(x, y)].partition()
    m.partition(EU)
    cut_at = time.monotonic()
    apps = {r: connect(m, r, APP_ROLE, autocommit=True) for r in (EAST, WEST)}
    committed: dict[str, list[float]] = {EAST: [], WEST: []}
    healed = False
    while time.monotonic() - cut_at < 15.0:
        if not healed and time.monotonic() - cut_at > 3.0:
            m.heal(EU)  # heals eu's links only: east-west stays cut
            for x, y in ((EAST, WEST), (WEST, EAST)):
                assert m.links[(x, y)].partitioned
            healed = True
        for r in (EU, EAST, WEST):
            probe(agents[r], settings(r), control_on=True)
        for r in (EAST, WEST):
            try:
                apps[r].execute("INSERT INTO items (id, v) VALUES (%s, %s)", (key(), f"written at {r}"))
                committed[r].append(round(time.monotonic() - cut_at, 2))
            except psycopg.Error:
                pass
        time.sleep(PROBE_S)
    for c in apps.values():
        c.close()
    both = [t for t in committed[EAST] if t > b and any(abs(t - u) < 0.2 for u in committed[WEST])]
    print(f"\nbound {b:.2f} s; writes committed at east {committed[EAST][:6]}, west {committed[WEST][:6]}")
    assert not both, f"{EAST} and {WEST} both committed writes {both[0]:.2f} s after the cut (bound {b:.2f} s)"


def _set_up_write(agents: dict[str, Any], c: psycopg.Connection[Any], sql: str, args: tuple[object, ...]) -> None:
    set_up(agents, lambda: c.execute(sql, args), sql)


def test_real_mesh_an_apply_blocked_by_an_application_row_lock_counts_as_a_healthy_link(m: Mesh, agents) -> None:
    """"Hears" needs a fresh heartbeat (control subscription) and a data subscription whose apply worker
    runs without new errors. An application transaction on east that holds a row lock (a plain
    SELECT ... FOR UPDATE, or an uncommitted UPDATE) blocks east's apply of west's change to that row,
    and every west change behind it: west cannot replicate to east at all, the heartbeats keep flowing
    on their own subscription, and both stay writable for as long as the application transaction
    stays open."""
    healthy(agents)
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    k = key()
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    _set_up_write(agents, west, "INSERT INTO items (id, v) VALUES (%s, 'hot row')", (k,))
    deadline = time.monotonic() + 10
    while not m.execute(EAST, "SELECT count(*) FROM items WHERE id = %s", (k,))[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    holder = connect(m, EAST, APP_ROLE)
    holder.execute("SELECT * FROM items WHERE id = %s FOR UPDATE", (k,))
    _set_up_write(agents, west, "UPDATE items SET v = 'changed in west' WHERE id = %s", (k,))
    stalled_at = time.monotonic()
    markers, both = [], []
    while time.monotonic() - stalled_at < 3 * b + 2:
        last = {r: probe(agents[r], settings(r), control_on=True) for r in REGIONS}
        mk = key()
        try:
            west.execute("INSERT INTO items (id, v) VALUES (%s, 'west marker')", (mk,))
            markers.append(mk)
        except psycopg.Error:
            pass
        if writable(last[EAST]) and writable(last[WEST]):
            both.append(round(time.monotonic() - stalled_at, 2))
        time.sleep(PROBE_S)
    arrived = m.execute(EAST, "SELECT count(*) FROM items WHERE id = ANY(%s)", (markers,))[0][0]
    holder.rollback()
    holder.close()
    west.close()
    print(f"\nbound {b:.2f} s; west->east apply blocked for {time.monotonic() - stalled_at:.1f} s; {len(markers)} west writes, "
          f"{arrived} reached east; east and west both writable at {both[-3:]} s")
    assert not [t for t in both if t > b], (f"{EAST} and {WEST} both writable {both[-1]} s after west stopped "
                                            f"replicating to east (bound {b:.2f} s; {arrived}/{len(markers)} arrived)")
