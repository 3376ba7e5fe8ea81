"""Red team, round 15, verify rounds, claim 4 ("least privilege"): the app role cannot call any of the
verify functions; the agent role cannot read application data through them (it may count).

Tried (expected to hold): as fraiseql_app, every overload of the verify functions (red team 14 tried
the 3-arg and 2-arg ones; here also the 4-arg publish_digests and publish_key_details that this
release's agent calls, applied_everywhere, reemit_shards) and the control tables; as fraiseql_agent,
diverged_keys, table_digest / bucket_keys directly (not SECURITY DEFINER: run as the agent, which
may not read items), and the control tables' rows (digest_keys holds primary keys).
"""

from __future__ import annotations

import psycopg

from replication.roles import AGENT_ROLE, APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, agent_conn, connect, healthy, red_mesh

APP_ATTEMPTS = [
    "SELECT fraiseql_repl.publish_digests(1, now(), 256, 6.0)",
    "SELECT fraiseql_repl.publish_digests(1, now(), 256)",
    "SELECT * FROM fraiseql_repl.publish_key_details(1, 256, now(), 1000000)",
    "SELECT fraiseql_repl.publish_key_details(1, 256, now())",
    "SELECT fraiseql_repl.publish_key_details(1, 256)",
    "SELECT * FROM fraiseql_repl.diverged_keys(1, 'infinity')",
    "SELECT fraiseql_repl.diverged_count(1, 'infinity')",
    "SELECT fraiseql_repl.purge_digests(0)",
    "SELECT fraiseql_repl.applied_everywhere()",
    "SELECT fraiseql_repl.reemit_shards('public.counters', '{\"id\": 1}')",
    "SELECT * FROM fraiseql_repl.digests",
    "SELECT * FROM fraiseql_repl.digest_keys",
    "INSERT INTO fraiseql_repl.digests VALUES ('x', 1, 'public.items', 0, -5, 'd')",
]
AGENT_ATTEMPTS = [
    "SELECT * FROM fraiseql_repl.diverged_keys(1, 'infinity')",
    "SELECT * FROM fraiseql_repl.table_digest('public.items', 1000000, 'infinity')",
    "SELECT * FROM fraiseql_repl.bucket_keys('public.items', 1, '{0}')",
    "SELECT pk FROM fraiseql_repl.digest_keys",
    "SELECT * FROM fraiseql_repl.digests",
    "INSERT INTO fraiseql_repl.digests VALUES ('x', 1, 'public.items', 0, -5, 'd')",
    "SELECT id FROM items",
]


def _allowed(c: psycopg.Connection, attempts: list[str]) -> list[str]:
    out = []
    for sql in attempts:
        try:
            c.execute(sql)
            out.append(sql)
        except psycopg.Error:
            pass
    return out


def test_verify_functions_and_tables_are_closed_to_the_roles() -> None:
    with red_mesh() as m:
        healthy({r: agent_conn(m, r) for r in (EAST, WEST, EU)})
        m.execute(EAST, "INSERT INTO items (id, v) SELECT g, 'secret' FROM generate_series(1, 100) g")
        m.wait_for(WEST, "SELECT count(*) FROM items", 100)
        with connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True) as c:
            app = _allowed(c, APP_ATTEMPTS)
        a = agent_conn(m, WEST)
        try:
            agent = _allowed(a, AGENT_ATTEMPTS)
        finally:
            a.close()
        print(f"\nallowed to {APP_ROLE}: {app}\nallowed to {AGENT_ROLE}: {agent}")
        assert not app and not agent
