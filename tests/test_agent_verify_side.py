"""The agent's verify rounds keep time with the round, not with the agent's own start: every writer
takes its digests just after the round begins (rows changed between two writers' digests make
their buckets differ and list keys into the heartbeats' channel: red team 14 saw 85 % of a table
listed from digests a sixth of a round apart). Driven on a fake clock: deterministic."""

from __future__ import annotations

from typing import Any

from replication.agent.verify_side import VerifySide
from tests.test_agent_settings import minimal

PERIOD = 6.0


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t


class _Stop:
    """The loop's sleeps advance the fake clock; it stops after ``limit`` of them."""

    def __init__(self, clock: _Clock, limit: int) -> None:
        self.clock, self.limit, self.n = clock, limit, 0

    def wait(self, seconds: float) -> bool:
        self.clock.t += seconds + 0.003  # a sleep ends a little late
        self.n += 1
        return self.n > self.limit

    def set(self) -> None:
        pass


class _Conn:
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> "_Conn":
        self.clock.t += 0.002  # a round trip
        self.calls.append((self.clock.t, sql, params))
        self._row: tuple[Any, ...] = (
            (self.clock.t,) if "clock_timestamp" in sql else
            (0, 0, 0) if "publish_key_details" in sql else (0,))
        return self

    def fetchone(self) -> tuple[Any, ...]:
        return self._row

    def close(self) -> None:
        pass


class _Aws:
    def offer_diverged(self, rows: int) -> None:
        pass


def _phases(start: float) -> dict[str, list[float]]:
    clock = _Clock(start)
    conn = _Conn(clock)
    side = VerifySide(minimal(verify_every_s=PERIOD, verify_margin_s=1.0, verify_max_keys=777), lambda: conn, _Aws())  # type: ignore[arg-type]
    side._stop = _Stop(clock, 60)  # type: ignore[assignment]
    side._run()
    out: dict[str, list[float]] = {"publish_digests": [], "publish_key_details": [], "diverged_count": []}
    for t, sql, params in conn.calls:
        for step in out:
            if step in sql:
                out[step].append((t % PERIOD) / PERIOD)
                if step == "publish_digests":  # the round's horizon, the agent's buckets and its step
                    rnd, horizon, buckets, step_s = params
                    assert (horizon, buckets, step_s) == (rnd * PERIOD - 1.0, 256, PERIOD)
                if step == "publish_key_details":
                    assert params[-1] == 777
    return out


def test_each_step_runs_just_after_its_moment_in_the_round_whenever_the_agent_started() -> None:
    for start in (1_000_000.0 + PERIOD * 0.5, 1_000_000.0 + PERIOD * 0.01, 1_000_000.0 + PERIOD * 0.9):
        seen = _phases(start)
        assert len(seen["publish_digests"]) >= 5
        # the first round's digests come when the agent starts; every later one just after the round begins
        assert all(p < 0.01 for p in seen["publish_digests"][1:]), seen
        assert all(1 / 3 <= p < 1 / 3 + 0.01 for p in seen["publish_key_details"][1:]), seen
        assert all(2 / 3 <= p < 2 / 3 + 0.01 for p in seen["diverged_count"][1:]), seen
