"""Red team, round 14, merge marker, claim (a): "no change is ever lost, and a change that cannot be
merged is eventually parked so the link never stalls for ever (no endless loop of fast attempts
that fail)".

Attack: a row the subscriber cannot even read. The apply worker parses each change's row_image
(jsonb, sent as text by pgoutput) while it builds the row for fraiseql_repl.changes, before any
trigger runs: an error there is no merge error. It is counted with the marker even (no merge under
way), so the retry goes fast, fails the same way, and nothing is ever parked. jsonb's text parser is
recursive (stack depth, max_stack_depth 2 MB), but a jsonb value can be built deeper than the
parser reads without parsing: the application (APP_ROLE, plain INSERT ... SELECT on a replicated
table with a jsonb column, the shape of FraiseQL's own tables) parses a value a little under the
source's limit and wraps it in jsonb_build_array 1,000 more times in a recursive CTE. The source
stores it and commits (binary jsonb, nothing re-parses it there); every attempt of the subscriber
to read it fails with "stack depth limit exceeded", for ever, and nothing the region writes after
it reaches that peer.

Seen (2 runs of 2, and 2 exploratory runs): the source parses 16,338 levels; rows of 16,138 + 1 and
+ 100 levels arrive; the row of 16,138 + 1,000 levels never does, nor the row written after it;
apply_error_count 62 within 30 s (one failed attempt every ~0.5 s, wal_retrieve_retry_interval),
0 parked.

Fixed: an image with a value nested 1,000 levels deep is refused where it is written (the change
log's CHECK changes_image_nested_under_1000_levels, with the error the application sees); all three
rows here are refused at the source and the row after them arrives. The second test holds the
boundary: 999 levels are written and arrive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import apply
from replication.model import ConflictPolicy
from replication.roles import APP_ROLE, render_roles, secret_options
from replication.sql import subscription_name
from tests.redteam.harness import jsonb_parse_limit

EAST, WEST = REGIONS[0], REGIONS[1]
DOCS_POLICY = ConflictPolicy(tables=POLICY.tables, replicated=("items", "docs"))
DOCS_SCHEMA = (*APP_SCHEMA, "CREATE TABLE docs (id int PRIMARY KEY, data jsonb)")
PASSWORDS = {APP_ROLE: "app-password-0123456789"}
WAIT_S = 30


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with mesh(DOCS_POLICY, DOCS_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        for r in (EAST, WEST):
            with psycopg.connect(running.pg[r].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
                apply(c, render_roles(DOCS_POLICY, [APP_ROLE]))
        yield running


def test_a_deeply_nested_row_reaches_the_peer_or_is_refused_at_the_source(two: Mesh) -> None:
    m = two
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    errors = "SELECT coalesce(apply_error_count, 0) FROM pg_stat_subscription_stats WHERE subname = %s"
    before = m.execute(WEST, errors, (sub,))[0][0]
    written, refused = [], []
    with psycopg.connect(f"host=127.0.0.1 port={m.pg[EAST].port} dbname=postgres user={APP_ROLE} "
                         f"password={PASSWORDS[APP_ROLE]}", autocommit=True) as app:
        lo = jsonb_parse_limit(app)
        base = lo - 200
        for i, extra in enumerate((1, 100, 1000), start=1):  # deeper than parsed, built without parsing
            try:
                app.execute(f"""INSERT INTO docs (id, data) WITH RECURSIVE r(i, j) AS (
                    SELECT 0, (repeat('[', {base}) || repeat(']', {base}))::jsonb UNION ALL
                    SELECT i + 1, jsonb_build_array(j) FROM r WHERE i < {extra})
                    SELECT {i}, j FROM r WHERE i = {extra}""")
                written.append((i, base + extra))
            except psycopg.Error as exc:  # refused at the source: nothing queued, the claim holds for it
                refused.append((i, base + extra, str(exc).splitlines()[0]))
        app.execute("INSERT INTO items (id, v) VALUES (14900001, 'after the deep rows')")
    t0 = time.monotonic()
    arrived = False
    while time.monotonic() - t0 < WAIT_S:
        if m.execute(WEST, "SELECT count(*) FROM items WHERE id = 14900001")[0][0] == 1:
            arrived = True
            break
        time.sleep(0.5)
    got = [r[0] for r in m.execute(WEST, "SELECT id FROM docs ORDER BY id")]
    after = m.execute(WEST, errors, (sub,))[0][0]
    parked = m.execute(WEST, "SELECT count(*) FROM fraiseql_repl.parked")[0][0]
    stack = open(m.pg[WEST].log_path).read().count("stack depth limit exceeded")
    print(f"\ndeepest parse at the source {lo}; written (id, depth) {written}; refused {refused}; arrived {got}; "
          f"the row after them arrived: {arrived}; apply errors {before} -> {after}; parked {parked}; "
          f"'stack depth limit exceeded' in the subscriber's log: {stack}")
    assert arrived and len(got) == len(written), (
        f"the application wrote a jsonb row its peer cannot read: the data link {EAST} -> {WEST} has been failing "
        f"for {WAIT_S} s ({after - before} apply errors, {parked} parked), rows {[w for w in written if w[0] not in got]} "
        f"and everything after them never arrived")


def test_a_value_nested_999_levels_is_written_and_arrives_and_1000_is_refused_with_the_rules_name(two: Mesh) -> None:
    m = two
    with psycopg.connect(f"host=127.0.0.1 port={m.pg[EAST].port} dbname=postgres user={APP_ROLE} "
                         f"password={PASSWORDS[APP_ROLE]}", autocommit=True) as app:
        app.execute("INSERT INTO docs (id, data) VALUES (999, (repeat('[', 999) || repeat(']', 999))::jsonb)")
        with pytest.raises(psycopg.errors.CheckViolation, match="changes_image_nested_under_1000_levels"):
            app.execute("INSERT INTO docs (id, data) VALUES (1000, (repeat('[', 1000) || repeat(']', 1000))::jsonb)")
    m.wait_for(WEST, "SELECT count(*) FROM docs WHERE id = 999", 1)
    assert m.execute(WEST, "SELECT count(*) FROM docs WHERE id = 1000") == [(0,)]
