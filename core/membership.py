"""Quorum membership (phases B and C): who counts toward a write majority, and what routing must hold.

The members are the regions whose fence agents vote (`fraiseql:quorum.members`, by default every
region without `seed_from`). A membership change goes through joint consensus: while
`fraiseql:quorum.next_members` is set, a region may write only with a majority of each list, so the
old and the new majority always overlap. Only members ever write; a region that is not a member
(still seeding, or about to be removed) is fenced by its agent.

Size rules, shared by config validation and the policy pack:
- a list that decides alone (no change in progress) has an odd count of at least 3;
- during a change either list may be even (3 -> 4 -> 5 passes through 4), but has at least 3;
- the one exception is the start of the A -> B transition: a single writer whose every other region
  is still a read replica of it. One writer cannot split its brain; the list grows by a joint change.
"""

from __future__ import annotations

from typing import Optional, Sequence

from core.slo import quorum_size


def majority(n: int) -> int:
    """Strict majority of `n` members, for any `n >= 1`.

    The one definition is `quorum_size` (odd `n >= 3`); an even `n` needs what `n + 1` needs (its
    half plus one), and a single member is its own majority.
    """
    if n < 1:
        raise ValueError(f"a member list needs at least one region (got {n})")
    if n == 1:
        return 1
    return quorum_size(n if n % 2 else n + 1)


def routing_rule(order: Sequence[str], members: Sequence[str], next_members: Optional[Sequence[str]]) -> tuple[list[str], int]:
    """The routing controls the ARC safety rule asserts (every control of either list, in `order`)
    and its `ATLEAST` threshold.

    Any set of that many routed regions among them holds a majority of each list: a list of `m`
    regions inside `u` asserted controls keeps at least `threshold - (u - m)` of its own routed.
    Taking the larger of the two lists' thresholds alone would not do: going from 3 to 5, three
    routed regions may be the two newcomers and one old member, a minority of the old list.
    """
    lists = [list(members)] + ([list(next_members)] if next_members else [])
    asserted = [r for r in order if any(r in lst for lst in lists)]
    threshold = max(len(asserted) - len(lst) + majority(len(lst)) for lst in lists)
    return asserted, threshold


def list_problem(members: Sequence[str], *, joint: bool, writers: Sequence[str]) -> Optional[str]:
    """Why a member list cannot decide a write majority, or None. `writers` are the regions without
    `seed_from`; `joint` is whether a membership change is in progress."""
    n = len(members)
    if n == 1 and list(members) == list(writers):
        return None
    if n == 1:
        return ("a single member is only for the start of the A -> B transition, while every other region is "
                f"still a read replica of it; {', '.join(w for w in writers if w not in members)} write too")
    if n < 3:
        return f"has {n} regions; a write quorum needs at least 3, so that one region can fail"
    if n % 2 == 0 and not joint:
        return (f"has {n} regions; an even count is only for a membership change in progress (with "
                "quorum.next_members), since a clean split would leave no majority")
    return None
