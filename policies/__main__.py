"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policies` (or a published pack).

The pack imports only `pulumi_policy`, its own modules and the leaf package `core`. `core` sits beside
this folder in the repository, and inside the folder once bundled for publishing
(`python -m infra bundle-pack build/policy-pack`). The folder registers itself as the package
`policies` whatever its name on disk, since a published pack is unpacked under a version folder.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_as_package(name: str, folder: Path) -> None:
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _bootstrap() -> None:
    # `core` (and the one pure module of `replication` it re-exports) is bundled inside a published
    # pack, and is this folder's sibling in the repository.
    home = HERE if (HERE / "core" / "__init__.py").exists() else HERE.parent
    if str(home) not in sys.path:
        sys.path.insert(0, str(home))
    if "policies" not in sys.modules:
        _load_as_package("policies", HERE)


_bootstrap()

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.pack import PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
