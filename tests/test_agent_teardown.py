"""An invocation's end waits for each side thread (until it returns, the next invocation cannot take
the agent loop, and the region sends no heartbeat), so a side stops at its next step, not after
every routing-control endpoint has timed out in turn. Driven with a fake AWS client; no network."""

from __future__ import annotations

import threading
import time
from typing import Any

from replication.agent.aws_side import AwsSide
from tests.test_agent_settings import minimal

ENDPOINTS = tuple({"region": r, "endpoint": f"https://{r}.arc.example/v1"} for r in ("us-east-1", "us-west-2", "eu-west-1"))


class _HangingArc:
    """Every ARC endpoint hangs for ``hang_s``, then fails (as a read timeout does)."""

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s
        self.calls: list[str] = []
        self.first_call = threading.Event()

    def __call__(self, service: str, **kw: Any) -> "_HangingArc":
        self.endpoint = kw.get("endpoint_url", service)
        return self

    def get_routing_control_state(self, **kw: Any) -> dict[str, str]:
        self.calls.append(self.endpoint)
        self.first_call.set()
        time.sleep(self.hang_s)
        raise TimeoutError("read timeout")


def test_stopping_during_a_hung_routing_control_poll_skips_the_endpoints_left() -> None:
    arc = _HangingArc(hang_s=0.5)
    side = AwsSide(minimal(routing_control_arn="arn:rc", arc_endpoints=ENDPOINTS, probe_s=0.1), client=arc)
    side.start(traffic_out=False)
    assert arc.first_call.wait(5)
    side.stop()
    # the call in flight ends by its own timeout; the two endpoints after it are not tried
    assert arc.calls == [ENDPOINTS[0]["endpoint"]], arc.calls
