"""Red team, round 14, merge marker, claim (a): "no change is ever lost, and a change that cannot be
merged is eventually parked so the link never stalls for ever (no endless loop of fast attempts
that fail)".

Attack: a change that fails before any merge can park it. The capture stores every row as jsonb
(fraiseql_repl.changes.row_image, to_jsonb of the row), and the data link sends it in text form
(pgoutput calls jsonb_out). jsonb keeps a string's bytes as they are; its text form escapes each
control character as \\u00XX, six bytes for one. So the application (APP_ROLE: plain INSERT on a
replicated table) writes ONE row whose text column holds 180,000,000 bytes of chr(1): PostgreSQL
takes it (text goes to 1 GB; the jsonb is 180 MB, under jsonb's 256 MB; it compresses to almost
nothing), the commit succeeds, and every time the publisher's walsender decodes it the text form
would be 1.08 GB: "string buffer exceeds maximum allowed length (1073741823 bytes)", the walsender
ends, the subscriber counts an apply error (the marker even: nothing was merged), reconnects and
receives the same transaction again, for ever. Nothing is parked, nothing after the row on that
link is ever delivered (every later write of the region is held back from that peer), and each
attempt re-decodes 180 MB on the publisher.

Seen (3 runs of 3, one exploratory as superuser and two as APP_ROLE): the insert committed at the
source; the next row never arrived in 60-80 s; walsender "string buffer exceeds maximum allowed
length (1073741823 bytes)" 4, 7 and 4 times (one per attempt, each re-decoding the 180 MB);
apply_error_count 0 -> 4 / 7; 0 parked.

Fixed: the change log refuses an image over 170 MB (check constraint changes_image_sendable), so
the write fails at the source (the error raised is PostgreSQL's "string buffer exceeds maximum
allowed length", while it prints the failing row for the check's message).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import apply
from replication.roles import APP_ROLE, render_roles, secret_options
from replication.sql import subscription_name

EAST, WEST = REGIONS[0], REGIONS[1]
PASSWORDS = {APP_ROLE: "app-password-0123456789"}
BASE = 14_700_000
WAIT_S = 60


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        for r in (EAST, WEST):
            with psycopg.connect(running.pg[r].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
                apply(c, render_roles(POLICY, [APP_ROLE]))
        yield running


@pytest.mark.parametrize("run", [1])
def test_one_application_row_whose_change_cannot_be_sent_does_not_stall_the_link(two: Mesh, run: int) -> None:
    m = two
    global BASE
    BASE += 1_000
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'first')", (BASE,))
    m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id = {BASE}", 1)
    errors = "SELECT coalesce(apply_error_count, 0) FROM pg_stat_subscription_stats WHERE subname = %s"
    before = m.execute(WEST, errors, (sub,))[0][0]
    refused = None
    with psycopg.connect(f"host=127.0.0.1 port={m.pg[EAST].port} dbname=postgres user={APP_ROLE} "
                         f"password={PASSWORDS[APP_ROLE]}", autocommit=True) as app:
        try:
            app.execute("INSERT INTO items (id, v) VALUES (%s, repeat(chr(1), 180000000))", (BASE + 1,))
        except psycopg.Error as exc:  # refused at the source: the claim holds (the write failed, nothing queued)
            refused = f"{type(exc).__name__}: {str(exc)[:200]}"
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'after')", (BASE + 2,))
    t0 = time.monotonic()
    arrived = False
    while time.monotonic() - t0 < WAIT_S:
        if m.execute(WEST, f"SELECT count(*) FROM items WHERE id = {BASE + 2}")[0][0] == 1:
            arrived = True
            break
        time.sleep(1)
    after = m.execute(WEST, errors, (sub,))[0][0]
    parked = m.execute(WEST, "SELECT count(*) FROM fraiseql_repl.parked")[0][0]
    log = open(m.pg[EAST].log_path).read()
    too_long = log.count("string buffer exceeds maximum allowed length")
    print(f"\n[run {run}] refused at source: {refused}; the next row arrived: {arrived} "
          f"(waited {time.monotonic() - t0:.0f} s); apply errors {before} -> {after}; parked {parked}; "
          f"walsender 'string buffer exceeds maximum allowed length' errors: {too_long}")
    # Let the link go (for other tests in this module): remove the row at the source is not enough (the
    # transaction is already in the WAL); the probe leaves the mesh to be torn down.
    assert refused or arrived, (
        f"one application row stalled the data link {EAST} -> {WEST} for {WAIT_S} s and counting: its change "
        f"cannot be sent (the walsender failed {too_long} times), nothing parked ({parked}), "
        f"apply errors {before} -> {after}")
