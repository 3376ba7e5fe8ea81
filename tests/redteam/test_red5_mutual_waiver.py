"""Claim: "two regions that cannot replicate to each other never both acknowledge writes past the
bound" (``detection_bound``), with the unfence hold *waived* when every region outside the selected
clique has a fresh direct heartbeat saying ``_eligible: false`` (``quorum.decide_region``,
``quiet_peers``). The waiver's argument: such a region "revoked its lease when it said so and needs a
whole hold of its own before it writes again".

Attack: **mutual waivers.** The argument is circular. The region outside the clique does not need a
whole hold: it needs only the *other* side's ``_eligible: false``, and the other side, fenced until
then, says exactly that. Two regions X and Y that have not replicated to each other for a long time,
both fenced, each hold a fresh ``false`` of the other and a confirmation of their own clique from a
third region Z whose selection moved from {Y, Z} to {X, Z} (or back) within ``stale_after``: each
waives its hold on the other's ``false`` and both write. X's lease may even be granted on reports
observed *before* the ``false`` heartbeat Y relied on (``departing_member``: X went quiet for one
probe, then unfenced on Z's older reports, which it still held fresh).

How long the two flags must overlap: with ``unfence_after`` u the waiver is checked on the u-th
eligible probe, so the two first eligible probes must fall within ``stale_after - u * probe`` of each
other. Feasible for 3 regions with ``unfence_after`` 1 or 2, or with ``stale_after`` above its floor;
for 5 regions at the *default* timing (probe 5 s, stale 25 s, lease 15 s, unfence_after 3: slack
about 2 probes); and for 3 regions at the default timing (no slack on true clocks) once the two
writers' clocks step back by 0.3 probe, 1.5 s at the default probe (a report then stays "fresh" that
much longer on the receiver's clock).

The model: ``tests/redteam/red5_model.py`` (the repo's timing model extended with data links that
stop while the control channel still delivers, one-probe link flickers, and the ``_eligible`` flag
computed as ``replication.agent.probe`` does), running the real ``quorum.assess``. Times are in
seconds of the model (probe 1 s; multiply by 5 for the default probe of 5 s).

Each ``test_*_never_both_writable`` test FAILS while the waiver lets two regions apart for longer
than the bound write together; ``test_the_hold_alone_holds`` shows the same schedules stay safe
with the waiver switched off (the break is the waiver's, not the hold's).

    .venv/bin/python -m pytest -q tests/redteam/test_red5_mutual_waiver.py

Fixed by removing the waiver (the hold is waived only when the selected clique is every member); the
``_eligible`` flag the model still computes is no longer published or read by the agent.
"""

from __future__ import annotations

from typing import Any

import pytest

from replication.quorum import timing_problems
from tests.redteam.red5_model import Faults, bound, describe, run, violations
from tests.test_quorum_timing import R3, R5, Timing

EAST, WEST, EU = R3
R1, R2, R3_, R4, R5_ = R5
FOREVER = 60.0

SCHEDULES: dict[str, dict[str, Any]] = {
    # Three regions, unfence_after 1. east and west stop replicating data at 10 s (their control
    # channels still deliver). 17.0-20.5: eu receives no heartbeat from east, so from ~20.0 eu does not
    # hear east and selects {west, eu}; east fences and says false at 20.65. west waives its hold on
    # that false and writes at 20.8. From 20.5 west receives nothing from eu, from 20.7 east and west
    # receive nothing from each other. eu hears east again and selects {east, eu} at 21.09; east waives
    # its hold on west's false of 19.79 and writes at 21.68. Both write until 23.79 (west's copy of
    # eu's {west, eu} goes stale): 2.1 s, 11.7 s after they stopped replicating; bound 7.1 s.
    "eu_flips_under_cuts": dict(
        regions=R3, seed=1, unfence_after=1, t=Timing(probe=1.0, stale=3.0, lease=3.0, max_delay=0.05),
        faults=Faults(data_cuts=[(EAST, WEST, 10, FOREVER), (WEST, EAST, 10, FOREVER)],
                      cuts=[(EU, EAST, 17.0, 20.5), (WEST, EU, 20.5, FOREVER), (EAST, WEST, 20.7, FOREVER),
                            (WEST, EAST, 20.7, FOREVER)])),
    # Three regions, unfence_after 1, no control cut at all: east and west stop replicating data at 6 s;
    # eu's data link from east flickers 20.639-21.454 (eu does not hear east for one probe: {west, eu});
    # west's agent pauses 0.666 s right after the look at 22.17, in which it waived its hold on east's
    # false of 21.61; east waived its hold on west's false of 21.17 at 22.61. Both write 22.86-23.19
    # (0.33 s), 16.9 s after they stopped replicating; bound 7.1 s.
    "pause_after_the_look": dict(
        regions=R3, seed=38, unfence_after=1, t=Timing(probe=1.0, stale=3.0, lease=3.0, max_delay=0.05),
        faults=Faults(data_cuts=[(EAST, WEST, 6, FOREVER), (WEST, EAST, 6, FOREVER)],
                      flickers=[(EU, EAST, 20.639, 21.454)], pauses={WEST: [(22.088, 0.666)]})),
    # Five regions at the default timing scaled by 1/5 (probe 5 s, stale 25 s, lease 15 s, unfence_after
    # 3 -> 1, 5, 3, 3). r1 and r2 stop replicating data at 6 s; {r1, r3, r4, r5} writes. r1's data link
    # from r3 flickers 20.0-20.9: r1 does not hear r3 at 20.5, fences, says false and leaves r3 out; r3,
    # r4, r5 select {r2, r3, r4, r5}. From 20.6 r1's control channel is cut both ways (its data links to
    # r3-r5 still deliver). r2 is eligible at 21.3, 22.3 and waives its hold at 23.3 on r1's false of
    # 20.5. r1 is eligible again at 21.5 on r3-r5's reports of ~20.1-20.2 (older than its own false) and
    # waives its hold at 23.5 on r2's false of 20.3. Both write 23.53-25.54 (2.0 s; 10 s at the real
    # timing), 17.5 s after they stopped replicating; bound 11.2 s.
    "departing_member_five_regions_default_timing": dict(
        regions=R5, seed=3, unfence_after=3, t=Timing(probe=1.0, stale=5.0, lease=3.0, max_delay=0.05),
        phases={R1: 0.5, R2: 0.3, R3_: 0.1, R4: 0.2, R5_: 0.7},
        faults=Faults(data_cuts=[(R1, R2, 6, FOREVER), (R2, R1, 6, FOREVER)], flickers=[(R1, R3_, 20.0, 20.9)],
                      cuts=[(x, R1, 20.6, FOREVER) for x in (R2, R3_, R4, R5_)]
                      + [(R1, x, 20.6, FOREVER) for x in (R2, R3_, R4, R5_)])),
    # Three regions at the default timing (stale = lease = 3 probes, unfence_after 3), where the flags
    # cannot overlap long enough on true clocks: east's and west's clocks step back 0.3 probe (1.5 s at
    # the default probe; the hold's own margin assumes steps shorter than a probe) at 21.0 and 21.5.
    # The same departing-member schedule as above on three regions: east flickers (does not hear eu)
    # at 20.5, its control channel is cut both ways from 21.02. Both write 23.51-24.51 (1.0 s; 5 s at
    # the real timing), 17.5 s after they stopped replicating; bound (with the step) 7.4 s. Without the
    # two steps east never writes again in this schedule.
    "default_three_region_timing_clock_step": dict(
        regions=R3, seed=9, unfence_after=3, t=Timing(probe=1.0, stale=3.0, lease=3.0, max_delay=0.05),
        phases={EAST: 0.5, WEST: 0.463, EU: 0.373}, clock_step=0.3,
        faults=Faults(data_cuts=[(EAST, WEST, 6, FOREVER), (WEST, EAST, 6, FOREVER)],
                      flickers=[(EAST, EU, 20.055, 20.955)],
                      cuts=[(WEST, EAST, 21.02, FOREVER), (EU, EAST, 21.02, FOREVER), (EAST, WEST, 21.02, FOREVER),
                            (EAST, EU, 21.02, FOREVER)],
                      clock_steps={EAST: [(21.013, -0.3)], WEST: [(21.516, -0.3)]})),
}


def _worst(name: str) -> tuple[list[tuple[float, str, str, float, float]], str, float]:
    sc = SCHEDULES[name]
    t: Timing = sc["t"]
    regions = sc["regions"]
    assert timing_problems(len(regions), probe_s=t.probe, stale_after_s=t.stale, lease_s=t.lease) == []
    b = bound(len(regions), t, sc.get("clock_step", 0.0))
    iv = run(regions, t, sc["faults"], seed=sc["seed"], horizon=40, unfence_after=sc["unfence_after"],
             phases=sc.get("phases"))
    return violations(regions, iv, sc["faults"], b), describe(iv, 15), b


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_two_regions_apart_are_never_both_writable_past_the_bound(name: str) -> None:
    found, intervals, b = _worst(name)
    print(f"\n{name}: bound {b:.2f} s; writable: {intervals}")
    assert not found, (
        f"{found[0][1]} and {found[0][2]} both writable {found[0][3]:.2f}-{found[0][4]:.2f} s ({found[0][0]:.2f} s), "
        f"more than the bound ({b:.2f} s) after they stopped replicating: each waived its unfence hold on the "
        f"other's _eligible: false")
