"""When the fence agents run: the schedule that starts them and the hand-over between invocations.

An agent invocation holds its region's agent loop for up to `INVOCATION_S` (the Lambda maximum) and
stops `STOP_MARGIN_S` before its deadline. A scheduled rule starts a new invocation every
`SCHEDULE_PERIOD_S`; one that finds the loop held exits at once, unless the holder has at most
`HANDOFF_WAIT_S` left, in which case it waits for the loop (replication.agent.acquire_loop). The
next holder must therefore start inside that window. EventBridge rules have one-minute precision
and may deliver a tick late or not at all, so the window spans two periods plus `TICK_LATENESS_S`:
with one tick lost and the others late, another still lands in it. Each tick that lands in the
window waits, so up to `MAX_CONCURRENT` invocations of one region's agent run at once.
"""

from __future__ import annotations

import math

INVOCATION_S = 900
STOP_MARGIN_S = 15
SCHEDULE_PERIOD_S = 60
SCHEDULE_EXPRESSION = "rate(1 minute)"
#: How late a scheduled tick may arrive and still hand over.
TICK_LATENESS_S = 30
HANDOFF_WAIT_S = 2 * SCHEDULE_PERIOD_S + TICK_LATENESS_S
#: The holder and every tick that can land inside the hand-over window.
MAX_CONCURRENT = 1 + math.ceil(HANDOFF_WAIT_S / SCHEDULE_PERIOD_S)
#: A start older than this is useless (the next tick is due) and is dropped instead of retried:
#: the minimum maximum event age of Lambda's asynchronous invocations.
MAX_EVENT_AGE_S = 60
