"""`python -m infra bundle-pack OUT`: the policy pack as one self-contained folder, for
`pulumi policy publish OUT`. The CLI uploads only the pack's folder, so the leaf package `core`
(and `replication/quorum.py`, whose `quorum_size` core re-exports) are copied in beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.paths import REPO

# What the pack may import from the repository: tests/test_layers.py keeps this list honest.
BUNDLED = ("core", "replication/__init__.py", "replication/quorum.py")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "venv", ".venv")


def bundle_pack(out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(REPO / "policies", out, ignore=_SKIP)
    for item in BUNDLED:
        src, dst = REPO / item, out / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=_SKIP)
        else:
            shutil.copy2(src, dst)
    # The pack's requirements point at the repository's lock; a published pack carries the lock itself.
    shutil.copy2(REPO / "requirements.lock", out / "requirements.txt")
    return out
