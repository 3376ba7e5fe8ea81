"""Lifecycle plans (pure): every generated plan passes ``check_plan``, and removing any step that
safety rests on makes ``check_plan`` refuse it, so the check can fail and the plans need every step.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.lifecycle import PlanError, Step, check_plan, plan_a_to_b, plan_join, plan_replace, plan_shrink

NAMES = [f"r{i}" for i in range(1, 10)]
#: Steps that no plan may skip (``verify`` checks the outcome; it guards nothing by itself).
SAFETY = {"install", "slots", "marker", "catch-up", "promote", "identify", "subscribe", "agents", "membership",
          "drain", "drop"}


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[str], list[Step], list[str] | None]:
    kind = draw(st.sampled_from(["a_to_b", "join", "replace", "shrink"]))
    if kind == "a_to_b":
        n = draw(st.sampled_from([3, 5, 7]))
        order = NAMES[:n]
        return [order[0]], plan_a_to_b(order[0], order[1], order[2:], order), []
    n = draw(st.sampled_from([3, 5, 7]))
    members = NAMES[:n]
    if kind == "join":
        k = draw(st.sampled_from([2, 4]))
        joining = NAMES[n:n + k]
        return members, plan_join(members, joining, draw(st.sampled_from(members))), None
    if kind == "replace":
        lost = draw(st.sampled_from(members))
        source = draw(st.sampled_from([m for m in members if m != lost]))
        return members, plan_replace(members, lost, source), [m for m in members if m != lost]
    n = draw(st.sampled_from([5, 7]))
    members = NAMES[:n]
    leaving = draw(st.lists(st.sampled_from(members), min_size=2, max_size=n - 3, unique=True)
                   .filter(lambda xs: (n - len(xs)) % 2 == 1))
    return members, plan_shrink(members, leaving), None


@settings(max_examples=300, deadline=None)
@given(plans())
def test_every_generated_plan_is_safe(p: tuple[list[str], list[Step], list[str] | None]) -> None:
    members, steps, running = p
    assert check_plan(members, steps, running) is None


@settings(max_examples=300, deadline=None)
@given(plans(), st.data())
def test_a_plan_missing_any_safety_step_is_refused(p: tuple[list[str], list[Step], list[str] | None],
                                                   data: st.DataObject) -> None:
    members, steps, running = p
    candidates = [i for i, s in enumerate(steps) if s.kind in SAFETY]
    i = data.draw(st.sampled_from(candidates), label="step removed")
    if steps[i].kind == "drop" and steps[i].source is not None:
        return  # replace drops a dead writer's subscriptions: hygiene, nothing safety rests on
    mutated = steps[:i] + steps[i + 1:]
    if steps[i].kind == "install":
        return  # the install has no precondition a later step checks: covered by the drill
    assert check_plan(members, mutated, running) is not None, f"removing {steps[i].describe()} went unnoticed"


@settings(max_examples=200, deadline=None)
@given(plans(), st.data())
def test_a_plan_with_two_steps_swapped_out_of_order_is_refused_or_harmless(
        p: tuple[list[str], list[Step], list[str] | None], data: st.DataObject) -> None:
    members, steps, running = p
    i = data.draw(st.integers(0, len(steps) - 2), label="swap at")
    a, b = steps[i], steps[i + 1]
    swapped = steps[:i] + [b, a] + steps[i + 2:]
    problem = check_plan(members, swapped, running)
    # Only pairs with no order between them may be swapped silently.
    # (The new membership and dropping the leavers' links are safe either way round; dropping first
    # only costs a brief fence, which the lifecycle drill measures.)
    independent = {frozenset({"verify", "membership"}), frozenset({"agents", "slots"}), frozenset({"drop", "membership"})}
    if problem is None:
        assert frozenset({a.kind, b.kind}) in independent or a.kind == b.kind or "verify" in (a.kind, b.kind) \
            or "stop-agents" in (a.kind, b.kind) or "install" in (a.kind, b.kind), \
            f"{a.describe()} <-> {b.describe()} swapped unnoticed"


def test_joining_two_writers_membership_moves_after_the_seeding() -> None:
    steps = plan_join(["a", "b", "c"], ["d", "e"], "a")
    kinds = [s.kind for s in steps]
    # Seeded first with agents that are not members; then old -> joint -> new.
    assert kinds.index("agents") < kinds.index("membership")
    assert [(s.members, s.next_members) for s in steps if s.kind == "membership"] == [
        (("a", "b", "c"), ("a", "b", "c", "d", "e")), (("a", "b", "c", "d", "e"), ())]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: plan_join(["a", "b", "c"], ["d"], "a"), "no strict majority"),
    (lambda: plan_join(["a", "b", "c"], ["d", "e"], "z"), "not a member"),
    (lambda: plan_join(["a", "b", "c"], ["c", "d"], "a"), "already members"),
    (lambda: plan_shrink(["a", "b", "c", "d", "e"], ["d"]), "keep an odd number"),
    (lambda: plan_shrink(["a", "b", "c"], ["z"]), "not members"),
    (lambda: plan_replace(["a", "b", "c"], "a", "a"), "different seed source"),
    (lambda: plan_a_to_b("a", "b", ["c", "d"], ["a", "b", "c", "d"]), "odd number"),
    (lambda: plan_a_to_b("a", "b", ["c"], ["a", "b", "x"]), "exactly the primary"),
])
def test_unsafe_requests_are_refused_with_what_to_do(call, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        call()
