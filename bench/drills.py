"""Run the failure drills and print the measured numbers.

Usage: ``python bench/drills.py [--long]`` (quick mode by default). Prints the
report table, then the raw numbers as JSON on the last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drills.report import render_table, run  # noqa: E402


def main() -> int:
    mode = "long" if "--long" in sys.argv[1:] else "quick"
    out = run(mode)  # type: ignore[arg-type]
    print(render_table(out["rows"]))
    a, b = out["phase_a"], out["phase_b"]
    numbers = {
        "mode": mode,
        "wall_s": round(out["wall_s"], 1),
        "a_lag_p50_ms": round(a.lag_p50_ms, 1),
        "a_lag_p99_ms": round(a.lag_p99_ms, 1),
        "a_promote_s": round(a.promote_s, 3),
        "a_kill_to_write_s": round(a.kill_to_write_s, 3),
        "a_lost": a.lost,
        "a_acked": a.acked,
        "b_delay_p50_ms": round(b.delay_p50_ms, 1),
        "b_delay_p99_ms": round(b.delay_p99_ms, 1),
        "b_pair_p50_ms": {k: round(v, 1) for k, v in b.pair_delay_p50_ms.items()},
        "b_convergence_s": round(b.convergence_s, 3),
        "b_conflicts_resolved": b.conflicts_resolved,
        "b_refused_while_partitioned": b.refused_while_partitioned,
        "b_missing_after_heal": b.missing_after_heal,
    }
    print(json.dumps(numbers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
