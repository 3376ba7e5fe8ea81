"""The plan needs the runtime lock only: `scripts/plan.sh` installs `requirements.lock` (hash-checked) and
nothing the tests need, and every stack plans with only what that lock installs importable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from infra.synth import REPO

STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: str) -> set[str]:
    return {_norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", (REPO / lock).read_text(), flags=re.M)}


#: Plans every stack given with the distributions that only the dev lock installs made unimportable (as in
#: a virtualenv of the runtime lock), and prints the exit codes and whether the blocker held.
PLAN_WITHOUT = """
import contextlib, importlib.abc, io, json, re, sys
from importlib.metadata import packages_distributions
dev_only = set(json.loads(sys.argv[1]))
blocked = {top for top, dists in packages_distributions().items()
           if all(re.sub(r"[-_.]+", "-", d).lower() in dev_only for d in dists)}

class DevOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements.lock)")
        return None

sys.meta_path.insert(0, DevOnly())
try:
    import pytest  # noqa: F401
    held = False
except ModuleNotFoundError:
    held = True
from infra.__main__ import main
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["plan", "--stack", stack]) for stack in sys.argv[2:]]
print(json.dumps([held, codes]))
"""


def test_every_stack_plans_with_the_runtime_lock_alone():
    runtime, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    assert {"pytest", "moto", "mypy"} <= dev - runtime
    out = subprocess.run([sys.executable, "-c", PLAN_WITHOUT, json.dumps(sorted(dev - runtime)), *STACKS], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    held, codes = json.loads(out.stdout.splitlines()[-1])
    assert held, "pytest stayed importable: the check would prove nothing"
    assert codes == [0] * len(STACKS), out.stderr[-3000:]


def test_plan_sh_installs_the_runtime_lock_with_hashes_and_runs_the_plan(tmp_path):
    for part in ("scripts", ".python-version"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    calls = tmp_path / "calls"
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    # A virtualenv that answers the version check and records every other command it is given.
    fake.write_text(f'#!/usr/bin/env bash\nif [ "$1" = -c ]; then cat {tmp_path}/.python-version; '
                    f'else echo "$*" >> {calls}; fi\n')
    fake.chmod(0o755)
    subprocess.run(["bash", str(tmp_path / "scripts" / "plan.sh"), "phase-b", "--json"], check=True, timeout=60,
                   capture_output=True, cwd="/")
    install, plan = calls.read_text().splitlines()
    assert install.split()[:3] == ["-m", "pip", "install"] and "--require-hashes" in install.split()
    assert re.findall(r"-r (\S+)", install) == ["requirements.lock"]
    assert plan == "-m infra plan --stack phase-b --json"
