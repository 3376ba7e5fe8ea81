"""Shared fixtures: the real stack files, synthesized under mocks, and config variants of them. Also the
split into two suites (`scripts/test.sh` runs the fast one, `scripts/test.sh --postgres` the other) and
the Hypothesis settings every property test runs with."""

from __future__ import annotations

import copy
import faulthandler
import hashlib
import json
from collections.abc import Generator
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings

from core.config import StackConfig, load_config, namespaced_values
from infra.synth import Synthesis, read_stack_file, stack_file, synthesize

# --- the two suites -----------------------------------------------------------------------------------

#: The PostgreSQL-and-drill suite (marker `postgres`): every test under these paths (a folder, a module,
#: or one test) starts PostgreSQL 18 servers (drills/pg.py) in a fixture or in its body, or runs a drill.
POSTGRES_SUITE = (
    "tests/drills/",
    "tests/redteam/",
    "tests/replication/",
    "tests/ops/test_ops_adopt.py",
    "tests/ops/test_ops_status.py::test_phase_b_status_reads_slots_from_the_writer_it_can_reach_and_the_metric_otherwise",
    "tests/ops/test_ops_transition.py",
    "tests/security/test_iam_against_code.py",
)
#: ...except these modules of those folders, which start no server (decision code, rendering, the checker).
NO_SERVER = (
    "tests/drills/test_checker.py",
    "tests/redteam/test_red_clique_handover.py",
    "tests/redteam/test_red5_joint_rolling_change.py",
    "tests/redteam/test_red5_mutual_waiver.py",
    "tests/redteam/test_red5_waiver_random.py",
    "tests/replication/test_ddl_rules.py",
    "tests/replication/test_repl_render.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: starts PostgreSQL servers or runs a drill (tests/conftest.py POSTGRES_SUITE)")
    _forbid_servers_outside_the_postgres_suite()


def in_postgres_suite(nodeid: str) -> bool:
    return nodeid.startswith(POSTGRES_SUITE) and not nodeid.startswith(NO_SERVER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if in_postgres_suite(item.nodeid):
            item.add_marker(pytest.mark.postgres)


#: The fast-suite test running now (setup, call or teardown), if any: it may not start a server.
_fast_item: list[str] = []


def _forbid_servers_outside_the_postgres_suite() -> None:
    """Every server starts through PgNode.init (initdb) or PgNode.start: both fail a test that is not in
    the postgres suite, so a new server test cannot land in the fast suite unnoticed."""
    from drills.pg import PgNode

    for name in ("init", "start"):
        original = getattr(PgNode, name)
        if getattr(original, "_suite_guard", False):
            continue

        def guarded(self: PgNode, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            if _fast_item:
                pytest.fail(f"{_fast_item[-1]} starts a PostgreSQL server (PgNode.{_name}) but is in the fast suite: "
                            "add its module or folder to POSTGRES_SUITE in tests/conftest.py", pytrace=False)
            return _original(self, *args, **kwargs)

        guarded._suite_guard = True  # type: ignore[attr-defined]
        setattr(PgNode, name, guarded)


#: A test that runs longer than this (setup, call and teardown) is stuck: every thread's traceback is
#: printed and the run ends, instead of hanging CI for good. The longest drill takes about 4 minutes
#: on a loaded 2-core machine.
HANG_S = 900


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    fast = item.get_closest_marker("postgres") is None
    if fast:
        _fast_item.append(item.nodeid)
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()
        if fast:
            _fast_item.pop()


# Property tests judge values, never speed: no per-example deadline and no too-slow health check, both of
# which fail a correct test on a loaded machine.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# --- stack fixtures -----------------------------------------------------------------------------------


def stack_values(stack: str) -> dict[str, Any]:
    """The `fraiseql:` config of a stack file as Python values (namespace removed)."""
    flat, _ = read_stack_file(stack_file(stack))
    return {k: json.loads(v) if v[:1] in "[{" else v for k, v in namespaced_values(flat).items()}


def flatten(stack: str, values: dict[str, Any]) -> dict[str, str]:
    """Back to the engine's shape: namespaced keys, structured values as JSON strings."""
    flat, _ = read_stack_file(stack_file(stack))
    out = {k: v for k, v in flat.items() if not k.startswith("fraiseql:")}
    for k, v in values.items():
        out[f"fraiseql:{k}"] = v if isinstance(v, str) else json.dumps(v)
    return out


# The committed stacks, synthesized once per session (a run of the program under mocks takes seconds, and
# dozens of modules read the same three). They are shared, so they are read-only: a test that changes one
# (a registration's inputs, say) fails the run at the session's end, naming the stack. A test that needs
# a changed program or config synthesizes its own (synth_variant, or synthesize under its monkeypatch).


def _fingerprint(syn: Synthesis) -> str:
    return hashlib.sha256(repr((syn.registrations, syn.outputs)).encode()).hexdigest()


def _read_only(stack: str) -> Generator[Synthesis, None, None]:
    syn = synthesize(stack)
    before = _fingerprint(syn)
    yield syn
    assert _fingerprint(syn) == before, (f"a test changed the shared synthesis of {stack} (a session fixture in "
                                         "tests/conftest.py): copy what you change, or synthesize your own")


@pytest.fixture(scope="session")
def phase_a() -> Generator[Synthesis, None, None]:
    yield from _read_only("phase-a")


@pytest.fixture(scope="session")
def phase_b() -> Generator[Synthesis, None, None]:
    yield from _read_only("phase-b")


@pytest.fixture(scope="session")
def phase_c() -> Generator[Synthesis, None, None]:
    yield from _read_only("phase-c")


#: The stacks with a shared synthesis (the fixtures above).
SHARED_STACKS = ("phase-a", "phase-b", "phase-c")


def synthesized(request: pytest.FixtureRequest, stack: str) -> Synthesis:
    """A committed stack's synthesis for a test parametrized over stacks (call it first thing, before any
    patch): the shared one for those in SHARED_STACKS, a new one for any other."""
    return request.getfixturevalue(stack.replace("-", "_")) if stack in SHARED_STACKS else synthesize(stack)


@pytest.fixture
def phase_a_values() -> dict[str, Any]:
    return copy.deepcopy(stack_values("phase-a"))


def synth_variant(stack: str, change: Callable[[dict[str, Any]], None]) -> Synthesis:
    values = copy.deepcopy(stack_values(stack))
    change(values)
    _, secret_keys = read_stack_file(stack_file(stack))
    return synthesize(stack, config=flatten(stack, values), secret_keys=secret_keys)


def config_variant(stack: str, change: Callable[[dict[str, Any]], None]) -> StackConfig:
    values = copy.deepcopy(stack_values(stack))
    change(values)
    return load_config(values, stack)
