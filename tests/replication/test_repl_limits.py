"""Changes that reach a node out of causal order converge anyway: images merge by version, and a
delete removes the incarnation it saw (the limits the previous design documented as xfail)."""

from __future__ import annotations

import time

from drills.mesh import REGIONS, Mesh

A, B, C = REGIONS


def test_update_overtaking_its_insert_converges(m: Mesh) -> None:
    m.links[(C, A)].partition()  # only C <- A is slow
    try:
        m.execute(A, "INSERT INTO items VALUES (900, 'created on a')")
        m.wait_for(B, "SELECT v FROM items WHERE id = 900", "created on a")
        m.execute(B, "UPDATE items SET v = 'updated on b' WHERE id = 900")
        # C has B's update, not A's insert: the update is the newer state, so C holds it
        m.wait_for(C, "SELECT v FROM items WHERE id = 900", "updated on b")
    finally:
        m.heal()
    m.wait_converged(["items"], timeout=10)
    assert {m.execute(n, "SELECT v FROM items WHERE id = 900")[0][0] for n in REGIONS} == {"updated on b"}


def test_a_reinsert_overtaking_the_delete_it_followed_survives_it(m: Mesh) -> None:
    m.execute(A, "INSERT INTO items VALUES (901, 'first')")
    m.wait_converged(["items"])
    m.links[(C, A)].partition()
    try:
        m.execute(A, "DELETE FROM items WHERE id = 901")
        m.wait_for(B, "SELECT count(*) FROM items WHERE id = 901", 0)
        m.execute(B, "INSERT INTO items VALUES (901, 'second life')")  # B saw the delete
        m.wait_for(C, "SELECT v FROM items WHERE id = 901", "second life")
    finally:
        m.heal()
    m.wait_converged(["items"], timeout=10)
    time.sleep(0.2)
    assert {m.execute(n, "SELECT v FROM items WHERE id = 901")[0][0] for n in REGIONS} == {"second life"}


def test_an_update_that_did_not_see_a_concurrent_delete_does_not_resurrect_the_row(m: Mesh) -> None:
    m.execute(A, "INSERT INTO items VALUES (902, 'x')")
    m.wait_converged(["items"])
    with m.paused():
        m.execute(A, "DELETE FROM items WHERE id = 902")
        m.execute(B, "UPDATE items SET v = 'late edit' WHERE id = 902")  # later clock, same incarnation
    m.wait_converged(["items"], timeout=10)
    assert all(m.execute(n, "SELECT count(*) FROM items WHERE id = 902") == [(0,)] for n in REGIONS)


def test_column_names_that_collide_with_the_generated_code_replicate(m: Mesh) -> None:
    # Every name the merge functions use internally, as a column: none may shadow the other.
    cols = ["r", "c", "cur", "key", "n", "tomb", "t", "x", "clash", "delta", "del_ts", "uniq_kind"]
    ddl = f"CREATE TABLE weird (k int PRIMARY KEY, {', '.join(f'{c} text' for c in cols)})"
    from replication.bootstrap import apply
    from replication.model import ConflictPolicy
    from replication.sql import render_install_tables

    policy = ConflictPolicy(replicated=("weird",))
    for n in REGIONS:
        with m.connect(n) as conn:
            conn.execute(ddl)
            apply(conn, render_install_tables(ConflictPolicy(replicated=(*m.policy.replicated, "weird"),
                                                             tables=m.policy.tables)))
    assert policy.strategy_for("weird") == "lww"
    m.execute(A, f"INSERT INTO weird VALUES (1, {', '.join(repr(c) for c in cols)})")
    m.wait_converged(["weird"], timeout=10)  # B updates the row it has received
    m.execute(B, "UPDATE weird SET key = 'changed on b' WHERE k = 1")
    m.wait_converged(["weird"], timeout=10)
    assert {m.execute(n, "SELECT key FROM weird WHERE k = 1")[0][0] for n in REGIONS} == {"changed on b"}
    assert all(m.execute(n, "SELECT count(*) FROM fraiseql_repl.parked") == [(0,)] for n in REGIONS)
