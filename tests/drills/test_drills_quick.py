"""The quick drills run end to end; assertions are on invariants, never on timings."""

from __future__ import annotations

import math

from drills.phase_a import PhaseAResult, percentile, run_phase_a
from drills.phase_b import PhaseBResult, run_phase_b
from drills.report import build_rows, render_table


def test_phase_a_quick_promotion_and_loss_accounting() -> None:
    a = run_phase_a(load_s=3.0, writers=2)
    assert a.acked > 0 and a.heartbeat_samples > 0
    assert not math.isnan(a.lag_p50_ms)
    # The promoted standby took a write, and holds every acknowledged commit
    # except the ones counted as lost (async replication promises no more).
    assert a.kill_to_write_s > 0 and a.promote_s > 0
    assert a.standby_rows_after_promotion >= a.acked - a.lost
    assert a.lost < a.acked


def test_phase_b_quick_converges_fences_and_keeps_everything() -> None:
    b = run_phase_b(probes=5, rounds=3, keys=4, partition_s=5.0)
    assert b.notes == []
    assert set(b.pair_delay_p50_ms) == {
        f"{x}->{y}" for x in ("us-east-1", "us-west-2", "eu-west-1") for y in ("us-east-1", "us-west-2", "eu-west-1")
        if x != y
    }
    assert b.converged and b.lww_ok and b.set_ok
    assert b.counter_observed == [b.counter_expected] * 3
    assert b.app_conflicts_logged > 0 and b.app_local_kept and b.app_resolved_converged
    assert b.conflicts_resolved > 0
    assert b.native_conflicts["confl_insert_exists"] == 0
    assert b.fenced_by_quorum
    assert b.refused_while_partitioned > 0 and b.refused_sqlstates == ["25006"]
    assert b.accepted_majority_while_partitioned > 0
    assert b.healed_converged and b.missing_after_heal == 0
    assert b.apply_workers_healthy
    rows = build_rows(_fake_a(), b)
    assert "writes refused on eu-west-1" in render_table(rows)


def _fake_a(**kw: float) -> PhaseAResult:
    base = dict(one_way_ms=17.0, load_s=5.0, writers=2, acked=1000, tps=200.0, heartbeat_samples=10,
                lag_p50_ms=20.0, lag_p99_ms=40.0, lag_max_ms=50.0, replay_lag_p50_ms=30.0, replay_lag_max_ms=45.0,
                lost=3, lost_window_ms=10.0, promote_s=0.1, kill_to_write_s=0.2, standby_rows_after_promotion=997)
    base.update(kw)
    return PhaseAResult(**base)  # type: ignore[arg-type]


def _fake_b(**kw: object) -> PhaseBResult:
    pairs = ["us-east-1->eu-west-1", "us-west-2->eu-west-1"]
    base: dict[str, object] = dict(
        floors_ms={p: 27.0 for p in pairs}, pair_delay_p50_ms={p: 30.0 for p in pairs},
        pair_delay_p99_ms={p: 50.0 for p in pairs}, delay_p50_ms=30.0, delay_p99_ms=50.0, delay_max_ms=60.0,
        conflict_writes=10, convergence_s=0.1, converged=True, lww_ok=True, counter_expected=9,
        counter_observed=[9, 9, 9], set_ok=True, app_conflicts_logged=2, app_local_kept=True,
        app_resolved_converged=True, conflicts_resolved=5, resolutions={}, native_conflicts={},
        partitioned="eu-west-1", fenced_by_quorum=True, refused_while_partitioned=4, refused_sqlstates=["25006"],
        ended_by_fence_while_partitioned=0,
        accepted_majority_while_partitioned=8, accepted_window_before_fence=3, unfence_after_observations=3,
        detection_s=1.5, unfence_s=2.5,
        heal_convergence_s=0.1, healed_converged=True, missing_after_heal=0, apply_workers_healthy=True)
    base.update(kw)
    return PhaseBResult(**base)  # type: ignore[arg-type]


def test_report_flags_follow_the_numbers() -> None:
    ok = {r.metric: r.met for r in build_rows(_fake_a(), _fake_b())}
    assert all(ok.values())
    bad = {r.metric: r for r in build_rows(_fake_a(lag_max_ms=31_000.0), _fake_b(delay_max_ms=250.0,
                                                                                     missing_after_heal=2))}
    assert bad["A: replication delay p99 / max"].met is False
    assert bad["B: replication delay p99 / max, all pairs"].met is False
    assert bad["B: acknowledged writes missing after heal"].met is False
    table = render_table(list(bad.values()))
    assert table.count("\n") == len(bad) + 1 and "NO" in table


def test_percentile_nearest_rank() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert math.isnan(percentile([], 50))


def test_cli_prints_one_table(monkeypatch: object, capsys: object) -> None:
    import drills.__main__ as cli

    def fake_run(mode: str) -> dict[str, object]:
        return {"mode": mode, "phase_a": _fake_a(), "phase_b": _fake_b(),
                "rows": build_rows(_fake_a(), _fake_b()), "wall_s": 1.0}

    monkeypatch.setattr(cli, "run", fake_run)  # type: ignore[attr-defined]
    assert cli.main(["--quick"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count("seed target") == 1 and "quick mode" in out
    assert cli.main(["--long", "--json"]) == 0
    assert '"mode": "long"' in capsys.readouterr().out  # type: ignore[attr-defined]
