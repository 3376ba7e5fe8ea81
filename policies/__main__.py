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

USAGE = """\
fraiseql-guardrails: the project's policy pack. The Pulumi CLI runs this folder; you do not.

  pulumi preview --stack <stack> --policy-pack policies      # the pack on a real preview
  python -m infra plan --stack <stack>                       # the same validators, offline
  python -m infra bundle-pack build/policy-pack              # the folder `pulumi policy publish` uploads

Run directly, the pack would start the analyzer's gRPC server and wait for the engine forever, so
this prints help instead (exit 0 for --help, 2 for anything else).
"""


def _run_by_hand() -> bool:
    """True when a person ran `python -m policies ...`. The CLI runs the folder through
    `python -m pulumi.policy <engine> <folder>` (runpy.run_path), which gives this module no package
    spec; only `-m` imports it as the package's `__main__`."""
    spec = globals().get("__spec__")
    return spec is not None and spec.name.endswith(".__main__") and spec.name != "__main__"


if __name__ == "__main__" and _run_by_hand():
    asked = any(a in ("-h", "--help") for a in sys.argv[1:])
    (sys.stdout if asked else sys.stderr).write(USAGE)
    sys.exit(0 if asked else 2)


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
