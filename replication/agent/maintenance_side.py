"""The maintenance side: housekeeping on a thread and connection of its own, so a slow purge never
delays a heartbeat."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from replication.agent.aws_side import AwsSide
from replication.agent.maintenance import maintain
from replication.agent.settings import Settings
from replication.agent.side_connection import SideConnection

__all__ = ["MaintenanceSide"]


class MaintenanceSide:
    """``maintain`` every ``watermark_every_s``, in full every ``maintenance_every_s``, on its own
    connection and thread. In the lease loop, housekeeping ran between two beats: a purge of 20,000
    changes on a busy writer runs for seconds (up to its 5 s statement timeout), and meanwhile the
    peers hear nothing, which looks exactly like a cut link. ``stop`` cancels the statement in
    flight (each runs in its own transaction and is retried next time)."""

    def __init__(self, settings: Settings, connect: Callable[[], Any], aws: AwsSide,
                 log: Callable[[Mapping[str, Any]], None] = lambda rec: None) -> None:
        self.settings, self._aws, self._log = settings, aws, log
        self._conn = SideConnection(connect)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraiseql-agent-maintenance", daemon=True)

    def start(self) -> "MaintenanceSide":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._conn.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        s = self.settings
        next_full = 0.0
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                conn = self._conn.get()
                full = t >= next_full
                kept = maintain(conn, full=full, stopping=self._stop.is_set)
                if full:
                    next_full = t + s.maintenance_every_s
                if not self._stop.is_set():
                    self._aws.offer_maintenance(kept)
                    if kept.errors or kept.merged_from_parked or kept.tombstones_purged:
                        self._log({"event": "maintenance", "region": s.region, **asdict(kept)})
                if conn.closed:  # maintain logs each failed statement and goes on; a lost connection is reopened
                    self._conn.close()
            except Exception as exc:  # noqa: BLE001 - housekeeping must not take the fence down; retried
                self._log({"event": "maintenance_failed", "region": s.region, "error": type(exc).__name__})
                self._conn.close()
            self._stop.wait(max(0.0, s.watermark_every_s - (time.monotonic() - t)))
        self._conn.close()
