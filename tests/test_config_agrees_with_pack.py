"""One rule in one place: any config that validates also passes the pack's SLO rules (replica-lag-alarm,
slo-feasible); any config that would fail them is refused by validation, naming the key."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.config import ConfigError
from infra.pack import run_pack
from infra.synth import synthesize
from tests.conftest import config_variant, flatten, stack_values

SLO_POLICIES = {"replica-lag-alarm", "slo-feasible"}
SLO_KEYS = {"slo.rto_seconds", "slo.rpo_seconds", "slo.latency_p95_ms", "slo.lag_alarm_seconds",
            "replication.lag_alarm_seconds"}

seconds = st.sampled_from([0.01, 0.05, 0.1, 0.3, 0.5, 1, 2, 5, 20, 30, 40, 60, 90, 150, 300, 600])


@st.composite
def slo_changes(draw):
    stack = draw(st.sampled_from(["phase-a", "phase-b"]))
    slo = {"rto_seconds": draw(seconds), "rpo_seconds": draw(seconds),
           "latency_p95_ms": draw(st.sampled_from([5, 10, 50, 100, 200]))}
    if draw(st.booleans()):
        slo["lag_alarm_seconds"] = draw(seconds)
    repl_alarm = draw(st.one_of(st.none(), seconds)) if stack == "phase-b" else None
    return stack, slo, repl_alarm


def _apply(values, slo, repl_alarm):
    values["slo"] = {k: v for k, v in values["slo"].items() if k not in ("lag_alarm_seconds",)} | slo
    if repl_alarm is not None:
        values["replication"]["lag_alarm_seconds"] = repl_alarm
    elif "replication" in values:
        values["replication"].pop("lag_alarm_seconds", None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slo_changes())
@example(("phase-a", {"rto_seconds": 300, "rpo_seconds": 40, "latency_p95_ms": 200}, None))  # the case
@example(("phase-a", {"rto_seconds": 300, "rpo_seconds": 40, "latency_p95_ms": 200, "lag_alarm_seconds": 30}, None))
@example(("phase-b", {"rto_seconds": 60, "rpo_seconds": 1, "latency_p95_ms": 50}, 0.9))
@example(("phase-b", {"rto_seconds": 60, "rpo_seconds": 2, "latency_p95_ms": 50}, None))
def test_validation_and_the_pack_agree_on_slo_rules(change):
    stack, slo, repl_alarm = change
    try:
        config_variant(stack, lambda v: _apply(v, slo, repl_alarm))
    except ConfigError as e:
        keys = {key.removeprefix("fraiseql:") for key, _ in e.problems}
        assert keys and keys <= SLO_KEYS, e.problems
        return
    values = stack_values(stack)
    _apply(values, slo, repl_alarm)
    result = run_pack(synthesize(stack, config=flatten(stack, values)).registrations)
    assert [v.message for v in result.violations if v.mandatory and v.policy in SLO_POLICIES] == []
