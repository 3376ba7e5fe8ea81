"""What the tests watch of a data link on a running mesh (drills.mesh): which walsender serves it."""

from __future__ import annotations

import contextlib
import threading
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
