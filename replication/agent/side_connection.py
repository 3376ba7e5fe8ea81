"""The connection a side thread of the agent (verify, maintenance) runs its statements on."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Optional

__all__ = ["SideConnection"]


class SideConnection:
    """Opened on first use, closed on any failure (the next use reconnects), and interrupted by
    ``cancel`` from another thread: an invocation's teardown must not wait for a side statement
    (a verify step may run for minutes), because until it returns the next invocation cannot
    take the loop, and the region sends no heartbeat."""

    def __init__(self, connect: Callable[[], Any], setup: str = "") -> None:
        self._connect, self._setup = connect, setup
        self._conn: Optional[Any] = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._conn is None:
            conn = self._connect()
            if self._setup:
                conn.execute(self._setup)
            with self._lock:
                self._conn = conn
        return self._conn

    def cancel(self) -> None:
        """Cancel the statement in flight, if any (it rolls back; the side retries it next time)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.cancel_safe(timeout=2.0)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
