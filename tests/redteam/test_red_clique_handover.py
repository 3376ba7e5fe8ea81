"""Claim: "two regions that cannot replicate to each other never both acknowledge writes past the
bound" (``detection_bound``), with the confirmation rule (an agent writes only while every other
member of its selected clique reports selecting the same clique) and ``unfence_after`` as the config
validator accepts it (``core.config``: ``ge=1``).

Attack (found by a random fault search over the repo's own timing model, ``tests/test_quorum_timing.run``,
which runs the real ``quorum.assess``): a *handover between cliques*. Region X writes in clique
{X, Z}; the selected clique then moves to {Y, Z}, where Y cannot replicate with X (and has not for
far longer than the bound). Y unfences as soon as Z confirms {Y, Z}; nothing makes Y wait for X's
lease, granted while X was still in the selected clique, to run out. If X cannot learn of the move at
once (its heartbeats are cut one way so it is "mute", or its agent pauses right after observing) X
and Y are both writable for up to a lease, although they have not replicated to each other for
tens of seconds. The confirmation rule only checks the members of the *new* clique; the departing
member's lease is nobody's business.

Schedules (seeds of the model's delays/phases; cuts are (listener, speaker, from, to)):
* mute: eu does not hear west from 20.4 s on; east does not hear west 30.4-33.6 s; west is
  mute for 3 s, the clique moves from {east, west} to {east, eu}.
* network_only_unfence_after_2: no agent fault at all, unfence_after 2 (see the schedule).
* paused: east does not hear eu from 25.5 s on; west does not hear east 33.7-37.1 s; east's agent
  pauses 5.8 s right after observing at 35 s; the clique moves from {east, west} to {west, eu}.

Each test FAILS while two regions that cannot replicate to each other are both writable longer
than ``detection_bound`` after they stopped replicating.

    .venv/bin/python -m pytest -q tests/redteam/test_red_clique_handover.py
"""

from __future__ import annotations

import pytest

from replication.quorum import timing_problems
from tests.test_quorum_timing import R3, Timing, _apart_since, bound, run

EAST, WEST, EU = R3

SCHEDULES = {
    "mute": dict(seed=19, t=Timing(probe=0.5, stale=2.0018, lease=2.2436, max_delay=0.05), jitter=0.15,
                 cuts=[(EU, WEST, 29.098, 30.516), (EU, WEST, 20.359, 59.891), (EAST, WEST, 30.376, 33.554)],
                 pauses={WEST: (14.095, 3.720)}),
    "paused": dict(seed=126, t=Timing(probe=0.5, stale=1.9928, lease=2.3439, max_delay=0.05), jitter=0.15,
                   cuts=[(WEST, EAST, 33.737, 37.112), (WEST, EAST, 19.794, 23.338), (EAST, WEST, 19.794, 23.338),
                         (EAST, EU, 25.456, 78.059)],
                   pauses={EAST: (34.963, 5.756)}),
    # network faults only, unfence_after 2: west and eu cut both ways from 22.5 s; west does not hear
    # east from 27.7 s on, east does not hear west 25.6-30.5 s; {east, west} -> {east, eu}
    "network_only_unfence_after_2": dict(
        seed=2287, t=Timing(probe=1.0, stale=4.2564, lease=3.9761, max_delay=0.05), jitter=0.3, unfence_after=2,
        cuts=[(WEST, EAST, 27.678, 80.895), (WEST, EU, 22.521, 42.632), (EU, WEST, 22.521, 42.632),
              (EAST, WEST, 25.553, 30.497)],
        pauses={}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_new_clique_member_unfences_while_a_departing_member_still_holds_its_lease(name: str) -> None:
    sc = SCHEDULES[name]
    t = sc["t"]
    assert timing_problems(3, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    b = bound(3, t)
    iv = run(R3, t, seed=sc["seed"], horizon=90, cuts=sc["cuts"], pauses=sc["pauses"], jitter=sc["jitter"],
             unfence_after=sc.get("unfence_after", 1))
    worst = (0.0, "", "", 0.0)
    for i, a in enumerate(R3):
        for c in R3[i + 1:]:
            for s1, e1 in iv[a]:
                for s2, e2 in iv[c]:
                    s, e = max(s1, s2), min(e1, e2)
                    if e > s:
                        apart = _apart_since(sc["cuts"], a, c, s)
                        if apart > b and e - s > worst[0]:
                            worst = (e - s, a, c, apart)
    print(f"\n{name}: bound {b:.2f} s; intervals " + "; ".join(
        f"{r}: {[(round(x, 2), round(y, 2)) for x, y in v if y > 15]}" for r, v in iv.items()))
    assert worst[0] == 0.0, (
        f"{worst[1]} and {worst[2]} both writable for {worst[0]:.2f} s, {worst[3]:.1f} s after they stopped "
        f"replicating to each other (bound {b:.2f} s)")
