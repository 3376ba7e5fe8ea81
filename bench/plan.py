"""Benchmark: wall time of `python -m infra plan --stack <stack>` against the floor of importing the
Pulumi SDKs, both measured in this run. Prints numbers; asserts nothing (timings here are noisy).

    python bench/plan.py [--stack phase-a] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOOR = "import pulumi, pulumi_aws, pulumi_cloudflare"


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", default="phase-a")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    wall([py, "-c", FLOOR])  # warm the page cache for both
    floor, plan = [], []
    for _ in range(args.runs):  # interleaved so drift hits both equally
        floor.append(wall([py, "-c", FLOOR]))
        plan.append(wall([py, "-m", "infra", "plan", "--stack", args.stack, "--json"]))
    f, p = statistics.median(floor), statistics.median(plan)
    print(f"runs: {args.runs}")
    print(f"import floor ({FLOOR}): median {f:.2f} s  (min {min(floor):.2f}, max {max(floor):.2f})")
    print(f"plan --stack {args.stack}:            median {p:.2f} s  (min {min(plan):.2f}, max {max(plan):.2f})")
    print(f"ratio plan / import floor: {p / f:.2f}")


if __name__ == "__main__":
    main()
