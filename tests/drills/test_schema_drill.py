"""The schema change under load, quick: invariants only, never timings; and its report rows."""

from __future__ import annotations

from dataclasses import replace

from drills.report import render_table, schema_rows
from drills.schema_change import SchemaChangeResult, run_schema_change


def test_a_table_and_a_column_added_under_load_lose_nothing_and_park_nothing() -> None:
    s = run_schema_change(warmup_s=1.5, after_s=1.5)
    assert s.notes == [] and s.exit_code == 0
    assert [x["step"] for x in s.steps][:3] == ["rehearse"] * 3 and s.steps[-1]["step"] == "publication"
    assert s.acked > 0 and s.acked_during_apply > 0 and s.lost == 0 and s.write_errors == {}
    assert s.parked_max == 0 and s.parked_left == 0 and s.apply_errors == 0 and s.subscriptions_healthy
    assert s.images_with_note_before_install == 0
    assert s.likes_expected > 0 and s.likes_observed == [s.likes_expected] * 3  # counter: every region's increments sum
    assert s.counters_observed == [s.counters_expected] * 3
    assert s.notes_written > 0 and s.notes_everywhere and s.converged
    assert s.ok and all(r.met for r in schema_rows(s))


def _fake(**kw: object) -> SchemaChangeResult:
    base = SchemaChangeResult(
        writers=["a", "b", "c"], exit_code=0, apply_s=0.6, steps=[], acked=1000, acked_during_apply=100, lost=0,
        write_errors={}, longest_write_ms=70.0, parked_max=0, parked_left=0, apply_errors=0, subscriptions_healthy=True,
        images_with_note_before_install=0, likes_expected=30, likes_observed=[30, 30, 30], counters_expected=40,
        counters_observed=[40, 40, 40], notes_written=30, notes_everywhere=True, converged=True, convergence_s=0.1)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_schema_rows_follow_the_numbers() -> None:
    assert all(r.met for r in schema_rows(_fake()))
    lost, parked, policy = schema_rows(_fake(lost=1, parked_max=3, likes_observed=[30, 29, 30]))
    assert lost.met is False and lost.measured == "1 of 1000"
    assert parked.met is False and parked.measured == "3 / 0"
    assert policy.met is False
    assert schema_rows(_fake(images_with_note_before_install=2))[1].met is False
    assert "NO" in render_table(schema_rows(_fake(apply_errors=1)))
