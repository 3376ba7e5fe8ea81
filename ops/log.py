"""Progress log: one line per event, human-readable or JSON lines (`--json`).

Every record has `step`, `status`, `elapsed_s` (seconds since the runbook started, by the injected
clock) and `detail`; `data` carries structured values when a step has any. In text mode each line
also shows the elapsed time against the RTO when the command has one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

# Statuses a record may carry.
START, OK, SKIP, INFO, WARN, RETRY, WOULD, REFUSED, FAILED, DONE, WAITING, PROBLEM = (
    "start", "ok", "skip", "info", "warn", "retry", "would", "refused", "failed", "done", "waiting", "problem",
)


@dataclass
class Reporter:
    out: TextIO
    json_mode: bool
    clock: Callable[[], float]
    rto_s: Optional[float] = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def emit(self, step: str, status: str, detail: str, /, **data: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"step": step, "status": status, "elapsed_s": round(self.elapsed(), 3), "detail": detail}
        if data:
            record["data"] = data
        self.events.append(record)
        if self.json_mode:
            self.out.write(json.dumps(record, default=str, sort_keys=False) + "\n")
        else:
            budget = f" / {self.rto_s:g}s" if self.rto_s else ""
            self.out.write(f"[{record['elapsed_s']:8.1f}s{budget}] {step:<10} {status:<8} {detail}\n")
        self.out.flush()
        return record

    def text(self, line: str = "") -> None:
        """A free-form line (headers, timelines) in text mode; nothing in JSON mode."""
        if not self.json_mode:
            self.out.write(line + "\n")
            self.out.flush()
