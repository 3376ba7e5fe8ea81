"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policies`.

The validators import the project's own modules (infra.regions, infra.slo), so the repository root
goes on the path; everything else lives in importable modules.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.pack import PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
