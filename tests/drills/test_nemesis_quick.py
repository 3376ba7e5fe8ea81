"""The quick nemesis: random faults against three real writers and their real agents, judged by the
checker. The assertions are the safety properties themselves, not speed goals."""

from __future__ import annotations

from dataclasses import replace

from drills.nemesis import NemesisResult, run_nemesis
from drills.report import NEMESIS_MODES, nemesis_rows


def test_quick_nemesis_keeps_every_safety_property() -> None:
    (cfg,) = NEMESIS_MODES["quick"]
    r = run_nemesis(cfg)
    assert r.schedules_run == cfg.schedules and r.acked > 0 and r.refused > 0
    assert r.violations == [], r.schedule_log
    assert r.worst_window_s <= r.bound_s
    assert r.lost == 0 and r.converged, r.diverged_nodes
    # deletes, re-inserts, unique clashes and foreign keys under the same faults, tombstones purged at random
    assert r.register_ops > 0 and r.resurrected == 0 and r.lost_registers == 0, r.register_faults
    assert r.orphans == 0
    assert sum(r.adversary_tried.values()) > 0
    # fail closed: with its agent dead, a region stops within one lease (plus the client's ack delay)
    assert r.agent_death_fence_s is not None and r.agent_death_fence_s <= r.lease_s + 0.25
    # under load the fence is not starved, and nothing commits after the lease is revoked
    assert r.writers12_commits > 0 and r.writers12_commits_after_revoke == 0
    assert r.big_txn_false_fences == 0, "\n".join(n for n in r.notes if "big transaction" in n)
    assert r.traffic_steered is True, "\n".join(n for n in r.notes if "steer" in n)
    assert all(row.met is not False for row in nemesis_rows([r]))


def _fake(**kw: object) -> NemesisResult:
    base: dict[str, object] = dict(
        regions=["a", "b", "c"], schedules_run=5, wall_s=60.0, faults_applied={"link": 5}, bound_s=4.0,
        worst_window_s=1.9, worst_window_pair="a/b", violations=[], acked=100, refused=10, lost=0,
        converged=True, diverged_nodes=[], agent_death_fence_s=1.1, lease_s=1.5, writers12_fence_s=1.4,
        writers12_commits=300, writers12_commits_after_revoke=0, big_txn_rows=2000, big_txn_false_fences=0,
        big_txn_replicated_s=0.3, traffic_steered=True)
    base.update(kw)
    return NemesisResult(**base)  # type: ignore[arg-type]


def test_nemesis_rows_flag_what_the_numbers_say() -> None:
    assert all(r.met for r in nemesis_rows([_fake()]) if r.met is not None)
    bad = {r.metric.split(": ", 1)[1]: r.met for r in nemesis_rows([_fake(
        violations=["a/b both writable 6 s"], lost=2, agent_death_fence_s=3.0, writers12_commits_after_revoke=1,
        big_txn_false_fences=1, traffic_steered=False, resurrected=1, orphans=2)])}
    assert bad == {
        "schedules run": None,
        "worst time both sides of a cut were writable": False,
        "acknowledged writes lost / nodes diverged after the final heal": False,
        "resurrected deletes / lost register writes": False,
        "children left without their parent": False,
        "the application role's ways around the fence": False,
        "time to fence after agent death": False,
        "time to fence under 12 concurrent writers": False,
        "false fences caused by a large transaction": False,
        "a fenced region leaves the traffic path": False,
    }
    assert not _fake(lost=1).ok and _fake().ok and not replace(_fake(), converged=False).ok
    assert not _fake(resurrected=1).ok and not _fake(lost_registers=1).ok and not _fake(orphans=1).ok
