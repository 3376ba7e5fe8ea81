"""Benchmark: wall time of `python -m infra plan --stack <stack>` against the floor of importing the
Pulumi SDK modules that this stack's plan really uses, both measured in this run, per stack.
Prints numbers and the ratio plan / import floor (target <= 1.5); asserts nothing (timings are noisy).
Each ratio is of wall times, then of CPU times (user + sys), which other processes on a shared machine
disturb less.

The plan raises the collector's thresholds once its own imports are done, and freezes the heap before
exiting (infra/__main__.py), so the SDK modules it imports cost it less than they cost the plain floor.
The second ratio divides by a floor treated the same way (the plan's early imports, the plan's GC
setting, the rest, a frozen exit): it shows the plan's own work beyond importing, which the GC setting
does not shrink.

    .venv/bin/python bench/plan.py [--stack phase-a ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SDKS = ("pulumi", "pulumi_aws", "pulumi_cloudflare", "pulumi_policy")
# Runs the plan in-process, then lists the SDK modules imported before the plan started and during it.
LIST_MODULES = """
import io, json, sys
from infra.__main__ import PLAN_GC_THRESHOLD, plan
sdk = lambda: [m for m in sys.modules if m.split(".")[0] in {sdks!r}]
early = sdk()
plan(sys.argv[1], as_json=True, out=io.StringIO())
print(json.dumps([early, [m for m in sdk() if m not in early], PLAN_GC_THRESHOLD]))
"""


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one run of `cmd`."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def sdk_modules(stack: str) -> tuple[list[str], list[str], list[int]]:
    """The SDK modules imported before the plan starts, those imported while it runs, and its GC thresholds."""
    out = subprocess.run([sys.executable, "-c", LIST_MODULES.format(sdks=set(SDKS)), stack], cwd=REPO,
                         check=True, capture_output=True, text=True)
    early, late, threshold = json.loads(out.stdout.splitlines()[-1])
    return early, late, threshold


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", action="append", help="default: phase-a, phase-b and phase-c")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--record", action="store_true", help="write the figures into docs/results.md")
    args = ap.parse_args()
    py = sys.executable
    lines = [f"runs: {args.runs} (medians; plan and floors interleaved)"]
    print(lines[0])
    for stack in args.stack or ["phase-a", "phase-b", "phase-c"]:
        early, late, threshold = sdk_modules(stack)
        modules = early + late
        floor_cmd = [py, "-c", "import " + ", ".join(modules)]
        gc_floor_cmd = [py, "-c", f"import {', '.join(early)}; import gc; gc.freeze(); gc.set_threshold(*{threshold}); "
                                  f"import {', '.join(late)}; gc.freeze()"]
        plan_cmd = [py, "-m", "infra", "plan", "--stack", stack, "--json"]
        measure(floor_cmd)  # warm the page cache
        floor, gc_floor, plan = [], [], []
        for _ in range(args.runs):
            floor.append(measure(floor_cmd))
            gc_floor.append(measure(gc_floor_cmd))
            plan.append(measure(plan_cmd))
        (f, f_cpu), (g, g_cpu), (p, p_cpu) = medians(floor), medians(gc_floor), medians(plan)
        tops = sorted({m.split(".")[0] for m in modules})
        lines.append(f"{stack}: plan {p:.2f} s (CPU {p_cpu:.2f} s) / import floor {f:.2f} s (CPU {f_cpu:.2f} s; {len(modules)} "
                     f"SDK modules of {', '.join(tops)}) = ratio {p / f:.2f} (CPU {p_cpu / f_cpu:.2f}); / floor with the "
                     f"plan's GC setting {g:.2f} s (CPU {g_cpu:.2f} s) = {p / g:.2f} (CPU {p_cpu / g_cpu:.2f})")
        print(lines[-1])
    if args.record:
        # The repository first: this folder's drills.py would shadow the drills package.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from drills.results import record_section

        record_section("bench-plan", "Offline plan time against the SDK's import floor",
                       "python bench/plan.py " + " ".join(sys.argv[1:]), text="```\n" + "\n".join(lines) + "\n```")

if __name__ == "__main__":
    main()
