"""One table: what the drills measured against what the seed architecture promises."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from core.slo import lag_alarm_ceiling
from drills.lifecycle import LifecycleResult, run_lifecycle
from drills.nemesis import REGIONS_5, NemesisConfig, NemesisResult, run_nemesis
from drills.phase_a import PhaseAResult, run_phase_a
from drills.phase_b import PhaseBResult, run_phase_b
from drills.schema_change import SchemaChangeResult, run_schema_change

__all__ = ["MODES", "NEMESIS_MODES", "SCHEMA_MODES", "Row", "build_rows", "lifecycle_rows", "nemesis_rows",
           "render_table", "run", "run_nemesis_mode", "schema_rows"]

Mode = Literal["quick", "long"]

MODES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"a": {"load_s": 5.0}, "b": {"probes": 15, "rounds": 4, "keys": 6, "partition_s": 5.0}},
    "long": {"a": {"load_s": 60.0}, "b": {"probes": 200, "rounds": 30, "keys": 10, "partition_s": 15.0}},
}

#: Quick: what CI runs. Long: at least 100 random schedules on three writers, then on five.
NEMESIS_MODES: dict[str, list[NemesisConfig]] = {
    # The drill runs at a tenth of the default timing (stale after 1.5 s, not 15 s) but WAL decodes at the
    # same speed, so its big transaction stands for one ten times larger at the defaults.
    # Quick: 25k rows (250k at the defaults). 50k left a thin margin on a loaded 2-core CI machine:
    # the subscriber's own heartbeats wait while its walsenders decode the applied transaction.
    "quick": [NemesisConfig(schedules=13, seed=1, each_once=True, big_rows=25_000)],
    "long": [NemesisConfig(schedules=100, seed=7, big_rows=100_000, production_big_rows=1_000_000),
             NemesisConfig(regions=REGIONS_5, schedules=30, seed=11, big_rows=20_000)],
}

#: Schema change under load: quick is what CI runs; long writes longer, on five writers.
SCHEMA_MODES: dict[str, dict[str, Any]] = {
    "quick": {"warmup_s": 2.0, "after_s": 2.0},
    "long": {"regions": REGIONS_5, "warmup_s": 10.0, "after_s": 10.0},
}

RPO_A_S = 60.0
LAG_ALARM_S = lag_alarm_ceiling(RPO_A_S)
RTO_A_S = 300.0
RPO_B_MS = 100.0
RTO_B_S = 1.0


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    metric: str
    measured: str
    target: str
    met: bool | None  # None: nothing to compare against
    why: str


def _ms(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f} ms"


def build_rows(a: PhaseAResult, b: PhaseBResult) -> list[Row]:
    """Turn the two results into report rows (pure)."""
    worst_pair = max(b.pair_delay_p99_ms, key=lambda k: b.pair_delay_p99_ms[k])
    eu_p50 = {k: v for k, v in b.pair_delay_p50_ms.items() if k.endswith("eu-west-1")}
    return [
        Row("A: replication delay p50 (heartbeat commit->visible on standby)", _ms(a.lag_p50_ms),
            "RPO 1 min", a.lag_p50_ms < RPO_A_S * 1000,
            f"async standby behind a {a.one_way_ms:.0f} ms link at {a.tps:.0f} txn/s"),
        Row("A: replication delay p99 / max", f"{_ms(a.lag_p99_ms)} / {_ms(a.lag_max_ms)}",
            "RPO 1 min; alarm at 30 s", a.lag_max_ms < LAG_ALARM_S * 1000,
            f"alarm would not fire; pg replay_lag p50 {_ms(a.replay_lag_p50_ms)}, max {_ms(a.replay_lag_max_ms)}"),
        Row("A: RTO of promotion (kill -9 -> standby accepts a write)", f"{a.kill_to_write_s:.2f} s",
            "RTO 5 min", a.kill_to_write_s < RTO_A_S,
            f"pg_promote() {a.promote_s:.2f} s; excludes failure detection and DNS/TTL, which dominate"),
        Row("A: acknowledged txns lost on kill -9", f"{a.lost} of {a.acked}", "RPO 1 min (loss allowed)",
            a.lost_window_ms < RPO_A_S * 1000,
            f"async replication: in-flight commits lost, spanning {a.lost_window_ms:.1f} ms of writes"),
        Row("B: replication delay p50, all pairs", _ms(b.delay_p50_ms), "seed: RPO < 100 ms",
            b.delay_p50_ms < RPO_B_MS,
            "EU pairs p50: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(eu_p50.items())) + " ms"),
        Row("B: replication delay p99 / max, all pairs", f"{_ms(b.delay_p99_ms)} / {_ms(b.delay_max_ms)}",
            "seed: RPO < 100 ms", b.delay_max_ms < RPO_B_MS,
            f"worst pair {worst_pair} p99 {_ms(b.pair_delay_p99_ms[worst_pair])}; loopback + floors only, "
            "real links add jitter, TLS and apply backlog"),
        Row("B: convergence after concurrent conflicting writes", f"{b.convergence_s:.2f} s",
            "converge (no number in seed)", b.converged,
            f"{b.conflict_writes} writes on 3 nodes at once; measured from the last acknowledged write"),
        Row("B: conflicts resolved by policy triggers", str(b.conflicts_resolved), "decided as documented",
            b.lww_ok and b.set_ok and len(set(b.counter_observed)) == 1
            and b.counter_observed[0] == b.counter_expected,
            f"LWW ok={b.lww_ok}, counter {b.counter_observed[0]}/{b.counter_expected}, set ok={b.set_ok}; "
            f"PG18 counted update_origin_differs={b.native_conflicts.get('confl_update_origin_differs')}"),
        Row("B: app-table conflicts logged (local kept, then resolved)", str(b.app_conflicts_logged),
            "log + keep local", b.app_local_kept and b.app_resolved_converged,
            f"local kept={b.app_local_kept}, resolution converged={b.app_resolved_converged}"),
        Row(f"B: writes refused on {b.partitioned} while partitioned", str(b.refused_while_partitioned),
            "isolated region stops writing", b.fenced_by_quorum and b.refused_while_partitioned > 0,
            f"SQLSTATE {','.join(b.refused_sqlstates) or '-'}; {b.ended_by_fence_while_partitioned} in flight "
            f"ended by its fence (outcome unknown); majority accepted "
            f"{b.accepted_majority_while_partitioned}; {b.accepted_window_before_fence} writes accepted "
            f"in the {b.detection_s:.2f} s before its own agent fenced it (detection window)"),
        Row("B: acknowledged writes missing after heal", str(b.missing_after_heal), "nothing kept is lost",
            b.healed_converged and b.missing_after_heal == 0,
            f"re-converged in {b.heal_convergence_s:.2f} s; writable again {b.unfence_s:.2f} s after the heal "
            f"({b.unfence_after_observations} healthy probes and the unfence hold)"),
    ]


def nemesis_rows(results: list[NemesisResult]) -> list[Row]:
    """Rows for one or more nemesis runs (pure)."""
    rows = []
    for r in results:
        n = len(r.regions)
        faults = ", ".join(f"{k} {v}" for k, v in r.faults_applied.items())
        rows += [
            Row(f"B nemesis ({n} writers): schedules run", f"{r.schedules_run} in {r.wall_s:.0f} s",
                "random faults, real agents", None, faults),
            Row(f"B nemesis ({n}): worst time both sides of a cut were writable", f"{r.worst_window_s:.2f} s",
                f"<= detection bound {r.bound_s:.2f} s", not r.violations,
                f"pair {r.worst_window_pair}; {len(r.violations)} over the bound; "
                f"{r.acked} writes acknowledged, {r.refused} refused"),
            Row(f"B nemesis ({n}): acknowledged writes lost / nodes diverged after the final heal",
                f"{r.lost} / {len(r.diverged_nodes)}", "0 / 0", r.lost == 0 and r.converged,
                "every acknowledged key checked on every node; tables hashed"),
            Row(f"B nemesis ({n}): resurrected deletes / lost register writes", f"{r.resurrected} / {r.lost_registers}",
                "0 / 0", r.resurrected == 0 and r.lost_registers == 0,
                f"{r.register_ops} sets and deletes of keys each region owns, with tombstone purges at random times"),
            Row(f"B nemesis ({n}): children left without their parent", str(r.orphans), "0", r.orphans == 0,
                "parents deleted in one region while other regions add children (ON DELETE CASCADE)"),
            Row(f"B nemesis ({n}): the application role's ways around the fence", f"{r.adversary_acked} commits",
                "none past the bound (in the window above)", not r.violations,
                ", ".join(f"{k} {v}" for k, v in r.adversary_tried.items()) or "not run"),
        ]
        if r.agent_death_fence_s is not None:
            rows.append(Row(f"B nemesis ({n}): time to fence after agent death", f"{r.agent_death_fence_s:.2f} s",
                            f"<= one lease ({r.lease_s:g} s)", r.agent_death_fence_s <= r.lease_s,
                            "kill -9 of the agent; its last lease runs out on the writer's clock"))
        if r.writers12_fence_s is not None:
            rows.append(Row(f"B nemesis ({n}): time to fence under 12 concurrent writers",
                            f"{r.writers12_fence_s:.2f} s", f"<= detection bound {r.bound_s:.2f} s",
                            r.writers12_fence_s <= r.bound_s and r.writers12_commits_after_revoke == 0,
                            f"100 ms transactions, {r.writers12_commits} commits; "
                            f"{r.writers12_commits_after_revoke} acknowledged after the lease was revoked"))
        if r.big_txn_false_fences is not None:
            rows.append(Row(f"B nemesis ({n}): false fences caused by a large transaction",
                            str(r.big_txn_false_fences), "0", r.big_txn_false_fences == 0,
                            f"{r.big_txn_rows} rows in one transaction, on every writer after "
                            f"{r.big_txn_replicated_s or 0:.1f} s; oldest peer heartbeat meanwhile "
                            f"{r.big_txn_heartbeat_age_s or 0:.2f} s (silent after {r.stale_after_s:.2f} s); "
                            "the heartbeats' link streams large transactions instead of replaying them at commit"))
        if r.production_big_false_fences is not None:
            rows.append(Row(f"B nemesis ({n}): false fences caused by a large transaction at the default timing",
                            str(r.production_big_false_fences), "0", r.production_big_false_fences == 0,
                            f"{r.production_big_rows} rows, probe 5 s, silent after 15 s; on every writer after "
                            f"{r.production_big_replicated_s or 0:.0f} s; oldest peer heartbeat meanwhile "
                            f"{r.production_big_heartbeat_age_s or 0:.1f} s"))
        if r.traffic_steered is not None:
            rows.append(Row(f"B nemesis ({n}): a fenced region leaves the traffic path", "yes" if r.traffic_steered else "no",
                            "health path 503 while fenced", r.traffic_steered,
                            "the agent's ALB rule answers the health path; restored when writable"))
    return rows


def schema_rows(s: SchemaChangeResult) -> list[Row]:
    """Rows for the schema change under load (pure)."""
    n = len(s.writers)
    return [
        Row(f"B schema change under load ({n} writers): acknowledged writes lost", f"{s.lost} of {s.acked}", "0",
            s.exit_code == 0 and s.lost == 0 and s.converged and not s.write_errors,
            f"`python -m ops schema apply` added table likes and column items.note in {s.apply_s:.2f} s "
            f"({s.acked_during_apply} writes acknowledged meanwhile, longest write {s.longest_write_ms:.0f} ms, "
            f"write errors {sum(s.write_errors.values())}); tables equal {s.convergence_s:.2f} s after the load stopped"),
        Row(f"B schema change ({n}): changes parked / apply errors at any time", f"{s.parked_max} / {s.apply_errors}",
            "0 / 0 (no writer sends what a peer lacks)",
            s.parked_max == 0 and s.parked_left == 0 and s.apply_errors == 0 and s.images_with_note_before_install == 0
            and s.subscriptions_healthy,
            f"parked sampled every 100 ms on every writer; {s.images_with_note_before_install} images carried the new "
            f"column before every writer had re-installed items; subscriptions streaming: {s.subscriptions_healthy}"),
        Row(f"B schema change ({n}): the new objects follow the policy",
            f"likes {s.likes_observed[0] if s.likes_observed else 'n/a'}/{s.likes_expected}; notes {s.notes_written}",
            "counter sums every region's increments; the new column everywhere",
            s.likes_observed == [s.likes_expected] * n and s.notes_everywhere
            and s.counters_observed == [s.counters_expected] * n,
            f"likes (counter) incremented from {n} regions at once after the change; every note written is on every "
            f"writer; counters (existing) {s.counters_observed[0] if s.counters_observed else 'n/a'}/{s.counters_expected}"),
    ]


def lifecycle_rows(results: list[LifecycleResult]) -> list[Row]:
    """Rows for the membership changes on live data (pure): nothing lost, every writer equal, the
    writers that stay keep writing (a planned change is held to the phase B RTO), the new ones write."""
    rows = []
    for r in results:
        before, after = "+".join(r.regions_before), len(r.regions_after)
        rows.append(Row(f"{r.drill} ({len(r.regions_before)} -> {after} writers): acknowledged writes lost / rows diverged",
                        f"{r.lost} of {r.acked} / {r.diverged_rows}", "0 / 0", r.lost == 0 and r.diverged_rows == 0,
                        f"every region wrote throughout; checked on every writer after; {r.seconds:.1f} s from the first "
                        f"step to every writer holding a lease" + (f"; {'; '.join(r.notes)}" if r.notes else "")))
        worst = max(r.unavailable_s.items(), key=lambda kv: kv[1], default=(before, 0.0))
        rows.append(Row(f"{r.drill}: longest write pause of a writer that stays", f"{worst[1]:.2f} s ({worst[0]})",
                        f"< {RTO_B_S:g} s (phase B RTO)", worst[1] < RTO_B_S,
                        "between two acknowledged writes, from the first step to the end; "
                        + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(r.unavailable_s.items()))))
        if r.first_write_s:
            rows.append(Row(f"{r.drill}: new writers' first acknowledged write", ", ".join(
                f"{k} {v:.1f} s" for k, v in sorted(r.first_write_s.items())), "-", None,
                "from the first step; they write once the membership that makes them members is deployed"))
    return rows


def run_nemesis_mode(mode: Mode = "quick", progress: Any = lambda s: None) -> list[NemesisResult]:
    return [run_nemesis(cfg, progress=progress) for cfg in NEMESIS_MODES[mode]]


def render_table(rows: list[Row]) -> str:
    """Plain-text table."""
    head = ("metric", "measured", "seed target", "met?", "why")
    cells = [head] + [
        (r.metric, r.measured, r.target, "-" if r.met is None else ("yes" if r.met else "NO"), r.why) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].ljust(widths[j]) for j in range(4)) + "  " + c[4])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    return "\n".join(lines)


def run(mode: Mode = "quick") -> dict[str, Any]:
    """Run every drill (the nemesis in its quick mode); returns results, rows and wall time."""
    t0 = time.monotonic()
    a = run_phase_a(**MODES[mode]["a"])
    b = run_phase_b(**MODES[mode]["b"])
    nem = run_nemesis_mode("quick")
    sc = run_schema_change(**SCHEMA_MODES[mode])
    life = run_lifecycle()
    rows = build_rows(a, b) + nemesis_rows(nem) + schema_rows(sc) + lifecycle_rows(life)
    return {"mode": mode, "phase_a": a, "phase_b": b, "nemesis": nem, "schema": sc, "lifecycle": life, "rows": rows,
            "wall_s": time.monotonic() - t0}
