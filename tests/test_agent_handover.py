"""Issue 20, items 8 and 13: the fence agents' invocations, as deployed.

- Reserved concurrency must leave an account 100 unreserved per region (10 on accounts whose quota
  is 10), so a fixed reservation fails on new accounts: none by default, a configured one no smaller
  than what a hand-over runs at once.
- An invocation holds the loop until near its deadline; the next holder is whichever scheduled start
  lands in the hand-over window. EventBridge rules tick once a minute, may be late and may drop a
  tick; a 75 s window then leaves a gap in which no invocation holds the loop and the lease runs out.
  Asynchronous starts are retried twice and kept for up to 6 hours unless configured: stale starts.

The hand-over is checked on the values the program declares (function timeout, the agent's
environment, the rule's schedule, the invoke configuration), against the agent's own rule for who
waits (replication.agent.acquire_loop: a start waits when the holder has at most the window left).
"""

from __future__ import annotations

import re

import pytest

from core import agent_schedule
from core.config import ConfigError
from infra.synth import Synthesis
from replication.agent import Settings
from tests.conftest import config_variant, synth_variant

FUNCTION = "aws:lambda/function:Function"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
INVOKE_CONFIG = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"


def agents(syn: Synthesis) -> list:
    return [f for f in syn.of_type(FUNCTION) if f.inputs.get("handler") == "replication.agent.handler"]


def period_s(expression: str) -> int:
    n, unit = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression).groups()
    return int(n) * (60 if unit.startswith("minute") else 3600)


def waiting_starts(timeout: float, stop_margin: float, window: float, lock_wait: float, period: float,
                   lateness: float) -> tuple[int, int]:
    """The fewest and the most scheduled starts that wait for the loop and get it in time, over every
    phase of the schedule and a lateness of 0 or `lateness` for every tick. The holder started at 0
    and stops at `timeout - stop_margin`; a start waits when it lands in the holder's last `window`
    seconds, and gets the loop if the holder stops before its `lock_wait` runs out."""
    end = timeout - stop_margin
    counts = []
    for phase in range(int(period)):
        for late in (0.0, lateness):
            ticks = [k * period + phase + late for k in range(int(timeout // period) + 3)]
            counts.append(len([t for t in ticks if end - window <= t <= end and end - t <= lock_wait]))
    return min(counts), max(counts)


def hands_over(timeout: float, stop_margin: float, window: float, lock_wait: float, period: float,
               lateness: float, lost: int) -> bool:
    """With `lost` ticks dropped (the worst ones: those in the window), some start still takes over."""
    fewest, _ = waiting_starts(timeout, stop_margin, window, lock_wait, period, lateness)
    return fewest > lost


def test_each_agent_hands_over_with_one_tick_lost_or_late(phase_b):
    rules = {r.inputs["region"]: r for r in phase_b.of_type(RULE)}
    for fn in agents(phase_b):
        env = fn.inputs["environment"]["variables"]
        settings = Settings.from_env(env)
        region = fn.inputs["region"]
        period = period_s(rules[region].inputs["scheduleExpression"])
        assert hands_over(fn.inputs["timeout"], settings.stop_margin_s, settings.handoff_wait_s,
                          settings.handoff_wait_s + 10, period, lateness=agent_schedule.TICK_LATENESS_S, lost=1), \
            f"{fn.name}: a lost or late tick leaves the loop without a holder"


def test_the_schedule_before_issue_20_left_a_gap():
    """The agent's own default window (75 s) with the same schedule: one lost tick is a gap."""
    default = Settings.__dataclass_fields__["handoff_wait_s"].default
    assert not hands_over(900, 15, default, default + 10, 60, lateness=agent_schedule.TICK_LATENESS_S, lost=1)


def test_starts_are_neither_retried_nor_kept(phase_b):
    configs = {c.inputs["functionName"]: c for c in phase_b.of_type(INVOKE_CONFIG)}
    targets = {t.inputs["arn"]: t for t in phase_b.of_type(TARGET)}
    period = period_s(agent_schedule.SCHEDULE_EXPRESSION)
    for fn in agents(phase_b):
        cfg = configs[fn.outputs["name"]]
        assert cfg.inputs["maximumRetryAttempts"] == 0 and cfg.inputs["maximumEventAgeInSeconds"] <= period
        policy = targets[fn.outputs["arn"]].inputs["retryPolicy"]
        assert policy["maximumRetryAttempts"] == 0 and policy["maximumEventAgeInSeconds"] <= period


def test_no_concurrency_is_reserved_by_default(phase_b):
    assert all(fn.inputs.get("reservedConcurrentExecutions") is None for fn in agents(phase_b))


def test_a_configured_reservation_covers_a_hand_over():
    n = agent_schedule.MAX_CONCURRENT
    syn = synth_variant("phase-b", lambda v: v["quorum"].update(agent_reserved_concurrency=n))
    fn = agents(syn)[0]
    assert {f.inputs["reservedConcurrentExecutions"] for f in agents(syn)} == {n}
    settings = Settings.from_env(fn.inputs["environment"]["variables"])
    _, most = waiting_starts(fn.inputs["timeout"], settings.stop_margin_s, settings.handoff_wait_s,
                             settings.handoff_wait_s + 10, agent_schedule.SCHEDULE_PERIOD_S, agent_schedule.TICK_LATENESS_S)
    assert n >= 1 + most  # the holder and every start waiting for it: none is throttled


@pytest.mark.parametrize("value", [1, 2, agent_schedule.MAX_CONCURRENT - 1])
def test_config_refuses_a_reservation_that_throttles_the_hand_over(value):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-b", lambda v: v["quorum"].update(agent_reserved_concurrency=value))
    msg = str(info.value)
    assert "fraiseql:quorum.agent_reserved_concurrency" in msg and f"agent_reserved_concurrency: {agent_schedule.MAX_CONCURRENT}" in msg
