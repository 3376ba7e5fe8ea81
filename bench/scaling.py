"""Benchmark: how planning grows with the number of regions, in a mesh and in hub-and-spoke.

Two tables, each measured in one process and one run:
1. the network layer, for 3, 5, 8 and 10 regions: the region stacks and the inter-region network
   (mesh or hub-and-spoke), which is what the topology changes;
2. the whole phase B program. It needs an odd number of write regions for a majority quorum, so it
   runs at 3, 5, 7 and 9; 8 and 10 are refused by config validation, as they should be.

Each row shows resources, the median plan time, and the time as a ratio to the 3-region mesh of its
table. Prints numbers; asserts nothing.

    python bench/scaling.py [--runs 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import common, phase_b, program  # noqa: E402
from infra.synth import read_stack_file, stack_file, synthesize  # noqa: E402

REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "us-east-2", "eu-central-1",
           "ap-northeast-1", "ap-southeast-1", "eu-west-2", "ca-central-1", "ap-southeast-2"]


def config_for(n: int, topology: str) -> dict[str, str]:
    flat, _ = read_stack_file(stack_file("phase-b"))
    cfg = copy.deepcopy(flat)
    cfg["fraiseql:regions"] = json.dumps(
        [{"name": r, "role": "active", "cidr": f"10.{10 * (i + 1)}.0.0/16"} for i, r in enumerate(REGIONS[:n])]
    )
    net = json.loads(cfg["fraiseql:network"])
    net["topology"] = topology
    if topology == "hub-and-spoke":
        net["hub_region"] = REGIONS[0]
    cfg["fraiseql:network"] = json.dumps(net)
    return cfg


def network_only() -> dict:
    """The program's own region stacks and network, without databases or services."""
    cfg = program.read_stack_config_unchecked()
    stack = "phase-b"
    regions = common.region_stacks(cfg, stack)
    net = phase_b.inter_region_network(cfg, stack, regions)
    return {"links": net.links}


def measure(n: int, topology: str, runs: int, run=None) -> tuple[int, float]:
    cfg = config_for(n, topology)
    times, count = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        syn = synthesize("phase-b", config=cfg, run=run)
        times.append(time.perf_counter() - start)
        count = len(syn.resources)
    return count, statistics.median(times)


def table(title: str, counts: tuple[int, ...], runs: int, run=None) -> list[str]:
    rows = [(topo, n, *measure(n, topo, runs, run)) for topo in ("mesh", "hub-and-spoke") for n in counts]
    base = rows[0][3]
    lines = [title, f"  {'topology':<14} {'regions':>7} {'resources':>9} {'plan s':>8} {'x 3-mesh':>9}"]
    for topology, n, count, t in rows:
        lines.append(f"  {topology:<14} {n:>7} {count:>9} {t:>8.2f} {t / base:>9.2f}")
    print("\n".join(lines))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="write the figures into docs/results.md")
    args = ap.parse_args()
    synthesize("phase-b", config=config_for(3, "mesh"))  # warm imports and caches
    lines = table("network layer (region stacks + inter-region network)", (3, 5, 8, 10), args.runs, run=network_only)
    print()
    lines += [""] + table("whole phase B program (odd region counts only)", (3, 5, 7, 9), args.runs)
    if args.record:
        # The repository first: this folder's drills.py would shadow the drills package.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from drills.results import record_section

        record_section("bench-scaling", "Resources and plan time by region count",
                       "python bench/scaling.py " + " ".join(sys.argv[1:]), text="```\n" + "\n".join(lines) + "\n```")


if __name__ == "__main__":
    main()
