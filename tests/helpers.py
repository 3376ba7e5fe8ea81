"""Lookups over a Synthesis used by the component tests."""

from __future__ import annotations

from infra.mocks import Registration
from infra.synth import Synthesis


def one(syn: Synthesis, typ: str, name: str) -> Registration:
    found = [r for r in syn.resources if r.type == typ and r.name == name]
    assert len(found) == 1, f"expected one {typ} named {name}, found {[r.name for r in syn.of_type(typ)]}"
    return found[0]


def by_output(syn: Synthesis, typ: str, key: str, value) -> Registration:
    found = [r for r in syn.of_type(typ) if r.outputs.get(key) == value]
    assert len(found) == 1, f"expected one {typ} with {key}={value}"
    return found[0]


def in_region(syn: Synthesis, typ: str, region: str) -> list[Registration]:
    return [r for r in syn.of_type(typ) if r.region == region]


def waits_for(syn: Synthesis, later: Registration, earlier: Registration) -> bool:
    """The engine cannot create `later` before `earlier`: `earlier` is among `later`'s dependencies
    (its inputs' and `depends_on`), directly or through others. A topological sort that happens to
    order them would prove nothing; only this edge holds on every `pulumi up`."""
    by_urn = {r.urn: r for r in syn.registrations}
    seen: set[str] = set()
    todo = list(later.dependencies)
    while todo:
        urn = todo.pop()
        if urn == earlier.urn:
            return True
        if urn not in seen and urn in by_urn:
            seen.add(urn)
            todo.extend(by_urn[urn].dependencies)
    return False
