"""Verify and repair: compare every replicated table across all writers, and rewrite what differs
with the winner the table's conflict policy chooses.

Hashes are computed inside PostgreSQL (``schema/verify.sql``): per bucket of primary keys, then,
for buckets that differ, one line per key. Rows changed after the *horizon* (now minus a margin and
twice the worst replication lag) may still be travelling and are not counted.

Repair goes through the normal write path: the writer that holds the winning state sends it again
(``fraiseql_repl.reemit``), every peer merges it like any change, and it is counted in
``resolutions``. Counters also re-send every writer's own shards. For ``app`` tables nothing is
chosen: each writer that differs gets a conflict row for the application.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Optional

__all__ = ["Divergence", "KeyState", "VerifyReport", "policy_winner", "repair", "verify"]

NEG_INF = Decimal("-Infinity")


@dataclass(frozen=True)
class KeyState:
    """One key on one writer: its row (with version and incarnation) and/or its tombstone."""

    row: Optional[dict[str, Any]] = None
    ts: Optional[Decimal] = None  # the row's version, epoch seconds
    vnode: Optional[str] = None
    born: Optional[Decimal] = None
    tomb_ts: Optional[Decimal] = None
    tomb_node: Optional[str] = None
    tomb_born: Optional[Decimal] = None

    @property
    def present(self) -> bool:
        return self.row is not None


@dataclass
class Divergence:
    table: str
    pk: dict[str, Any]
    strategy: str
    states: dict[str, KeyState]
    winner: Optional[str] = None  # the writer holding the winning state
    winning: str = ""             # "row", "delete" or "app: conflict for the application"

    def summary(self) -> dict[str, Any]:
        return {"table": self.table, "pk": self.pk, "strategy": self.strategy, "winner": self.winner,
                "winning": self.winning,
                "states": {n: ("row " + str(s.ts) + "@" + str(s.vnode)) if s.present
                           else ("deleted " + str(s.tomb_ts)) if s.tomb_ts is not None else "absent"
                           for n, s in self.states.items()}}


@dataclass
class VerifyReport:
    writers: list[str]
    horizon: str
    tables: dict[str, int] = field(default_factory=dict)   # table -> rows checked (reference writer)
    buckets_differing: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    #: writer -> "table (constraint)" -> children whose parent is not on that writer
    orphans: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def orphaned_rows(self) -> int:
        return sum(n for per in self.orphans.values() for n in per.values())

    @property
    def diverged_rows(self) -> int:
        return len(self.divergences)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["divergences"] = [d.summary() for d in self.divergences]
        out["diverged_rows"] = self.diverged_rows
        out["orphaned_rows"] = self.orphaned_rows
        out["by_table"] = {t: sum(1 for d in self.divergences if d.table == t) for t in self.tables}
        return out


def _version(ts: Optional[Decimal], node: Optional[str]) -> tuple[Decimal, bytes]:
    return (ts if ts is not None else NEG_INF, (node or "").encode())  # node names in C collation


def policy_winner(strategy: str, states: Mapping[str, KeyState]) -> tuple[Optional[str], str]:
    """Which writer holds the state the policy keeps for one key, and what it is.

    A delete removes the incarnations up to the one it saw; among the rows still alive the latest
    incarnation, then the newest version, wins (lww, counter: plain columns; set: the element's newest add); with no row alive the
    newest delete wins. ``app`` tables are not decided: the application resolves them.
    """
    if strategy == "app":
        return None, "app: conflict for the application"
    dead = max((s.tomb_born for s in states.values() if s.tomb_born is not None), default=None)
    alive = {n: s for n, s in states.items() if s.present and (dead is None or (s.born or NEG_INF) > dead)}
    if alive:
        rank = {n: ((s.born if s.born is not None else NEG_INF), *_version(s.ts, s.vnode)) for n, s in alive.items()}
        best = max(rank.values())
        tied = sorted(n for n in alive if rank[n] == best)
        # Same version, different content: only a write that bypassed the change log does that; the
        # content most writers hold wins, then the first writer by name.
        content = {n: json.dumps(alive[n].row, sort_keys=True, default=str) for n in tied}
        node = max(tied, key=lambda n: (sum(1 for o in tied if content[o] == content[n]), [-ord(ch) for ch in n]))
        return node, "row"
    deletes = {n: s for n, s in states.items() if s.tomb_ts is not None}
    if deletes:
        node = max(deletes, key=lambda n: _version(deletes[n].tomb_ts, deletes[n].tomb_node))
        return node, "delete"
    return None, "absent everywhere"


def _one(conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def _horizon(conns: Mapping[str, Any], margin_s: float) -> str:
    """Now minus the margin and twice the worst replay lag any writer reports (on the first clock)."""
    lag = 0.0
    for c in conns.values():
        lag = max(lag, float(_one(c, "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 "
                                     "FROM pg_catalog.pg_stat_replication") or 0.0))
    first = next(iter(conns.values()))
    return str(_one(first, "SELECT (clock_timestamp() - make_interval(secs => %s))::text", (margin_s + 2 * lag,)))


def _state(conn: Any, table: str, pk: Mapping[str, Any]) -> KeyState:
    key = json.dumps(pk)
    cols = _one(conn, "SELECT fraiseql_repl.pk_cols(%s::regclass)", (table,))
    match = " AND ".join(f"t.{_quote(c)} = k.{_quote(c)}" for c in cols)
    row = conn.execute(
        f"SELECT to_jsonb(t), extract(epoch FROM t._repl_ts), t._repl_node, extract(epoch FROM t._repl_born) "
        f"FROM {table} t, jsonb_populate_record(NULL::{table}, %s::jsonb) k WHERE {match}", (key,)).fetchone()
    tomb = conn.execute(
        "SELECT extract(epoch FROM ts), node, extract(epoch FROM born) FROM fraiseql_repl.tombstones "
        "WHERE table_name = %s AND pk = %s::jsonb", (table, key)).fetchone()
    return KeyState(row=row[0] if row else None, ts=row[1] if row else None, vnode=row[2] if row else None,
                    born=row[3] if row else None, tomb_ts=tomb[0] if tomb else None,
                    tomb_node=tomb[1] if tomb else None, tomb_born=tomb[2] if tomb else None)


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


SHARDS = "fraiseql_repl.shards"  # what the digests call the counters' shards (schema/verify.sql)


def _differing(conns: Mapping[str, Any], table: str, buckets: int, horizon: str, report: VerifyReport) -> list[str]:
    """The keys of ``table`` whose state differs between writers and is older than the horizon."""
    names = list(conns)
    first = conns[names[0]]
    digests = {n: {b: (rows, d) for b, rows, d in c.execute(
        "SELECT bucket, nrows, digest FROM fraiseql_repl.table_digest(%s, %s, %s::timestamptz)",
        (table, buckets, horizon)).fetchall()} for n, c in conns.items()}
    report.tables[table] = sum(rows for rows, _ in digests[names[0]].values())
    differing = sorted({b for n in names for b in digests[n]
                        if any(digests[o].get(b) != digests[n].get(b) for o in names)})
    report.buckets_differing[table] = len(differing)
    if not differing:
        return []
    keys: dict[str, dict[str, tuple[Any, ...]]] = {}
    for n, c in conns.items():
        for _, pk, ts, vnode, digest, deleted in c.execute(
                "SELECT bucket, pk::text, ts::text, vnode, digest, deleted "
                "FROM fraiseql_repl.bucket_keys(%s, %s, %s)", (table, buckets, differing)).fetchall():
            keys.setdefault(pk, {})[n] = (ts, vnode, digest, deleted)
    out = []
    for pk_text, seen in keys.items():
        views = {n: seen.get(n) for n in names}
        live = {n: v for n, v in views.items() if v is not None and not v[3]}
        same = (len(live) == len(names) and len({v[2] for v in live.values()}) == 1) or not live
        if same:
            continue
        in_flight = _one(first, "SELECT max(x::timestamptz) > %s::timestamptz FROM unnest(%s::text[]) x",
                         (horizon, [v[0] for v in views.values() if v is not None and v[0] is not None]))
        if in_flight:
            report.in_flight += 1
            continue
        out.append(pk_text)
    return out


def verify(conns: Mapping[str, Any], *, buckets: int = 1024, margin_s: float = 30.0,
           tables: Optional[Sequence[str]] = None) -> VerifyReport:
    """Compare every replicated table on every writer. ``conns``: writer name -> autocommit connection."""
    t0 = time.monotonic()
    names = list(conns)
    for c in conns.values():
        c.execute("SET TimeZone = 'UTC'")  # rows are compared as JSON text: one spelling of every timestamp
    horizon = _horizon(conns, margin_s)
    report = VerifyReport(writers=names, horizon=horizon)
    first = conns[names[0]]
    meta = dict(first.execute("SELECT table_name, strategy FROM fraiseql_repl.table_meta ORDER BY 1").fetchall())
    for table in tables or list(meta):
        for pk_text in _differing(conns, table, buckets, horizon, report):
            pk = json.loads(pk_text)
            states = {n: _state(c, table, pk) for n, c in conns.items()}
            winner, winning = policy_winner(meta[table], states)
            report.divergences.append(Divergence(table, pk, meta[table], states, winner, winning))
    # A counter's shards, each at its own version: a counter row changed more often than the margin
    # is never older than the horizon, while its shards change only with their own node's writes.
    counters = [t for t in tables or list(meta) if meta.get(t) == "counter"]
    if counters:
        for key_text in _differing(conns, SHARDS, buckets, horizon, report):
            shard = json.loads(key_text)
            table, pk = shard["table"], shard["pk"]
            if table not in counters or any(d.table == table and d.pk == pk for d in report.divergences):
                continue
            states = {n: _state(c, table, pk) for n, c in conns.items()}
            winner, winning = policy_winner("counter", states)
            report.divergences.append(Divergence(table, pk, "counter", states, winner, winning))
    for n, c in conns.items():
        found = {f"{t} ({con})": int(k) for t, con, k in c.execute(
            "SELECT table_name, constraint_name, orphans FROM fraiseql_repl.orphans() WHERE orphans > 0").fetchall()}
        if found:
            report.orphans[n] = found
    report.seconds = time.monotonic() - t0
    return report


def repair(conns: Mapping[str, Any], report: VerifyReport, *, dry_run: bool = False,
           log: Callable[[dict[str, Any]], Any] = lambda r: None) -> list[dict[str, Any]]:
    """Send each diverged key's winning state from the writer that holds it; returns the actions."""
    actions = []
    owners: dict[str, str] = {}  # node name -> writer, read once (only counters need it)
    for d in report.divergences:
        key = json.dumps(d.pk)
        if d.strategy == "app":
            for n, s in d.states.items():
                others = {o: t.row for o, t in d.states.items() if o != n}
                action = {"table": d.table, "pk": d.pk, "on": n, "do": "record a conflict for the application"}
                if not dry_run:
                    conns[n].execute(
                        "INSERT INTO fraiseql_repl.conflicts (table_name, pk, kind, local_row, remote_row) "
                        "VALUES (%s, %s::jsonb, 'verify: writers differ', %s::jsonb, %s::jsonb)",
                        (d.table, key, json.dumps(s.row, default=str), json.dumps(others, default=str)))
                actions.append(action)
                log(action)
            continue
        if d.strategy == "counter":
            owners = owners or {_one(c, "SELECT fraiseql_repl.node_name()"): n for n, c in conns.items()}
            for action in _shard_copies(conns, owners, d.table, key, dry_run=dry_run):
                actions.append({"table": d.table, "pk": d.pk, **action})
                log(actions[-1])
        if d.winner is None:
            continue
        won = d.states[d.winner]
        restamp = d.winning == "row" and any(
            s.present and (s.ts, s.vnode) == (won.ts, won.vnode) and s.row != won.row for s in d.states.values())
        action = {"table": d.table, "pk": d.pk, "on": d.winner,
                  "do": f"send its {d.winning} to every writer" + (" under a new version" if restamp else "")}
        if not dry_run:
            conns[d.winner].execute("SELECT fraiseql_repl.reemit(%s, %s::jsonb, %s)", (d.table, key, restamp))
            if d.strategy == "counter":
                for c in conns.values():
                    c.execute("SELECT fraiseql_repl.reemit_shards(%s, %s::jsonb)", (d.table, key))
        actions.append(action)
        log(action)
    return actions


def _shard_copies(conns: Mapping[str, Any], owners: Mapping[str, str], table: str, key: str, *,
                  dry_run: bool) -> list[dict[str, Any]]:
    """Make every writer's copy of the key's shards that no writer re-sends as its own agree: a copy
    of a writer's shard that writer does not hold is removed where it is; a '_seed' shard, or one of a
    writer that left, is sent again from a writer holding the amount most writers hold (absent counts:
    then it is removed where it is). A writer's own shards are reemit_shards' (after this). ``owners``:
    node name -> writer."""
    held = {n: {(col, node, born): amount for col, node, born, amount in c.execute(
                "SELECT col, node, born::text, amount FROM fraiseql_repl.shards WHERE table_name = %s AND pk = %s::jsonb",
                (table, key)).fetchall()} for n, c in conns.items()}
    actions: list[dict[str, Any]] = []
    for shard in sorted({s for h in held.values() for s in h}):
        col, node, born = shard
        if node in owners:
            if shard in held[owners[node]]:
                continue  # its owner sends it (reemit_shards)
            keep = None
        else:
            amounts = [held[n].get(shard) for n in conns]
            if len(set(amounts)) == 1:
                continue
            keep = max(amounts, key=lambda a: (amounts.count(a), a is not None))
        for n in conns:
            if shard not in held[n] or held[n][shard] == keep:
                continue
            if keep is None:
                why = "which its owner does not hold" if node in owners else "which most writers do not hold"
                actions.append({"on": n, "do": f"remove its copy of {node}'s shard of {col} (born {born}), {why}"})
                if not dry_run:
                    conns[n].execute("SELECT fraiseql_repl.drop_shard_copy(%s, %s::jsonb, %s, %s, %s::timestamptz)",
                                     (table, key, col, node, born))
        if keep is not None:
            source = next(n for n in conns if held[n].get(shard) == keep)
            actions.append({"on": source, "do": f"send its copy of {node}'s shard of {col} (born {born}) to every writer"})
            if not dry_run:
                conns[source].execute("SELECT fraiseql_repl.reemit_shard_copy(%s, %s::jsonb, %s, %s, %s::timestamptz)",
                                      (table, key, col, node, born))
    return actions
