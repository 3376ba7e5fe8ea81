"""The two suites (tests/conftest.py): a test that starts a PostgreSQL server is in the postgres suite, and
one in the fast suite that starts a server fails at once, before anything exists. `scripts/test.sh` runs
the fast suite by default, and CI runs both, the fast one first."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from drills.pg import PgNode
from infra.paths import REPO
from tests.conftest import in_postgres_suite


def test_a_fast_test_that_starts_a_server_fails_and_names_where_to_move_it(tmp_path):
    node = PgNode("n1", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"test_suites\.py::.* starts a PostgreSQL server \(PgNode\.init\) "
                                                    r"but is in the fast suite: add .* POSTGRES_SUITE"):
        node.init()
    with pytest.raises(pytest.fail.Exception, match=r"PgNode\.start"):
        node.start()
    assert list(tmp_path.iterdir()) == [] and node.proc is None


def test_server_tests_are_in_the_postgres_suite_and_the_rest_in_the_fast_one(request):
    assert in_postgres_suite("tests/replication/test_repl_mesh.py::test_x")
    assert in_postgres_suite("tests/redteam/test_red_mesh.py::test_x[a-b]")
    assert in_postgres_suite("tests/ops/test_ops_adopt.py::test_x")
    assert not in_postgres_suite("tests/replication/test_ddl_rules.py::test_x")  # no server in that module
    assert not in_postgres_suite("tests/test_quorum_timing.py::test_x")
    assert not in_postgres_suite("tests/ops/test_ops_status.py::test_phase_a_status_before_and_after_a_failover")
    assert request.node.get_closest_marker("postgres") is None


def _stand_in_checkout(tmp_path):
    """A copy of the scripts over a virtualenv, npm and pytest that record what they are asked to run."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    shutil.copy(REPO / ".python-version", tmp_path)
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "package.json").write_text("{}")
    (tmp_path / "tests" / "iam").mkdir(parents=True)
    log = tmp_path / "ran"
    bins = {".venv/bin/python": f'if [ "$1" = -c ]; then cat {tmp_path}/.python-version; exit 0; fi\n'
                                f'echo "python $*" >> {log}\n'
                                '[ "$2" = pytest ] && [ "$4" = "${FAIL_SUITE:-}" ] && exit 1; exit 0',
            ".venv/bin/ruff": f'echo "ruff $*" >> {log}', ".venv/bin/mypy": f'echo mypy >> {log}',
            ".venv/bin/zizmor": f'echo zizmor >> {log}',
            "bin/npm": f'echo "npm $1 in $(basename "$PWD")" >> {log}'}
    for name, body in bins.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/usr/bin/env bash\n" + body + "\n")
        path.chmod(0o755)
    return log


def _test_sh(tmp_path, *args, fail=""):
    env = {**os.environ, "PATH": f"{tmp_path}/bin:{os.environ['PATH']}", "FAIL_SUITE": fail,
           "FRAISEQL_STAGE_TIMES": str(tmp_path / "stages")}
    return subprocess.run(["bash", str(tmp_path / "scripts" / "test.sh"), *args], cwd="/", env=env,
                          capture_output=True, text=True, timeout=60)


def test_ci_runs_the_linters_and_the_worker_then_the_fast_suite_then_the_postgres_suite(tmp_path):
    log = _stand_in_checkout(tmp_path)
    assert _test_sh(tmp_path, "--all", "-q").returncode == 0
    ran = [line for line in log.read_text().splitlines() if "pip install" not in line]
    assert ran == ["ruff check .", "mypy", "zizmor", "npm ci in worker", "npm test in worker",
                   "python -m pytest -m not postgres -n 2 --dist loadfile -q", "npm ci in iam", "python -m pytest -m postgres -q"]
    # what bench/ci.py reads: one line per stage, its name and its wall, user and system seconds
    stages = [line.split() for line in (tmp_path / "stages").read_text().splitlines()]
    assert [s[0] for s in stages] == ["venv", "linters", "workerd", "fast-pytest", "iam-npm-ci", "postgres-pytest"]
    assert all(len(s) == 4 and all(float(x) >= 0 for x in s[1:]) for s in stages)


def test_the_default_run_is_the_fast_suite_and_a_failure_there_stops_ci(tmp_path):
    log = _stand_in_checkout(tmp_path)
    assert _test_sh(tmp_path, "tests/test_config.py").returncode == 0
    assert log.read_text().splitlines()[-1] == "python -m pytest -m not postgres -n 2 --dist loadfile tests/test_config.py"
    log.unlink()
    assert _test_sh(tmp_path, "--all", fail="not postgres").returncode != 0
    assert not any("-m postgres" in line for line in log.read_text().splitlines())
    log.unlink()
    assert _test_sh(tmp_path, "--postgres").returncode == 0
    assert [line for line in log.read_text().splitlines() if "pip install" not in line] == [
        "npm ci in iam", "python -m pytest -m postgres"]
