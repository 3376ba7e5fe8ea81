"""Golden URN sets: what each stack file synthesizes, pinned so that a refactor cannot replace resources unseen.

A changed URN is a delete plus a create to the engine, unless the resource carries an alias to the old URN.
One line per resource or component, sorted: `URN[\tprotect][\talias=OLD_URN ...]`.

Regenerate after an intended change (refuses while a protected resource lost its URN without an alias):

    .venv/bin/python -m tests.golden --write
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from infra.mocks import Registration

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
REGENERATE = ".venv/bin/python -m tests.golden --write"


@dataclass(frozen=True)
class Entry:
    urn: str
    protect: bool = False
    aliases: tuple[str, ...] = ()

    def line(self) -> str:
        return "\t".join([self.urn, *(["protect"] if self.protect else []), *(f"alias={a}" for a in self.aliases)])

    @classmethod
    def parse(cls, line: str) -> "Entry":
        urn, *rest = line.split("\t")
        unknown = [f for f in rest if f != "protect" and not f.startswith("alias=")]
        if unknown:
            raise ValueError(f"golden line for {urn} has unknown fields {unknown}")
        return cls(urn, "protect" in rest, tuple(f[len("alias="):] for f in rest if f.startswith("alias=")))


def entries(registrations: Iterable[Registration]) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for r in registrations:
        if r.urn in found:
            raise ValueError(f"two registrations share the URN {r.urn}")
        found[r.urn] = Entry(r.urn, r.protect, tuple(sorted(r.aliases)))
    return found


def golden_path(stack: str) -> Path:
    return GOLDEN_DIR / f"{stack}.urns"


def render(stack: str, current: dict[str, Entry]) -> str:
    head = f"# URNs that stack {stack} synthesizes under the mocks. Regenerate: {REGENERATE}\n"
    return head + "".join(current[u].line() + "\n" for u in sorted(current))


def read_golden(path: Path) -> dict[str, Entry]:
    lines = [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
    return {e.urn: e for e in map(Entry.parse, lines)}


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    # Protected resources whose golden URN is gone and that no current resource aliases.
    unaliased_protected: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def report(self, stack: str) -> str:
        lines: list[str] = []
        if self.unaliased_protected:
            lines.append(f"{stack}: protected resources would be REPLACED (URN gone, no alias to it):")
            lines += [f"  - {u}" for u in self.unaliased_protected]
            lines.append("  add `aliases=[pulumi.Alias(...)]` (or the old URN) to the resource that replaces each one")
        if self.removed:
            lines.append(f"{stack}: {len(self.removed)} URN(s) no longer synthesized:")
            lines += [f"  - {u}" for u in self.removed]
        if self.added:
            lines.append(f"{stack}: {len(self.added)} new URN(s):")
            lines += [f"  + {u}" for u in self.added]
        if self.changed:
            lines.append(f"{stack}: protect flag or aliases changed:")
            lines += [f"  ~ {u}" for u in self.changed]
        if not self.same:
            lines.append(f"if the change is intended, regenerate the goldens: {REGENERATE}")
        return "\n".join(lines)


def compare(golden: dict[str, Entry], current: dict[str, Entry]) -> Diff:
    aliased = {a for e in current.values() for a in e.aliases}
    removed = sorted(set(golden) - set(current))
    return Diff(
        added=sorted(set(current) - set(golden)),
        removed=removed,
        changed=sorted(u for u in set(golden) & set(current) if golden[u] != current[u]),
        unaliased_protected=[u for u in removed if golden[u].protect and u not in aliased],
    )


def stacks(root: Path) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from infra.synth import REPO, synthesize

    parser = argparse.ArgumentParser(prog="python -m tests.golden", description="check or regenerate golden URNs")
    parser.add_argument("--write", action="store_true", help="rewrite the golden files from the current program")
    parser.add_argument("stacks", nargs="*", help="stack names (default: every Pulumi.<stack>.yaml)")
    args = parser.parse_args(argv)
    status = 0
    for stack in args.stacks or stacks(REPO):
        current = entries(synthesize(stack).registrations)
        path = golden_path(stack)
        diff = compare(read_golden(path), current) if path.exists() else Diff(added=sorted(current))
        if diff.unaliased_protected:
            print(diff.report(stack), file=sys.stderr)
            print(f"{stack}: not written: alias the protected resources first", file=sys.stderr)
            status = 1
            continue
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(stack, current))
            print(f"{stack}: {len(current)} URNs written to {path.relative_to(REPO)}"
                  + ("" if diff.same else f" (+{len(diff.added)} -{len(diff.removed)} ~{len(diff.changed)})"))
        elif not diff.same:
            print(diff.report(stack), file=sys.stderr)
            status = 1
        else:
            print(f"{stack}: {len(current)} URNs match {path.relative_to(REPO)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
