"""The hold waiver under randomised schedules (seeded, so every failure reproduces): the mutual-waiver
family of ``test_red5_mutual_waiver.py`` with its timing, phases, fault times, pause lengths and
``unfence_after`` drawn at random, on 3 and 5 regions, for every timing ``timing_problems`` accepts.

Each schedule: two regions X, Y stop replicating data for good (their control channels still
deliver, so each keeps receiving the other's ``_eligible`` flag); then one link flickers for a moment
(a data link that stalled just past ``stale_after``: the listener does not hear the speaker for a
probe or two, data still flows afterwards) so that the selected clique moves away from X and back,
and then either
* ``pause``: Y's agent pauses right after a look (the fault model's worst point), or
* ``isolate``: X's control channel is cut both ways (its data links to the others still deliver).
No other fault. The test FAILS while any seed leaves X and Y both writable after they have been
apart for longer than ``detection_bound``; the same sweep with the waiver off finds nothing
(``test_the_same_sweep_without_the_waiver_holds``).

    .venv/bin/python -m pytest -q tests/redteam/test_red5_waiver_random.py

Fixed by removing the waiver (the hold is waived only when the selected clique is every member); the
``_eligible`` flag the model still computes is no longer published or read by the agent.
"""

from __future__ import annotations

import random
from typing import Any

from replication.quorum import min_stale_after, timing_problems
from tests.redteam.red5_model import Faults, bound, run, violations
from tests.test_quorum_timing import R3, R5, Timing

SEEDS = range(48)
HORIZON = 45.0


def schedule(seed: int) -> dict[str, Any]:
    rng = random.Random(seed * 7_919 + 5)
    regions = rng.choice([R3, R3, R5])
    n = len(regions)
    probe = rng.choice([0.5, 1.0])
    t = Timing(probe=probe, stale=min_stale_after(n, probe) * (1 + rng.random() / 4),
               lease=max(probe + 0.6, probe * rng.uniform(1.5, 4)))
    assert timing_problems(n, probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    x, y = regions[0], regions[1]  # X comes first in the order: the clique returns to it
    others = [r for r in regions if r not in (x, y)]
    z = rng.choice(others)
    f = Faults(data_cuts=[(x, y, 5.0, HORIZON), (y, x, 5.0, HORIZON)])
    at = rng.uniform(18, 24)
    kind = rng.choice(["pause", "isolate"]) if n == 3 else "isolate"
    if kind == "pause":
        # Z does not hear X for a moment: the clique moves to {Y, ...} and back; Y pauses after a look
        f.flickers.append((z, x, at, at + rng.uniform(0.3, 1.5) * probe))
        f.pauses = {y: [(at + rng.uniform(0, 2) * probe, rng.uniform(0.5, 3) * probe)]}
    else:
        # X does not hear Z for a moment (it fences, says false and leaves Z out: the clique moves to
        # {Y, ...}); right after, X's control channel is cut both ways
        f.flickers.append((x, z, at, at + rng.uniform(0.6, 1.0) * probe))
        cut = at + rng.uniform(0.5, 1.1) * probe
        f.cuts += [(r, x, cut, HORIZON) for r in regions if r != x] + [(x, r, cut, HORIZON) for r in regions if r != x]
    return dict(regions=regions, t=t, faults=f, kind=kind, unfence_after=rng.choice([1, 2, 3]),
                jitter=rng.choice([0.0, 0.05, 0.1]) * probe)


def _found(seed: int) -> list[tuple[float, str, str, float, float]]:
    sc = schedule(seed)
    iv = run(sc["regions"], sc["t"], sc["faults"], seed=seed, horizon=HORIZON, unfence_after=sc["unfence_after"],
             jitter=sc["jitter"])
    return violations(sc["regions"], iv, sc["faults"], bound(len(sc["regions"]), sc["t"]))


def test_no_seed_leaves_two_regions_apart_both_writable_past_the_bound() -> None:
    broken = {}
    for seed in SEEDS:
        found = _found(seed)
        if found:
            sc = schedule(seed)
            broken[seed] = (len(sc["regions"]), sc["kind"], sc["unfence_after"], round(found[0][0], 3),
                            round(found[0][3], 2))
    print("\nseed: (regions, kind, unfence_after, both writable s, from s)\n" +
          "\n".join(f"{k}: {v}" for k, v in broken.items()))
    assert not broken, f"{len(broken)} of {len(SEEDS)} seeds: {sorted(broken)}"
