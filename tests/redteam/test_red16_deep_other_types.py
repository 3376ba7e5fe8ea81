"""Red team 16, claim 2: "no row the application can write makes a peer's apply fail for ever
because of nesting depth" (the change log refuses a jsonb image nested 1,000 levels deep).

Attack: the CHECK looks at the image's JSON nesting only. Other column types are sent inside the
image as flat JSON strings and parsed back, recursively, by their own input functions on the peer
(jsonb_populate_record in the merge, in the apply worker, under receive_change, the merge function
and the apply loop: a deeper stack than the application's INSERT had). The application writes
(APP_ROLE, plain INSERT) the deepest value of such a type that its own write accepts (found by
bisection with rolled-back attempts), then a marker row; the peer must hold both rows.
  * tsquery: 'a & (b | a & (b | ... c))' (parentheses the output keeps; its parser recurses on them)
  * jsonpath: '- - - ... 1' (unary minus chain)

Held (3 runs): tsquery is refused past 155 levels ("row is too big": it cannot be stored out of
line), jsonpath's parser stops at 9,996; the deepest value of each reached the peer, 0 apply errors,
0 parked.
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

EAST, WEST = REGIONS[0], REGIONS[1]
DOCS_POLICY = ConflictPolicy(tables=POLICY.tables, replicated=("items", "docs"))
DOCS_SCHEMA = (*APP_SCHEMA, "CREATE TABLE docs (id int PRIMARY KEY, q tsquery, p jsonpath)")
PASSWORDS = {APP_ROLE: "app-password-0123456789"}
WAIT_S = 30

VALUES = {
    "q": lambda n: "repeat('a & (b | ', %d) || 'c' || repeat(')', %d)" % (n, n),
    "p": lambda n: "repeat('- ', %d) || '1'" % n,
}


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with mesh(DOCS_POLICY, DOCS_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        for r in (EAST, WEST):
            with psycopg.connect(running.pg[r].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
                apply(c, render_roles(DOCS_POLICY, [APP_ROLE]))
        yield running


def _writes(app: psycopg.Connection, col: str, n: int) -> bool:
    try:
        with app.transaction():
            app.execute(f"INSERT INTO docs (id, {col}) VALUES (-1, ({VALUES[col](n)})::{'tsquery' if col == 'q' else 'jsonpath'})")
            raise _Rollback
    except _Rollback:
        return True
    except psycopg.Error as exc:
        _ERR[col] = str(exc).splitlines()[0][:200]
        return False


_ERR: dict[str, str] = {}


class _Rollback(Exception):
    pass


@pytest.mark.parametrize("col,rid", [("q", 1), ("p", 2)])
def test_the_deepest_value_the_source_accepts_reaches_the_peer(two: Mesh, col: str, rid: int) -> None:
    m = two
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    errors = "SELECT coalesce(apply_error_count, 0) FROM pg_stat_subscription_stats WHERE subname = %s"
    before = m.execute(WEST, errors, (sub,))[0][0]
    marker = 16_200_000 + rid
    with psycopg.connect(f"host=127.0.0.1 port={m.pg[EAST].port} dbname=postgres user={APP_ROLE} "
                         f"password={PASSWORDS[APP_ROLE]}", autocommit=True) as app:
        lo, hi = 10, 400_000
        if _writes(app, col, hi):
            lo = hi
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _writes(app, col, mid) else (lo, mid)
        t = 'tsquery' if col == 'q' else 'jsonpath'
        app.execute(f"INSERT INTO docs (id, {col}) VALUES (%s, ({VALUES[col](lo)})::{t})", (rid,))
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'after the deep row')", (marker,))
    t0 = time.monotonic()
    arrived = False
    while time.monotonic() - t0 < WAIT_S:
        if m.execute(WEST, "SELECT count(*) FROM items WHERE id = %s", (marker,))[0][0] == 1:
            arrived = True
            break
        time.sleep(0.5)
    got = m.execute(WEST, "SELECT count(*) FROM docs WHERE id = %s", (rid,))[0][0]
    after = m.execute(WEST, errors, (sub,))[0][0]
    parked = m.execute(WEST, "SELECT tbl, pk::text, sqlstate, left(error, 120) FROM fraiseql_repl.parked")
    retried = None
    if parked:
        retried = m.execute(WEST, "SELECT * FROM fraiseql_repl.retry_parked()")
        got = m.execute(WEST, "SELECT count(*) FROM docs WHERE id = %s", (rid,))[0][0]
    log = open(m.pg[WEST].log_path).read()
    print(f"\n{col}: deepest the source writes {lo}; row on the peer {got}; marker arrived {arrived}; "
          f"apply errors {before} -> {after}; parked {parked}; retry_parked {retried}; "
          f"source refuses deeper with: {_ERR.get(col)}; 'stack depth' in peer log {log.count('stack depth limit exceeded')}")
    assert arrived and got == 1, (
        f"{col} nested {lo} deep: written at the source, not on the peer after {WAIT_S} s "
        f"(marker arrived {arrived}, apply errors {after - before}, parked {parked}, retry {retried})")
