"""Red team, round 17, control link, claim: "nothing a writer's application role, its fence agent's
role, the verify rounds, purges or a joining copy can do makes a control subscription's apply fail
for good (or stall for longer than stale_after) on a healthy mesh: every writer keeps receiving
every other writer's heartbeats."

Attack (the fence agent's role only, fraiseql_agent, with the grants replication.roles gives it:
SELECT, INSERT, UPDATE, DELETE on fraiseql_repl.heartbeats, own row only): on us-east-1 the agent
role re-creates its own heartbeat row (DELETE, then INSERT, as the agent does every beat) with a
``relay`` jsonb nested deeper than PostgreSQL's jsonb parser reads: it parses a value ~200 levels
under its session's limit and wraps it in jsonb_build_array 1,000 more times in a recursive CTE
(the construction of tests/redteam/test_red14_deep_jsonb.py, which the change log now refuses with
its CHECK changes_image_nested_under_1000_levels; heartbeats have no such check). The source stores
it (binary jsonb, nothing re-parses it). pgoutput sends the row in text form; each peer's apply
worker parses it with jsonb_in, fails with "stack depth limit exceeded" before any trigger runs,
and retries the same transaction for ever: nothing us-east-1 writes to its control publication
afterwards (its real heartbeats, its verify rounds) reaches any peer again, even after the agent
row is overwritten by a well-formed one.

The test FAILS while a well-formed heartbeat written on us-east-1 (by the superuser) after the
attack has not reached a peer within WAIT_S.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red17_heartbeat_unreadable.py -p no:cacheprovider
"""

from __future__ import annotations

import time

import psycopg

from replication.roles import AGENT_ROLE
from replication.sql import control_subscription_name
from tests.redteam.harness import APPLY_ERRORS, EAST, EU, WEST, beat, connect, jsonb_parse_limit, red_mesh

WAIT_S = 30


def _arrived(m, at: str, node: str, seq: int) -> bool:
    return bool(m.execute(at, "SELECT count(*) FROM fraiseql_repl.heartbeats WHERE node = %s AND seq >= %s",
                          (node, seq))[0][0])


def _wait_beat(m, node: str, seq: int, timeout: float) -> dict[str, bool]:
    deadline = time.monotonic() + timeout
    got = {r: False for r in (WEST, EU)}
    while time.monotonic() < deadline and not all(got.values()):
        for r in got:
            got[r] = got[r] or _arrived(m, r, node, seq)
        time.sleep(0.3)
    return got


def test_the_agent_role_cannot_write_a_heartbeat_its_peers_cannot_read() -> None:
    with red_mesh() as m:
        node = m.execute(EAST, "SELECT fraiseql_repl.node_name()")[0][0]
        subs = {r: control_subscription_name(m.nodes[r], m.nodes[EAST]) for r in (WEST, EU)}
        beat(m, EAST, 1)
        assert all(_wait_beat(m, node, 1, 30).values()), "the control links never delivered a first heartbeat"
        before = {r: m.execute(r, APPLY_ERRORS, (subs[r],))[0][0] for r in subs}

        agent = connect(m, EAST, AGENT_ROLE, autocommit=True)
        lo = jsonb_parse_limit(agent)
        base = lo - 200
        agent.execute("DELETE FROM fraiseql_repl.heartbeats WHERE node = %s", (node,))
        refused = None
        try:
            agent.execute(f"""INSERT INTO fraiseql_repl.heartbeats (node, seq, sent_at, relay)
                WITH RECURSIVE r(i, j) AS (
                    SELECT 0, (repeat('[', {base}) || repeat(']', {base}))::jsonb UNION ALL
                    SELECT i + 1, jsonb_build_array(j) FROM r WHERE i < 1000)
                SELECT %s, 2, clock_timestamp(), j FROM r WHERE i = 1000""", (node,))
        except psycopg.Error as exc:  # refused where it is written (heartbeats_row_readable)
            refused = str(exc).splitlines()[0]
        agent.close()

        beat(m, EAST, 3)  # a well-formed one, after it (the real agent's next beat)
        got = _wait_beat(m, node, 3, WAIT_S)
        after = {r: m.execute(r, APPLY_ERRORS, (subs[r],))[0][0] for r in subs}
        ages = {r: m.execute(r, "SELECT extract(epoch FROM clock_timestamp() - received_at)::float8 "
                                "FROM fraiseql_repl.heartbeats WHERE node = %s", (node,))[0][0] for r in subs}
        stack = {r: open(m.pg[r].log_path, errors="replace").read().count("stack depth limit exceeded") for r in subs}
        print(f"\nsource parse limit {lo}; relay {base + 1000} levels deep by {AGENT_ROLE}: refused {refused!r}; "
              f"well-formed heartbeat after it arrived: {got}; control apply errors {before} -> {after}; "
              f"age of {node}'s heartbeat row at the peers {ages} s; "
              f"'stack depth limit exceeded' in the peers' logs {stack}")
        assert all(got.values()), (
            f"{AGENT_ROLE} wrote one heartbeat row its peers cannot parse: the control links from {EAST} have failed "
            f"for {WAIT_S} s ({after} apply errors), and no later heartbeat of {EAST} reaches {[r for r, v in got.items() if not v]}")
