"""Adopting an existing database, end to end on real PostgreSQL 18: the real runbook (`python -m ops adopt
sync`, then `cutover`, as separate processes) moves a FraiseQL-shaped database into a new primary while
clients write; the clients move at `ready`. Invariants only, never timings."""

from __future__ import annotations

from drills.adopt import AdoptResult, adopt_rows, run_adopt_drill


def test_an_existing_database_moves_in_under_load_and_loses_no_acknowledged_write() -> None:
    r = run_adopt_drill(users=300, posts=2000, comments=4000, clients=2, warm_s=1.0, after_s=1.0)
    assert r.runbook_exit == (0, 0), r.steps[-3:]
    assert r.lost == 0, f"{r.lost} acknowledged writes missing on the new primary"
    assert r.acked_on_source > 0 and r.acked_on_target > 0, "the clients wrote on both sides of the cutover"
    assert r.likes_counted == r.likes_acked, "every acknowledged like counted once (tb_like rows and like_count agree)"
    assert r.key_collisions == 0, "the new primary's sequences continue after the copied keys"
    assert r.rows_compared >= r.rows_before, "the runbook compared at least every row that was there before"
    assert {e["step"] for e in r.steps} >= {"fence", "drain", "sequences", "ready", "verify", "detach"}
    assert all(r.met is not False for r in adopt_rows(r))


def _result(**kw: object) -> AdoptResult:
    base: dict[str, object] = dict(rows_before=100, acked=50, acked_on_source=40, acked_on_target=10, lost=0, likes_acked=5,
                                   likes_counted=5, pause_s=0.1, runbook_pause_s=0.05, rows_compared=120, sync_s=1.0,
                                   cutover_s=1.0, key_collisions=0, errors={}, runbook_exit=(0, 0))
    base.update(kw)
    return AdoptResult(**base)  # type: ignore[arg-type]


def test_the_rows_and_the_verdict_follow_the_numbers() -> None:
    assert _result().ok and all(r.met is not False for r in adopt_rows(_result()))
    assert not _result(lost=1).ok and adopt_rows(_result(lost=1))[0].met is False
    assert not _result(runbook_exit=(0, 1)).ok
    assert not _result(key_collisions=2).ok
    assert not _result(likes_counted=4).ok
    assert not _result(acked_on_target=0).ok
