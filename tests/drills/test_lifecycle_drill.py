"""Membership changes on live data, with the real agents and real PostgreSQL 18: on a running
three-writer mesh two writers join, a writer killed long enough to lose its slots is rebuilt, and the
two leave, while every writer keeps writing. The checker judges the acknowledged writes.

Phase A -> B on live data runs through the runbook in tests/ops/test_ops_transition.py.
"""

from __future__ import annotations

from drills.lifecycle import LifecycleResult, run_grow_replace_shrink
from drills.report import lifecycle_rows

# A planned change must not stop the writers that stay for longer than a lease or two; the report
# holds it to the phase B RTO, this bound only to what a loaded 2-core machine can promise. 5 s was
# not a proven margin: a shrink kept eu-west-1 without an acknowledged write for 5.16 s in a
# fresh-clone CI with one `yes` running, and 5.07 s at load 14-22. 10 s is twice what was seen.
PAUSE_BOUND_S = 10.0


def test_join_replace_and_shrink_under_load_lose_nothing_and_keep_the_others_writing() -> None:
    results = run_grow_replace_shrink()
    assert [r.drill for r in results] == ["join 2 writers", "replace a lost writer", "shrink to 3"]
    for r in results:
        assert r.lost == 0, f"{r.drill}: {r.lost} acknowledged writes missing"
        assert r.diverged_rows == 0, f"{r.drill}: verify found {r.diverged_rows} rows that differ"
        assert r.acked > 0
        assert max(r.unavailable_s.values()) < PAUSE_BOUND_S, f"{r.drill}: {r.unavailable_s}"
    rebuilt = results[1]
    assert rebuilt.notes and "invalidated" in rebuilt.notes[0]


def _result(**kw: object) -> LifecycleResult:
    base: dict[str, object] = dict(drill="join 2 writers", regions_before=["a", "b", "c"], regions_after=["a", "b", "c", "d", "e"],
                                   seconds=30.0, steps=[], acked=100, lost=0, diverged_rows=0,
                                   unavailable_s={"a": 0.05, "b": 0.06, "c": 0.05}, first_write_s={"d": 20.0, "e": 21.0})
    base.update(kw)
    return LifecycleResult(**base)  # type: ignore[arg-type]


def test_lifecycle_rows_flag_what_the_numbers_say() -> None:
    assert all(r.met is not False for r in lifecycle_rows([_result()]))
    lost = lifecycle_rows([_result(lost=1)])
    assert lost[0].met is False and lost[1].met is True
    paused = lifecycle_rows([_result(unavailable_s={"a": 0.05, "b": 1.5, "c": 0.05})])
    assert paused[1].met is False and "1.50 s (b)" in paused[1].measured
    assert lifecycle_rows([_result(diverged_rows=-1)])[0].met is False  # verify did not run
