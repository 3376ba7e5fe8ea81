"""Judges a nemesis run from its history, Jepsen style: what was acknowledged, and when links were cut.

Pure functions over plain records, so the checker itself is tested with made-up histories
(``tests/drills/test_checker.py``), including ones it must reject.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Ack", "Cut", "Op", "PairWindow", "RegisterFault", "Verdict", "both_writable_windows", "check",
           "check_registers", "merge_intervals"]


@dataclass(frozen=True)
class Ack:
    """One write attempt: ``ok`` when the database acknowledged it (committed) at ``t`` (monotonic)."""

    region: str
    key: int
    t: float
    ok: bool
    sqlstate: Optional[str] = None


@dataclass(frozen=True)
class Op:
    """One operation on a key only its own region writes (a register): ``value`` None is a delete.

    ``outcome``: ``ok`` (acknowledged), ``fail`` (refused before it could commit: it did not
    happen) or ``info`` (the connection broke, it may or may not have committed).
    """

    region: str
    key: int
    value: Optional[str]
    t: float
    outcome: str


@dataclass(frozen=True)
class RegisterFault:
    """A register whose final state on ``node`` is none its history allows."""

    key: int
    node: str
    found: Optional[str]
    allowed: tuple[Optional[str], ...]

    @property
    def kind(self) -> str:
        if self.found is not None and None in self.allowed and len(self.allowed) == 1:
            return "resurrected delete"
        if self.found is None:
            return "lost write"
        return "wrong value"


@dataclass(frozen=True)
class Cut:
    """``listener`` could not hear ``speaker`` (speaker's changes did not reach it) from ``start`` to ``end``."""

    listener: str
    speaker: str
    start: float
    end: float


@dataclass(frozen=True)
class PairWindow:
    """How long two regions that could not replicate to each other both kept acknowledging writes."""

    a: str
    b: str
    cut_start: float
    cut_end: float
    window_s: float


@dataclass
class Verdict:
    bound_s: float
    worst: Optional[PairWindow]
    violations: list[PairWindow] = field(default_factory=list)
    lost: list[tuple[str, int, str]] = field(default_factory=list)  # (region written, key, node missing it)
    diverged_nodes: list[str] = field(default_factory=list)
    registers: list[RegisterFault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.lost and not self.diverged_nodes and not self.registers


def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def both_writable_windows(acks: Sequence[Ack], cuts: Sequence[Cut]) -> list[PairWindow]:
    """For every pair and every stretch in which it could not replicate (either direction cut):
    the time from the cut until the first of the two stopped acknowledging writes for good.

    That is an upper bound on "both writable": it only ends when one side's last acknowledged
    write in the stretch is behind us.
    """
    by_pair: dict[frozenset[str], list[tuple[float, float]]] = defaultdict(list)
    for c in cuts:
        by_pair[frozenset((c.listener, c.speaker))].append((c.start, c.end))
    ok_times: dict[str, list[float]] = defaultdict(list)
    for ack in acks:
        if ack.ok:
            ok_times[ack.region].append(ack.t)
    out = []
    for pair, intervals in by_pair.items():
        a, b = sorted(pair)
        for start, end in merge_intervals(intervals):
            last_a = max((t for t in ok_times[a] if start <= t <= end), default=None)
            last_b = max((t for t in ok_times[b] if start <= t <= end), default=None)
            window = 0.0 if last_a is None or last_b is None else min(last_a, last_b) - start
            out.append(PairWindow(a, b, start, end, window))
    return out


def check_registers(ops: Sequence[Op], final: Mapping[str, Mapping[int, Optional[str]]]) -> list[RegisterFault]:
    """Every register's final state on every node, against its history.

    A register is written by one client of one region, one operation at a time, so its history is
    ordered. Allowed at the end: the state after the last acknowledged operation, or what any later
    operation of unknown outcome would have left. A delete followed by nothing acknowledged must
    leave the key absent (a present key is a resurrected delete); an acknowledged write must be
    there with its value (otherwise a lost write, e.g. a re-insert taken for a deleted row).
    """
    by_key: dict[int, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    faults = []
    for key, history in sorted(by_key.items()):
        history.sort(key=lambda o: o.t)
        last_ok = max((i for i, o in enumerate(history) if o.outcome == "ok"), default=None)
        allowed: list[Optional[str]] = [None if last_ok is None else history[last_ok].value]
        allowed += [o.value for o in history[(last_ok + 1 if last_ok is not None else 0):] if o.outcome == "info"]
        for node, state in sorted(final.items()):
            found = state.get(key)
            if found not in allowed:
                faults.append(RegisterFault(key, node, found, tuple(dict.fromkeys(allowed))))
    return faults


def check(
    acks: Sequence[Ack],
    cuts: Sequence[Cut],
    bound_s: float,
    present: Mapping[str, set[int]],
    digests: Mapping[str, str],
    ops: Sequence[Op] = (),
    registers: Optional[Mapping[str, Mapping[int, Optional[str]]]] = None,
) -> Verdict:
    """``present[node]``: keys found on that node after the final heal; ``digests[node]``: a hash
    of every checked table there; ``ops`` and ``registers[node]``: the register histories and their
    final states. Every acknowledged key must be on every node, every node equal, every register as
    its history allows, and no both-writable window longer than ``bound_s``."""
    windows = both_writable_windows(acks, cuts)
    worst = max(windows, key=lambda w: w.window_s, default=None)
    verdict = Verdict(bound_s=bound_s, worst=worst, violations=[w for w in windows if w.window_s > bound_s])
    for a in acks:
        if a.ok:
            for node, keys in present.items():
                if a.key not in keys:
                    verdict.lost.append((a.region, a.key, node))
    if len(set(digests.values())) > 1:
        majority = max(set(digests.values()), key=list(digests.values()).count)
        verdict.diverged_nodes = sorted(n for n, d in digests.items() if d != majority)
    if registers is not None:
        verdict.registers = check_registers(ops, registers)
    return verdict
