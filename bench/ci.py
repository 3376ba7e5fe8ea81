"""Benchmark: where a CI run's time goes, split as scripts/test.sh runs it: the virtualenv, the linters, the
workerd suite, the fast suite, the PostgreSQL and drill suite; and the plan's first run. Asserts nothing.

It clones this repository's committed HEAD (uncommitted changes are not in it) into a temp dir and runs
`.ci/run` there (or only the fast suite, `--suite fast`) with FRAISEQL_STAGE_TIMES set, so scripts/test.sh
reports each stage's wall and CPU (user + sys, children included) seconds. In a second clone it times
`scripts/plan.sh phase-a` from nothing: a virtualenv, the runtime lock, the plan. Wall time on a shared
machine depends on the load, so the load average is sampled throughout and printed with the figures.

    .venv/bin/python bench/ci.py [--suite fast|all] [--no-plan] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LABELS = {
    "venv": "virtualenv + dev lock (scripts/python.sh)",
    "linters": "linters (ruff, mypy, zizmor)",
    "workerd": "workerd suite (npm ci, npm test)",
    "fast-pytest": "fast suite (pytest -m 'not postgres', 2 workers)",
    "iam-npm-ci": "IAM simulator (npm ci)",
    "postgres-pytest": "PostgreSQL and drill suite (pytest -m postgres)",
}


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds while the benchmark runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every_s, self.samples, self._stop = every_s, [os.getloadavg()[0]], threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> str:
        self._stop.set()
        s = self.samples
        return f"load average (1 min) from {s[0]:.1f}: mean {sum(s) / len(s):.1f}, max {max(s):.1f}"


def clone(into: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(into)], check=True)
    return subprocess.run(["git", "-C", str(into), "log", "-1", "--format=%h %s"], check=True, capture_output=True,
                          text=True).stdout.strip()


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float, float, str]:
    """Exit code, wall and CPU seconds of `cmd` (children included), and the tail of its output (the
    whole output goes to `log`)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log.write_text(done.stdout)
    return done.returncode, wall, cpu, "\n".join(done.stdout.splitlines()[-80:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("fast", "all"), default="all", help="run .ci/run (all) or the fast suite only")
    parser.add_argument("--no-plan", action="store_true", help="skip the plan's first run")
    parser.add_argument("--keep", action="store_true", help="keep the clones (their paths are printed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fraiseql-bench-ci-"))
    load = LoadSampler()
    load.start()
    rows: list[tuple[str, float, float]] = []
    failed: list[str] = []
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        if not args.no_plan:
            commit = clone(work / "plan")
            code, wall, cpu, tail = timed(["bash", "scripts/plan.sh", "phase-a"], work / "plan", env, work / "plan.log")
            rows.append(("plan first run (virtualenv, runtime lock, plan phase-a)", wall, cpu))
            if code:
                failed.append(f"scripts/plan.sh exited {code}:\n{tail}")
        commit = clone(work / "ci")
        stages = work / "stages"
        cmd = ["bash", ".ci/run"] if args.suite == "all" else ["bash", "scripts/test.sh", "-q"]
        code, wall, cpu, tail = timed(cmd, work / "ci", {**env, "FRAISEQL_STAGE_TIMES": str(stages)}, work / "ci.log")
        if code:
            failed.append(f"{' '.join(cmd)} exited {code}:\n{tail}")
        for line in stages.read_text().splitlines() if stages.exists() else []:
            fields = line.split()
            if len(fields) != 4:  # what the shell printed about a stage that died ("... Aborted ...")
                failed.append(f"stage output: {line}")
                continue
            name, w, user, system = fields
            rows.append((LABELS.get(name, name), float(w), float(user) + float(system)))
        rows.append((f"total ({' '.join(cmd)})", wall, cpu))
    finally:
        seen = load.stop()
        if args.keep:
            print(f"clones and whole outputs (plan.log, ci.log) kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"CI timings of {commit}; {os.cpu_count()} cores; {seen}")
    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'wall s':>8}  {'cpu s':>8}")
    for label, wall, cpu in rows:
        print(f"{label:<{width}}  {wall:8.1f}  {cpu:8.1f}")
    for f in failed:
        print(f"\nFAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
