"""``python -m drills [all|nemesis|schema|lifecycle|adopt] [--quick|--long] [--json] [--record]``: run drills,
print one table; ``--record`` also writes the figures into docs/results.md (its only writer).

``all`` (the default) runs phase A, phase B, the quick nemesis, the schema change under load and the
lifecycle.
``schema`` runs only the schema change (``--long``: five writers, longer load). ``lifecycle`` runs the
membership changes on live data: phase A -> B, then on a running mesh two writers join, a writer whose
slots were lost is rebuilt, and the two leave (about two minutes). ``nemesis`` runs only the
nemesis: ``--quick`` is what CI runs; ``--long`` runs at least 100 random schedules on three writers
and then more on five; ``--schedules``, ``--nodes`` and ``--seed`` pick one run of your own.
``adopt`` moves a FraiseQL database into a new primary through ``python -m ops adopt`` while clients
write (``--long``: ten times the data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from typing import Any, Literal

from drills.adopt import ADOPT_MODES, adopt_rows, run_adopt_drill
from drills.lifecycle import run_lifecycle
from drills.nemesis import REGIONS_3, REGIONS_5, run_nemesis
from drills.report import NEMESIS_MODES, SCHEMA_MODES, lifecycle_rows, nemesis_rows, render_table, run, schema_rows
from drills.results import record_section
from drills.schema_change import run_schema_change


def _progress(line: str) -> None:
    print(time.strftime("%H:%M:%S"), line, file=sys.stderr, flush=True)


def _timeline(steps: list[dict[str, Any]]) -> list[str]:
    out, t = [], 0.0
    for x in steps:
        if "regions" not in x:  # a promotion inside the promote step, timed by it
            continue
        t += float(x.get("seconds", 0.0))
        out.append(f"{t:7.2f} s  {x['step']:<11} {', '.join(x['regions']):<24} {x.get('detail', '')}"[:150])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drill", nargs="?", choices=("all", "nemesis", "schema", "lifecycle", "adopt"), default="all")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="mode", const="quick", help="what CI runs (default)")
    group.add_argument("--long", action="store_const", dest="mode", const="long", help="longer loads, more schedules")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--schedules", type=int, help="nemesis: number of random schedules (one run)")
    parser.add_argument("--nodes", type=int, choices=(3, 5), help="nemesis: writers (one run)")
    parser.add_argument("--seed", type=int, help="nemesis: random seed (one run)")
    parser.add_argument("--record", action="store_true", help="write the figures into docs/results.md")
    args = parser.parse_args(argv)
    mode: Literal["quick", "long"] = args.mode or "quick"
    command = "python -m drills " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json")
    if args.drill == "adopt":
        t0 = time.monotonic()
        ad = run_adopt_drill(**ADOPT_MODES[mode], progress=_progress)
        rows = adopt_rows(ad)
        if args.json:
            print(json.dumps({"mode": mode, "adopt": ad.as_dict(), "rows": [asdict(r) for r in rows]}, indent=2, default=str))
        else:
            print(render_table(rows))
            print("\nrunbook steps:\n  " + "\n  ".join(f"{e['step']:<10} {e['status']:<6} {e['detail']}"[:160] for e in ad.steps))
            print(f"\n(adopt {mode} mode, {time.monotonic() - t0:.0f} s)")
        if args.record:
            record_section(f"adopt-{mode}", f"Adopting an existing database ({mode})", command, rows)
        return 0 if ad.ok and all(r.met is not False for r in rows) else 1
    if args.drill == "nemesis":
        configs = NEMESIS_MODES[mode]
        if args.schedules or args.nodes or args.seed is not None:
            base = configs[0]
            configs = [replace(base, schedules=args.schedules or base.schedules,
                               regions=REGIONS_5 if args.nodes == 5 else REGIONS_3,
                               seed=base.seed if args.seed is None else args.seed)]
        t0 = time.monotonic()
        results = [run_nemesis(cfg, progress=_progress) for cfg in configs]
        rows = nemesis_rows(results)
        if args.json:
            print(json.dumps({"mode": mode, "runs": [r.as_dict() for r in results],
                              "rows": [asdict(r) for r in rows]}, indent=2, default=str))
        else:
            print(render_table(rows))
            for r in results:
                print(f"\n{len(r.regions)} writers, schedules:\n  " + "\n  ".join(r.schedule_log))
            print(f"\n(nemesis {mode} mode, {time.monotonic() - t0:.0f} s)")
        if args.record:
            record_section(f"nemesis-{mode}", f"Nemesis ({mode})", command, rows)
        return 0 if all(r.ok for r in results) and all(r.met is not False for r in rows) else 1
    if args.drill == "schema":
        t0 = time.monotonic()
        sc = run_schema_change(**SCHEMA_MODES[mode])
        rows = schema_rows(sc)
        if args.json:
            print(json.dumps({"mode": mode, "schema": sc.as_dict(), "rows": [asdict(r) for r in rows]}, indent=2, default=str))
        else:
            print(render_table(rows))
            print("\nschema apply timeline:\n  " + "\n  ".join(
                f"{x['elapsed_s']:6.2f} s  {x['step']:<11} {x['writer']:<16} {x['status']}" for x in sc.steps))
            print(f"\n(schema {mode} mode, {time.monotonic() - t0:.0f} s)")
        if args.record:
            record_section(f"schema-{mode}", f"Schema change under load ({mode})", command, rows)
        return 0 if sc.ok and all(r.met is not False for r in rows) else 1
    if args.drill == "lifecycle":
        t0 = time.monotonic()
        lives = run_lifecycle()
        rows = lifecycle_rows(lives)
        if args.json:
            print(json.dumps({"lifecycle": [r.as_dict() for r in lives], "rows": [asdict(r) for r in rows]},
                             indent=2, default=str))
        else:
            print(render_table(rows))
            for life in lives:
                print(f"\n{life.drill}, step by step:\n  " + "\n  ".join(_timeline(life.steps)))
            print(f"\n(lifecycle, {time.monotonic() - t0:.0f} s)")
        if args.record:
            timelines = "\n\n".join(f"{r.drill}, step by step:\n\n```\n" + "\n".join(_timeline(r.steps)) + "\n```"
                                    for r in lives)
            record_section("lifecycle", "Membership changes on live data", command, rows, text=timelines)
        return 0 if all(r.ok for r in lives) and all(r.met is not False for r in rows) else 1
    out = run(mode)
    if args.json:
        print(json.dumps({
            "mode": out["mode"],
            "wall_s": out["wall_s"],
            "phase_a": out["phase_a"].as_dict(),
            "phase_b": out["phase_b"].as_dict(),
            "nemesis": [r.as_dict() for r in out.get("nemesis", [])],
            "schema": out["schema"].as_dict() if "schema" in out else None,
            "lifecycle": [r.as_dict() for r in out.get("lifecycle", [])],
            "rows": [asdict(r) for r in out["rows"]],
        }, indent=2, default=str))
    else:
        print(render_table(out["rows"]))
        print(f"\n({out['mode']} mode, {out['wall_s']:.0f} s)")
    if args.record:
        record_section(f"all-{mode}", f"Every drill ({mode})", command, out["rows"])
    return 0 if all(r.met is not False for r in out["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
