"""Whether a data link delivers: the rule the fence agent applies to each peer's data subscription.

Receiving is not delivering. An application session can hold back an apply worker most of the time
while it still reads a message now and then; a busy link (a large transaction being applied, or an
apply worker waiting its turn behind another link's apply) reads nothing for a while and is healthy.
So a data link counts as delivering when either

* its newest merged watermark is at most ``stale_after`` old (the peer's agent writes one to the data
  stream with every heartbeat; its age is the heartbeat's age plus how far the watermark trails the
  heartbeat, both stamped on the peer's clock), or
* its apply worker is working on what it received: not waiting on a lock, and it received within
  ``stale_after``; or waiting only on other apply workers that are themselves working.

A lock held by any other session (the application's, the agent's own, anything) on the worker's
path makes a link that trails by more than ``stale_after`` count as not delivering: nobody outside
replication can keep a link behind and still be heard. Pure: the agent gathers the facts
(``agent._data_links``), this judges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Optional


class Progress(Enum):
    """What an apply worker is doing, as far as delivery goes."""

    #: applying: not waiting, and received within ``stale_after`` (or waiting on workers that are)
    WORKING = "working"
    #: waiting, directly or through other apply workers, on a session that is not an apply worker
    HELD = "held"
    #: silent for ``stale_after``, gone, or waiting in a cycle of apply workers
    STALLED = "stalled"


@dataclass(frozen=True)
class Worker:
    """One logical replication worker (any kind: leader, table sync, parallel apply) at one moment."""

    pid: int
    #: seconds since it last received a message; ``None``: it never did
    receipt_age_s: Optional[float]
    #: the sessions it waits for (``pg_blocking_pids``); empty while it does not wait on a lock
    blockers: tuple[int, ...] = ()


def progress(pid: Optional[int], workers: Mapping[int, Worker], stale_after_s: float) -> Progress:
    """What the apply worker ``pid`` is doing, following its waits through other apply workers.

    ``workers`` holds every logical replication worker of the server (so a blocker that is not in it
    is some other session). A blocker outside replication anywhere on the path wins over a silent
    worker: the link is held back, whatever else it waits for.
    """
    if pid is None or pid not in workers:
        return Progress.STALLED
    held = stalled = False
    done: set[int] = set()

    def visit(p: int, path: frozenset[int]) -> None:
        nonlocal held, stalled
        if p in path:
            stalled = True  # apply workers waiting on each other in a cycle (the deadlock detector ends it)
            return
        if p in done:
            return
        done.add(p)
        w = workers.get(p)
        if w is None:
            held = True
        elif w.blockers:
            for b in w.blockers:
                visit(b, path | {p})
        elif w.receipt_age_s is None or w.receipt_age_s > stale_after_s:
            stalled = True

    visit(pid, frozenset())
    return Progress.HELD if held else Progress.STALLED if stalled else Progress.WORKING


def delivering(*, delivered_age_s: Optional[float], worker: Progress, stale_after_s: float) -> bool:
    """The module's rule: the newest merged watermark is fresh, or the apply worker is working."""
    if delivered_age_s is not None and delivered_age_s <= stale_after_s:
        return True
    return worker is Progress.WORKING
