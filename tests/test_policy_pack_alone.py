"""`pulumi policy publish` uploads only the pack's folder: prove the bundled folder runs on its own,
with nothing from the repository on the path, and that the repository's folder runs as the CLI runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infra.bundle import bundle_pack
from infra.paths import REPO

# Runs the pack's __main__ as the CLI would, with PolicyPack replaced (the real one starts a gRPC
# server and blocks), then reports the policies and every module loaded from outside the venv.
DRIVER = r"""
import json, runpy, sys, sysconfig
import pulumi_policy
seen = {}
class FakePack:
    def __init__(self, name, enforcement_level, policies):
        seen["name"], seen["policies"] = name, [p.name for p in policies]
pulumi_policy.PolicyPack = FakePack
runpy.run_path(sys.argv[1], run_name="__main__")
prefixes = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], sys.base_prefix, sys.prefix)
seen["files"] = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {""})
seen["files"] = [f for f in seen["files"] if not f.startswith(prefixes) and f != __file__]
print(json.dumps(seen))
"""


def _run(pack_main: Path, cwd: Path, tmp_path: Path) -> dict:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # -I: no PYTHONPATH, no user site, and neither the driver's folder nor the cwd on sys.path. The timeout
    # only catches a hang: the import takes seconds, but took 113 s in a full run at a load average near 30.
    out = subprocess.run([sys.executable, "-I", str(driver), str(pack_main)], cwd=cwd, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_bundled_pack_runs_with_only_its_own_folder(tmp_path):
    pack = bundle_pack(tmp_path / "pack")
    seen = _run(pack / "__main__.py", tmp_path, tmp_path)
    assert seen["name"] == "fraiseql-guardrails" and "slo-feasible" in seen["policies"]
    outside = [f for f in seen["files"] if not f.startswith(str(pack))]
    assert outside == [], f"the published pack would need files it does not carry: {outside}"
    assert not any(f.startswith(str(REPO)) for f in seen["files"])


def test_repository_pack_loads_only_policies_and_the_leaf_packages(tmp_path):
    seen = _run(REPO / "policies" / "__main__.py", REPO / "policies", tmp_path)
    top = sorted({Path(f).relative_to(REPO).parts[0] for f in seen["files"] if f.startswith(str(REPO))})
    assert top == ["core", "policies", "replication"]
    assert str(REPO / "policies" / "pricing" / "refresh.py") not in seen["files"]  # a dev tool, not the pack's
    assert [f for f in seen["files"] if "/replication/" in f] == [str(REPO / "replication" / "__init__.py"),
                                                                 str(REPO / "replication" / "quorum.py")]
