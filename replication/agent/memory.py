"""What the agent remembers from one probe to the next, kept in ``agent_state.apply_errors`` (jsonb).

The stored shape (unchanged since the first release, so any agent reads any other's)::

    {"<subscription>": {"errors": 3, "error_at": 1700000000.5, "down_since": null}, ...,
     "eligible_since": 1700000000.0}

One entry per data and control subscription the agent has looked at, and ``eligible_since`` while
its region is eligible to write. Keys it does not know are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["AgentMemory", "LinkMemory"]

ELIGIBLE_SINCE = "eligible_since"


def _number(raw: Any) -> Optional[float]:
    return float(raw) if isinstance(raw, (int, float)) else None


@dataclass
class LinkMemory:
    """One subscription: its apply error count when last seen, when that count last went up, and
    since when its apply worker has been missing (this writer's clock, epoch seconds)."""

    errors: int = 0
    error_at: Optional[float] = None
    down_since: Optional[float] = None

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> "LinkMemory":
        return cls(errors=int(raw.get("errors") or 0), error_at=_number(raw.get("error_at")),
                   down_since=_number(raw.get("down_since")))

    def dump(self) -> dict[str, Any]:
        return {"errors": self.errors, "error_at": self.error_at, "down_since": self.down_since}


@dataclass
class AgentMemory:
    links: dict[str, LinkMemory] = field(default_factory=dict)
    #: When this region became eligible without a break since (``None``: it is not eligible).
    eligible_since: Optional[float] = None
    #: Entries of another shape, carried as they are.
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: Optional[Mapping[str, Any]]) -> "AgentMemory":
        out = cls()
        for key, value in (raw or {}).items():
            if key == ELIGIBLE_SINCE:
                out.eligible_since = _number(value)
            elif isinstance(value, Mapping):
                out.links[key] = LinkMemory.load(value)
            else:
                out.other[key] = value
        return out

    def link(self, subscription: str) -> LinkMemory:
        """The subscription's memory, new (no errors, never down) the first time it is looked at."""
        return self.links.setdefault(subscription, LinkMemory())

    def dump(self) -> dict[str, Any]:
        return {**self.other, **{k: m.dump() for k, m in self.links.items()},
                **({ELIGIBLE_SINCE: self.eligible_since} if self.eligible_since is not None else {})}
