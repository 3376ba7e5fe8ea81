"""The agent's housekeeping: parked changes retried, tombstones and changes purged (run by
``replication.agent.maintenance_side``, off the lease loop)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Maintenance", "evict_bucket_squatters", "maintain"]


@dataclass
class Maintenance:
    """What the agent's periodic housekeeping did (see ``maintain``)."""

    parked: int
    merged_from_parked: int = 0
    tombstones_purged: int = 0
    changes_purged: int = 0
    errors: list[str] = field(default_factory=list)


def maintain(conn: Any, *, full: bool, stopping: Callable[[], bool] = lambda: False) -> Maintenance:
    """Housekeeping (the watermark, what this writer has applied so peers can purge tombstones
    safely, goes out with every probe): count the parked changes; with ``full``, also retry them
    and purge what is safe to purge.

    A failure here is logged and retried next time; it never stops the agent. Once ``stopping``
    says so, the statements left are skipped (the invocation is ending).
    """
    errors: list[str] = []

    def run(sql: str) -> Any:
        if stopping():
            return None
        try:
            return conn.execute(sql).fetchone()
        except Exception as exc:  # noqa: BLE001 - housekeeping must not take the fence down
            errors.append(f"{sql.split('(')[0]}: {type(exc).__name__}")
            return None

    out = Maintenance(parked=0, errors=errors)  # the watermark goes out with every probe
    if full:
        retried = run("SELECT merged, still_parked FROM fraiseql_repl.retry_parked()")
        if retried:
            out.merged_from_parked = int(retried[0])
        out.tombstones_purged = int((run("SELECT fraiseql_repl.purge_tombstones()") or (0,))[0])
        out.changes_purged = int((run("SELECT fraiseql_repl.purge_changes()") or (0,))[0])
        run("SELECT fraiseql_repl.compact_resolutions()")
    parked = run("SELECT count(*) FROM fraiseql_repl.parked WHERE sqlstate <> 'FQ004'")
    out.parked = int(parked[0]) if parked else -1
    return out


def evict_bucket_squatters(conn: Any) -> int:
    """End the sessions of other roles that hold (or wait for) a merge's key-bucket lock exclusive
    while an apply worker waits on one (``fraiseql_repl.evict_bucket_squatters``): any role can take
    advisory locks, and one held would stall the data links into this writer. Run every probe, so a
    link stalls for at most about one probe. Returns how many were ended; -1 if the call failed (it
    never stops the lease loop)."""
    try:
        return int(conn.execute("SELECT fraiseql_repl.evict_bucket_squatters()").fetchone()[0])
    except Exception:  # noqa: BLE001 - housekeeping must not take the fence down
        return -1
