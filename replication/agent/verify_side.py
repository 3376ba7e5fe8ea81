"""The verify side: digest rounds on a thread and connection of their own, so hashing never delays the lease."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from replication.agent.aws_side import AwsSide
from replication.agent.settings import Settings
from replication.agent.side_connection import SideConnection

__all__ = ["VerifySide"]


class VerifySide:
    """Verify rounds through the control channel, on their own connection and thread, so that hashing
    a large table never delays the lease. Each round (every ``verify_every_s``): publish this writer's
    bucket digests at the round's horizon (or whole rounds earlier, while a writer has yet to apply
    what was written before it); a third of a round later, the keys of buckets that differ from a
    peer's, ``verify_max_keys`` at most; two thirds later, count the keys that really differ
    (``DivergedRows``). Each step runs just after its moment, on every writer alike."""

    def __init__(self, settings: Settings, connect: Callable[[], Any], aws: AwsSide,
                 log: Callable[[Mapping[str, Any]], None] = lambda rec: None) -> None:
        self.settings, self._aws, self._log = settings, aws, log
        self._conn = SideConnection(connect, setup="SET statement_timeout = '120s'")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraiseql-agent-verify", daemon=True)

    def start(self) -> "VerifySide":
        if self.settings.verify_every_s > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._conn.cancel()  # a step may run for minutes; the next invocation takes the round on
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        s = self.settings
        period = s.verify_every_s
        done: set[tuple[int, str]] = set()
        wait = max(period / 6, 0.2)  # not at once: an agent starts with its region
        while not self._stop.wait(wait):
            wait = max(period / 6, 0.2)
            try:
                conn = self._conn.get()
                now, = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
                rnd = int(now // period)
                phase = (now - rnd * period) / period
                horizon = rnd * period - s.verify_margin_s
                if (rnd, "digests") not in done:
                    # the step: a writer behind the horizon takes its digests whole rounds earlier
                    conn.execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), %s, %s)",
                                 (rnd, horizon, s.verify_buckets, period))
                    done.add((rnd, "digests"))
                elif phase >= 1 / 3 and (rnd, "keys") not in done:
                    keys, listed, skipped = conn.execute(
                        "SELECT * FROM fraiseql_repl.publish_key_details(%s, %s, to_timestamp(%s), %s)",
                        (rnd, s.verify_buckets, horizon, s.verify_max_keys)).fetchone()
                    done.add((rnd, "keys"))
                    if skipped:
                        self._log({"event": "verify_capped", "region": s.region, "round": rnd, "keys": int(keys),
                                   "buckets_listed": int(listed), "buckets_skipped": int(skipped),
                                   "max_keys": s.verify_max_keys})
                elif phase >= 2 / 3 and (rnd, "count") not in done:
                    n, = conn.execute("SELECT fraiseql_repl.diverged_count(%s, to_timestamp(%s))",
                                      (rnd, horizon)).fetchone()
                    self._aws.offer_diverged(int(n))
                    if n:
                        self._log({"event": "diverged_rows", "region": s.region, "round": rnd, "rows": int(n)})
                    conn.execute("SELECT fraiseql_repl.purge_digests()")
                    done = {d for d in done if d[0] >= rnd}
                    done.add((rnd, "count"))
                # Wake at the next step's moment: the writers' digests are taken within a poll of the
                # round's start, so few rows change between them (each changed row makes its bucket
                # differ and list its keys: red team 14 saw 85 % of a table listed from digests up to
                # a sixth of a round apart).
                later, = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
                steps = [(rnd + 1) * period, (rnd + 1 / 3) * period, (rnd + 2 / 3) * period]
                upcoming = [t - later for t in steps if t > later]
                wait = min([wait, *upcoming]) + 0.01 if upcoming else wait
            except Exception as exc:  # noqa: BLE001 - verify is best effort; retried next time
                if not self._stop.is_set():
                    self._log({"event": "verify_failed", "region": s.region, "error": type(exc).__name__})
                self._conn.close()
        self._conn.close()
