"""What the tests watch of a data link on a running mesh (drills.mesh): which walsender serves it."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator

from drills.mesh import Mesh
from replication.sql import subscription_name


def data_walsender(m: Mesh, publisher: str, subscriber: str) -> int | None:
    """The pid of the walsender sending ``publisher``'s changes to ``subscriber`` (None: no connection)."""
    rows = m.execute(publisher, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                     (subscription_name(m.nodes[subscriber], m.nodes[publisher]),))
    return rows[0][0] if rows else None


@contextlib.contextmanager
def walsenders_seen(m: Mesh, publisher: str, subscriber: str, every_s: float = 0.05) -> Iterator[set[int | None]]:
    """Every walsender pid the link had while the block ran, sampled every ``every_s`` (None: none at
    that moment). One pid all along means the link never ended and its transactions were sent once."""
    seen: set[int | None] = {data_walsender(m, publisher, subscriber)}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every_s):
            seen.add(data_walsender(m, publisher, subscriber))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def apply_pid(m: Mesh, subscriber: str, publisher: str) -> int | None:
    """The pid of ``subscriber``'s apply worker for its data link from ``publisher`` (None: none running)."""
    rows = m.execute(subscriber, "SELECT pid FROM pg_stat_subscription WHERE subname = %s AND pid IS NOT NULL "
                                 "AND relid IS NULL", (subscription_name(m.nodes[subscriber], m.nodes[publisher]),))
    return int(rows[0][0]) if rows else None


def merging(m: Mesh, region: str, pid: int) -> bool:
    """Whether the backend ``pid`` on ``region`` is inside a transaction that has written (a merge under way)."""
    return bool(m.execute(region, "SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = %s", (pid,))
                == [(True,)])


def merge_marker(m: Mesh, subscriber: str, publisher: str) -> tuple[int, bool]:
    """The data link's merge marker (objects.sql, merge_carefully): its last value and whether it was called."""
    sub = subscription_name(m.nodes[subscriber], m.nodes[publisher])
    (row,) = m.execute(subscriber, f'SELECT last_value, is_called FROM fraiseql_repl."merging:{sub}"')
    return int(row[0]), bool(row[1])


def anon_kb(pid: int) -> int:
    """The anonymous memory (RssAnon, kB) of process ``pid``; 0 once it is gone."""
    try:
        match = re.search(r"RssAnon:\s+(\d+)", open(f"/proc/{pid}/status").read())
    except OSError:
        return 0
    return int(match[1]) if match else 0


class ApplyMemory:
    """Samples, every 20 ms, the anonymous memory of ``subscriber``'s apply worker for its link from
    ``publisher``: ``peaks`` maps each worker pid seen to [first sample, peak] (kB)."""

    def __init__(self, m: Mesh, subscriber: str, publisher: str) -> None:
        self.peaks: dict[int, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(m, subscriber, publisher))

    def start(self) -> "ApplyMemory":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, m: Mesh, subscriber: str, publisher: str) -> None:
        while not self._stop.is_set():
            pid = apply_pid(m, subscriber, publisher)
            if pid is not None:
                kb = anon_kb(pid)
                if kb:
                    seen = self.peaks.setdefault(pid, [kb, kb])
                    seen[1] = max(seen[1], kb)
            time.sleep(0.02)
