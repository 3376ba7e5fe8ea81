"""The plain model phase B is rendered from: nodes and the conflict policy.

Pure data, no I/O: the Pulumi components build these from stack config and
``replication.sql`` turns them into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["ConflictPolicy", "Node", "Strategy", "TablePolicy", "ident_suffix"]

Strategy = Literal["lww", "counter", "set", "app"]
STRATEGIES: tuple[Strategy, ...] = ("lww", "counter", "set", "app")

_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


def ident_suffix(name: str) -> str:
    """A node/region name made safe for use inside SQL identifiers (``us-east-1`` → ``us_east_1``)."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


@dataclass(frozen=True)
class Node:
    """One writer database (an RDS instance in one region)."""

    name: str
    region: str
    host: str
    port: int = 5432
    dbname: str = "fraiseql"
    user: str = "fraiseql_repl"
    #: 1..sequence_stride, distinct per writer: its identity values are congruent to it.
    index: int = 0

    def __post_init__(self) -> None:
        if not self.name or len(ident_suffix(self.name)) > 40:
            raise ValueError(f"node name must be 1-40 characters: {self.name!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"bad port {self.port} for node {self.name!r}")


@dataclass(frozen=True)
class TablePolicy:
    """How conflicts on one replicated table are decided.

    ``columns`` names the counter columns for ``counter``; it is unused by the
    other strategies.
    """

    table: str
    strategy: Strategy
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _TABLE_RE.match(self.table):
            raise ValueError(
                f"table {self.table!r}: use a lower-case [schema.]name without quoting"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"table {self.table!r}: unknown strategy {self.strategy!r}")
        if self.strategy == "counter" and not self.columns:
            raise ValueError(f"counter table {self.table!r} needs its counter columns")
        for c in self.columns:
            if not re.match(r"^[a-z_][a-z0-9_]*$", c):
                raise ValueError(f"table {self.table!r}: bad column name {c!r}")

    @property
    def qualified(self) -> str:
        """``schema.table`` (``public`` when no schema is given)."""
        return self.table if "." in self.table else f"public.{self.table}"


@dataclass(frozen=True)
class ConflictPolicy:
    """Conflict handling for every replicated table.

    ``tables`` lists tables with an explicit strategy; ``replicated`` lists
    further tables that take ``default``. Only these tables are published.
    """

    default: Literal["lww"] = "lww"
    tables: tuple[TablePolicy, ...] = ()
    replicated: tuple[str, ...] = ()
    #: Writers hand out identity values k, k + stride, ...: room for this many writers over time.
    sequence_stride: int = 16

    def __post_init__(self) -> None:
        names = [t.qualified for t in self.all_tables()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tables listed twice in the policy: {dupes}")

    def all_tables(self) -> tuple[TablePolicy, ...]:
        """Every replicated table with its effective strategy, in declaration order."""
        return self.tables + tuple(TablePolicy(t, self.default) for t in self.replicated)

    def strategy_for(self, table: str) -> Strategy | None:
        """The strategy of ``table`` or ``None`` when the table is not replicated."""
        q = table if "." in table else f"public.{table}"
        for t in self.all_tables():
            if t.qualified == q:
                return t.strategy
        return None
