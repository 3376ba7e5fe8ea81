"""The rendered SQL on a real 3-node PostgreSQL 18 full mesh decides conflicts as documented."""

from __future__ import annotations

import time

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from drills.sample import POLICY
from replication.bootstrap import apply
from replication.sql import FENCE_SQLSTATE, render_bootstrap, render_lease

A, B, C = REGIONS


def _one(m: Mesh, node: str, sql: str) -> object:
    rows = m.execute(node, sql)
    return rows[0][0] if rows else None


def test_replicates_in_all_directions(m: Mesh) -> None:
    for i, n in enumerate((A, B, C), start=100):
        m.execute(n, f"INSERT INTO items VALUES ({i}, '{n}')")
    m.wait_converged(["items"])
    for n in (A, B, C):
        assert _one(m, n, "SELECT count(*) FROM items WHERE id BETWEEN 100 AND 102") == 3
    assert all(m.subscriptions_healthy().values())


def test_concurrent_updates_newest_version_wins(m: Mesh) -> None:
    m.execute(A, "INSERT INTO items VALUES (1, 'base')")
    m.wait_converged(["items"])
    with m.paused():
        m.execute(A, "UPDATE items SET v = 'from-a' WHERE id = 1")
        m.execute(C, "UPDATE items SET v = 'from-c' WHERE id = 1")
        m.execute(B, "UPDATE items SET v = 'from-b' WHERE id = 1")  # last in time
    m.wait_converged(["items"])
    for n in (A, B, C):
        assert m.execute(n, "SELECT v, _repl_node FROM items WHERE id = 1") == [("from-b", B)]
    assert m.resolutions().get("lww_kept_local", 0) >= 2  # older incoming versions discarded


def test_equal_timestamps_tie_break_by_node(m: Mesh) -> None:
    m.execute(A, "INSERT INTO items VALUES (2, 'base')")
    m.wait_converged(["items"])
    ts = "2031-01-01 00:00:00+00"
    with m.paused():
        # Force identical timestamps: write the version columns directly (the replica role skips the
        # local stamping trigger), then send that state to the peers like a repair would.
        for n in (A, B, C):
            with m.connect(n) as c:
                c.execute("SET session_replication_role = replica")
                c.execute(
                    "UPDATE items SET v = %s, _repl_ts = %s, _repl_node = %s WHERE id = 2", (f"tie-{n}", ts, n)
                )
                c.execute("SET session_replication_role = origin")
                c.execute("SELECT fraiseql_repl.reemit('public.items', '{\"id\": 2}')")
    m.wait_converged(["items"])
    winner = max((A, B, C), key=lambda s: s.encode())  # C-collation order of node names
    for n in (A, B, C):
        assert _one(m, n, "SELECT v FROM items WHERE id = 2") == f"tie-{winner}"


def test_concurrent_inserts_same_key_do_not_break_apply(m: Mesh) -> None:
    with m.paused():
        m.execute(A, "INSERT INTO items VALUES (3, 'ins-a')")
        m.execute(B, "INSERT INTO items VALUES (3, 'ins-b')")
    m.wait_converged(["items"])
    assert {_one(m, n, "SELECT v FROM items WHERE id = 3") for n in (A, B, C)} == {"ins-b"}
    assert all(m.subscriptions_healthy().values())
    assert m.native_conflicts()["confl_insert_exists"] == 0  # merged before PG saw a conflict


def test_delete_wins_over_concurrent_update(m: Mesh) -> None:
    m.execute(A, "INSERT INTO items VALUES (4, 'base')")
    m.wait_converged(["items"])
    with m.paused():
        m.execute(B, "UPDATE items SET v = 'updated' WHERE id = 4")
        m.execute(A, "DELETE FROM items WHERE id = 4")
    m.wait_converged(["items"])
    for n in (A, B, C):
        assert _one(m, n, "SELECT count(*) FROM items WHERE id = 4") == 0
        assert _one(m, n, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE pk = '{\"id\": 4}'") == 1


def test_reinsert_after_observed_delete_survives(m: Mesh) -> None:
    m.execute(A, "INSERT INTO items VALUES (5, 'first')")
    m.wait_converged(["items"])
    m.execute(A, "DELETE FROM items WHERE id = 5")
    m.wait_converged(["items"])
    m.execute(C, "INSERT INTO items VALUES (5, 'second')")
    m.wait_converged(["items"])
    assert {_one(m, n, "SELECT v FROM items WHERE id = 5") for n in (A, B, C)} == {"second"}


def test_counter_increments_from_all_nodes_sum(m: Mesh) -> None:
    m.execute(A, "INSERT INTO counters VALUES (1, 'c', 0)")
    m.wait_converged(["counters"])
    with m.paused():
        for _ in range(3):
            m.execute(A, "UPDATE counters SET hits = hits + 1 WHERE id = 1")
        m.execute(B, "UPDATE counters SET hits = hits + 2 WHERE id = 1")
        m.execute(C, "UPDATE counters SET hits = hits + 5, label = 'from-c' WHERE id = 1")
        assert _one(m, C, "SELECT hits FROM counters WHERE id = 1") == 5
    m.wait_converged(["counters", "fraiseql_repl.shards"])
    for n in (A, B, C):
        assert m.execute(n, "SELECT hits, label FROM counters WHERE id = 1") == [(10, "from-c")]
    # and keeps working after the merge
    m.execute(B, "UPDATE counters SET hits = hits + 1 WHERE id = 1")
    m.wait_converged(["counters"])
    assert _one(m, A, "SELECT hits FROM counters WHERE id = 1") == 11


def test_counter_concurrent_creation_sums(m: Mesh) -> None:
    with m.paused():
        m.execute(A, "INSERT INTO counters VALUES (2, 'a', 4)")
        m.execute(B, "INSERT INTO counters VALUES (2, 'b', 6)")
    m.wait_converged(["counters"])
    for n in (A, B, C):
        assert m.execute(n, "SELECT hits, label FROM counters WHERE id = 2") == [(10, "b")]


def test_set_adds_union(m: Mesh) -> None:
    with m.paused():
        m.execute(A, "INSERT INTO tags VALUES (1, 'x'), (1, 'y')")
        m.execute(B, "INSERT INTO tags VALUES (1, 'y'), (1, 'z')")
        m.execute(C, "INSERT INTO tags VALUES (1, 'w'), (1, 'y')")
    m.wait_converged(["tags"])
    for n in (A, B, C):
        assert [r[0] for r in m.execute(n, "SELECT tag FROM tags WHERE item = 1 ORDER BY tag")] == ["w", "x", "y", "z"]
    assert all(m.subscriptions_healthy().values())
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        m.execute(A, "UPDATE tags SET tag = 'q' WHERE item = 1 AND tag = 'x'")


def test_set_add_wins_over_concurrent_remove(m: Mesh) -> None:
    m.execute(A, "INSERT INTO tags VALUES (2, 'x'), (2, 'gone')")
    m.wait_converged(["tags"])
    with m.paused():
        m.execute(B, "DELETE FROM tags WHERE item = 2")  # removes what B has seen
        m.execute(C, "DELETE FROM tags WHERE item = 2 AND tag = 'x'")
        m.execute(C, "INSERT INTO tags VALUES (2, 'x')")  # re-add, concurrent with B's remove
    m.wait_converged(["tags"])
    for n in (A, B, C):
        assert [r[0] for r in m.execute(n, "SELECT tag FROM tags WHERE item = 2")] == ["x"]


def test_app_table_keeps_local_and_logs_conflict(m: Mesh) -> None:
    m.execute(A, "INSERT INTO accounts VALUES (1, 0)")
    m.wait_converged(["accounts"])
    with m.paused():
        m.execute(A, "UPDATE accounts SET balance = 100 WHERE id = 1")
        m.execute(B, "UPDATE accounts SET balance = 200 WHERE id = 1")
    for n in (A, B):
        m.wait_for(n, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE table_name = 'public.accounts' "
                      "AND resolved_at IS NULL", 1)
    time.sleep(0.3)
    assert _one(m, A, "SELECT balance FROM accounts WHERE id = 1") == 100
    assert _one(m, B, "SELECT balance FROM accounts WHERE id = 1") == 200
    local, remote = m.execute(A, "SELECT local_row->>'balance', remote_row->>'balance' FROM fraiseql_repl.conflicts "
                                 "WHERE table_name = 'public.accounts'")[0]
    assert (local, remote) == ("100", "200")
    # The application resolves on one node; the resolution wins everywhere.
    with m.connect(A) as c:
        with c.transaction():
            c.execute("SET LOCAL fraiseql_repl.resolving = 'on'")
            c.execute("UPDATE accounts SET balance = 300 WHERE id = 1")
    m.wait_converged(["accounts"])
    for n in (A, B, C):
        assert _one(m, n, "SELECT balance FROM accounts WHERE id = 1") == 300
    for n in (A, B):
        m.wait_for(n, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE resolved_at IS NULL", 0)


def test_fence_refuses_local_writes_but_applies_replication(m: Mesh) -> None:
    m.set_fence(C, True, "test: isolated")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as exc:
        m.execute(C, "INSERT INTO items VALUES (50, 'from fenced node')")
    assert exc.value.sqlstate == FENCE_SQLSTATE
    assert "fenced" in str(exc.value)
    for stmt in ("UPDATE items SET v = 'x'", "DELETE FROM items",
                 "UPDATE counters SET hits = hits + 1", "INSERT INTO tags VALUES (9, 'x')"):
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            m.execute(C, stmt)
    m.execute(C, "INSERT INTO scratch VALUES (1)")  # unreplicated tables stay writable
    m.execute(A, "INSERT INTO items VALUES (51, 'from a')")
    m.wait_for(C, "SELECT v FROM items WHERE id = 51", "from a")
    m.execute(B, "UPDATE counters SET hits = hits + 1 WHERE id = 1")
    m.wait_converged(["counters"])
    m.set_fence(C, False)
    m.execute(C, "INSERT INTO items VALUES (52, 'after unfence')")
    m.wait_for(A, "SELECT v FROM items WHERE id = 52", "after unfence")


def test_truncate_of_a_replicated_table_is_refused_everywhere(m: Mesh) -> None:
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="TRUNCATE of replicated table public.items is refused"):
        m.execute(A, "TRUNCATE items")
    m.execute(A, "TRUNCATE scratch")  # unreplicated tables are the application's business


def test_fencing_never_waits_and_a_transaction_that_outlives_the_lease_is_refused_at_commit(m: Mesh) -> None:
    writer = m.connect(B, autocommit=False)
    try:
        writer.execute("INSERT INTO items VALUES (60, 'in flight')")  # passes the statement check
        with m.connect(B) as c:
            c.execute("SET lock_timeout = '300ms'")
            apply(c, render_lease(None, "test: fenced"))  # returns at once: nothing to wait for
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="refused at commit"):
            writer.commit()
    finally:
        writer.close()
    assert m.execute(B, "SELECT count(*) FROM items WHERE id = 60") == [(0,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="refused at statement"):
        m.execute(B, "INSERT INTO items VALUES (61, 'refused')")


def test_a_lease_that_is_not_renewed_runs_out_by_itself(m: Mesh) -> None:
    with m.connect(B) as c:
        apply(c, render_lease(1.0, "test: one second"))
    m.execute(B, "INSERT INTO items VALUES (62, 'inside the lease')")
    time.sleep(1.05)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as exc:
        m.execute(B, "INSERT INTO items VALUES (63, 'after the lease')")
    assert "test: one second" in (exc.value.diag.message_detail or "")


def _snapshot(m: Mesh, node: str) -> list[object]:
    queries = [
        "SELECT tgrelid::regclass::text, tgname, tgenabled, tgfoid::regprocedure::text, tgargs FROM pg_trigger "
        "WHERE NOT tgisinternal ORDER BY 1, 2",
        "SELECT p.oid::regprocedure::text, md5(prosrc), proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'fraiseql_repl' ORDER BY 1",
        "SELECT attrelid::regclass::text, attname, atttypid::regtype::text, attnotnull FROM pg_attribute "
        "WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN ('public'::regnamespace, "
        "'fraiseql_repl'::regnamespace)) AND attnum > 0 AND NOT attisdropped ORDER BY 1, 2",
        "SELECT pubname, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication",
        "SELECT schemaname, tablename FROM pg_publication_tables ORDER BY 1, 2",
        "SELECT subname, subenabled, suborigin, subconninfo, subslotname FROM pg_subscription ORDER BY 1",
        "SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel ORDER BY 1",
        "SELECT slot_name, plugin, slot_type FROM pg_replication_slots ORDER BY 1",
        "SELECT relname, relreplident FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
        "SELECT valid_until::text, reason FROM fraiseql_repl.lease",
        "SELECT table_name, pk, col, node, born::text, amount FROM fraiseql_repl.shards ORDER BY 1, 2, 3, 4, 5",
        "SELECT count(*) FROM fraiseql_repl.tombstones",
    ]
    return [m.execute(node, q) for q in queries]


def test_bootstrap_twice_changes_nothing(m: Mesh) -> None:
    m.wait_converged(["items", "counters", "tags"])
    before = {n: _snapshot(m, n) for n in m.names}
    m.bootstrap()
    # also the single-node list, as a Lambda retry would run it
    with m.connect(A) as c:
        nodes = list(m.nodes.values())

        def ci(peer: object) -> str:
            link = m.links[(A, peer.name)]  # type: ignore[attr-defined]
            return m.pg[peer.name].conninfo(port=link.listen_port)  # type: ignore[attr-defined]

        apply(c, render_bootstrap(m.nodes[A], nodes, POLICY, ci))
    after = {n: _snapshot(m, n) for n in m.names}
    assert before == after
    assert all(m.subscriptions_healthy().values())
