"""``python -m drills [--quick|--long] [--json]``: run both drills, print one table."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from drills.report import render_table, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="mode", const="quick", help="about a minute (default)")
    group.add_argument("--long", action="store_const", dest="mode", const="long", help="longer loads, more samples")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    out = run(args.mode or "quick")
    if args.json:
        print(json.dumps({
            "mode": out["mode"],
            "wall_s": out["wall_s"],
            "phase_a": out["phase_a"].as_dict(),
            "phase_b": out["phase_b"].as_dict(),
            "rows": [asdict(r) for r in out["rows"]],
        }, indent=2, default=str))
    else:
        print(render_table(out["rows"]))
        print(f"\n({out['mode']} mode, {out['wall_s']:.0f} s)")
    return 0 if all(r.met is not False for r in out["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
