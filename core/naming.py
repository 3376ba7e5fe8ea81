"""Deterministic logical names and explicitly merged tags."""

from __future__ import annotations

from typing import Mapping

PROJECT = "fraiseql"
RESERVED_TAGS = ("Name", "project", "phase", "stack", "component")


def logical_name(base: str, role: str, region: str | None = None) -> str:
    """`{base}-{role}-{region}`: stable across runs, never list positions or clocks."""
    return f"{base}-{role}-{region}" if region else f"{base}-{role}"


_DIRECTIONS = {"north": "n", "south": "s", "east": "e", "west": "w", "central": "c",
               "northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw"}


def region_code(region: str) -> str:
    """AWS's short form of a region: us-east-1 -> use1, ap-northeast-1 -> apne1, eu-central-1 -> euc1."""
    area, direction, number = region.split("-")
    return f"{area}{_DIRECTIONS[direction]}{number}"


def short_logical_name(base: str, role: str, region: str) -> str:
    """`{base}-{role}-{region code}`: for the resources whose autoname (logical name, "-" and 7 hex
    characters) must fit 32 characters, the ALB and its target group, whatever the region."""
    return logical_name(base, role, region_code(region))


def merge_tags(
    user_tags: Mapping[str, str], *, name: str, phase: str, stack: str, component: str
) -> dict[str, str]:
    """User tags first, then the reserved ones, which always win (config validation forbids clashes)."""
    merged = dict(user_tags)
    merged.update(
        {"Name": name, "project": PROJECT, "phase": phase, "stack": stack, "component": component}
    )
    return merged


def entry_point_ruleset_name(stack: str, entry_point: str) -> str:
    """The name of the zone entry-point ruleset a stack owns (`waf`, `rate_limit`, `cache`): how
    `ops preflight` tells the stack's own entry points from someone else's."""
    return f"{PROJECT} {stack} {entry_point.replace('_', ' ')}"
