"""What the fence agent keeps between probes (``agent_state.apply_errors``, jsonb) loads into typed
memory and is written back in the same shape, so an agent of either release reads the other's."""

from __future__ import annotations

import json

from replication.agent.memory import AgentMemory, LinkMemory

#: As the agent before the package (replication/agent.py on integrate, 29873eb) wrote it: one entry per subscription it looked at, and
#: eligible_since while eligible.
PREVIOUS_RELEASE = {
    "fraiseql_sub_us_east_1_from_us_west_2": {"errors": 2, "error_at": 1700000000.25, "down_since": None},
    "fraiseql_ctl_us_east_1_from_us_west_2": {"errors": 0, "error_at": None, "down_since": 1700000001.5},
    "eligible_since": 1699999990.0,
}


def test_the_previous_release_memory_loads_and_is_written_back_unchanged() -> None:
    stored = json.loads(json.dumps(PREVIOUS_RELEASE))  # as psycopg hands jsonb back
    m = AgentMemory.load(stored)
    assert m.eligible_since == 1699999990.0
    assert m.links["fraiseql_sub_us_east_1_from_us_west_2"] == LinkMemory(errors=2, error_at=1700000000.25)
    assert m.links["fraiseql_ctl_us_east_1_from_us_west_2"] == LinkMemory(down_since=1700000001.5)
    assert json.loads(json.dumps(m.dump())) == PREVIOUS_RELEASE


def test_a_cold_start_has_no_memory_and_writes_none() -> None:
    for stored in (None, {}):
        m = AgentMemory.load(stored)
        assert m == AgentMemory() and m.dump() == {}


def test_a_subscription_first_looked_at_starts_clean_and_is_remembered() -> None:
    m = AgentMemory.load({})
    link = m.link("fraiseql_sub_x")
    assert link == LinkMemory(errors=0, error_at=None, down_since=None)
    link.errors, link.error_at = 1, 12.5
    assert m.link("fraiseql_sub_x") is link
    assert m.dump() == {"fraiseql_sub_x": {"errors": 1, "error_at": 12.5, "down_since": None}}


def test_no_longer_eligible_drops_eligible_since() -> None:
    m = AgentMemory.load(PREVIOUS_RELEASE)
    m.eligible_since = None
    assert "eligible_since" not in m.dump()


def test_entries_of_another_shape_are_carried_as_they_are() -> None:
    stored = {**PREVIOUS_RELEASE, "some_later_flag": [1, 2], "eligible_since": "not a number"}
    out = AgentMemory.load(stored).dump()
    assert out["some_later_flag"] == [1, 2]
    assert "eligible_since" not in out  # unreadable: as if not eligible (the agent before did the same)
