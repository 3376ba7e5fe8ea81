"""Benchmark: wall time of `python -m infra plan --stack <stack>` against the floor of importing the
Pulumi SDK modules that this stack's plan really uses, both measured in this run, per stack.
Prints numbers and the ratio plan / import floor (target <= 1.5); asserts nothing (timings are noisy).

    .venv/bin/python bench/plan.py [--stack phase-a ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SDKS = ("pulumi", "pulumi_aws", "pulumi_cloudflare", "pulumi_policy")
# Runs the plan in-process, then lists the SDK modules it imported, in import order.
LIST_MODULES = """
import contextlib, io, json, sys
from infra.__main__ import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["plan", "--stack", sys.argv[1], "--json"])
print(json.dumps([m for m in sys.modules if m.split(".")[0] in {sdks!r}]))
"""


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def sdk_modules(stack: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LIST_MODULES.format(sdks=set(SDKS)), stack], cwd=REPO,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", action="append", help="default: phase-a, phase-b and phase-c")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    print(f"runs: {args.runs} (medians; plan and floor interleaved)")
    for stack in args.stack or ["phase-a", "phase-b", "phase-c"]:
        modules = sdk_modules(stack)
        floor_cmd = [py, "-c", "import " + ", ".join(modules)]
        plan_cmd = [py, "-m", "infra", "plan", "--stack", stack, "--json"]
        wall(floor_cmd)  # warm the page cache
        floor, plan = [], []
        for _ in range(args.runs):
            floor.append(wall(floor_cmd))
            plan.append(wall(plan_cmd))
        f, p = statistics.median(floor), statistics.median(plan)
        tops = sorted({m.split(".")[0] for m in modules})
        print(f"{stack}: plan {p:.2f} s / import floor {f:.2f} s ({len(modules)} SDK modules of {', '.join(tops)}) "
              f"= ratio {p / f:.2f}")


if __name__ == "__main__":
    main()
