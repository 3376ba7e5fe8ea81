"""Verify and repair on a real three-writer mesh: injected divergence is found key by key, repaired
with the policy's winner through the normal change stream, and a second verify is clean. The rounds
the fence agents run through the control channel find the same keys without any cross-region
connection."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from drills.mesh import REGIONS, Mesh
from ops.aws import Runtime
from ops.cli import main
from replication.sql import CONTROL_TABLES, DATA_TABLES
from replication.verify import KeyState, policy_winner, repair, verify

A, B, C = REGIONS


def _conns(m: Mesh) -> dict[str, object]:
    return {n: m.connect(n) for n in REGIONS}


@pytest.fixture
def conns(m: Mesh) -> Iterator[dict[str, object]]:
    c = _conns(m)
    yield c
    for x in c.values():
        x.close()  # type: ignore[attr-defined]


def _behind_the_mesh(m: Mesh, node: str, sql: str, params: tuple[object, ...] = ()) -> None:
    """A write that never replicates (the replica role skips the change log): divergence by hand."""
    with m.connect(node) as c:
        c.execute("SET session_replication_role = replica")
        c.execute(sql, params)


def _inject(m: Mesh, base: int) -> set[int]:
    m.execute(A, "INSERT INTO items SELECT g, 'same' FROM generate_series(%s::int, %s::int) g", (base, base + 9))
    m.wait_converged(["items"])
    time.sleep(0.3)  # older than the horizon used below
    _behind_the_mesh(m, C, "UPDATE items SET v = 'corrupted on c' WHERE id = %s", (base,))
    _behind_the_mesh(m, B, "DELETE FROM items WHERE id = %s", (base + 1,))
    _behind_the_mesh(m, A, "INSERT INTO items VALUES (%s, 'only on a')", (base + 100,))
    return {base, base + 1, base + 100}


def test_a_clean_mesh_verifies_clean(m: Mesh, conns) -> None:
    m.wait_converged(["items", "counters", "tags", "accounts"])
    report = verify(conns, buckets=64, margin_s=0.0)
    assert report.diverged_rows == 0 and set(report.tables) >= {"public.items", "public.tags"}


def test_injected_divergence_is_found_exactly_and_repaired_with_the_policy_winner(m: Mesh, conns) -> None:
    keys = _inject(m, 12000)
    report = verify(conns, buckets=64, margin_s=0.1)
    assert {d.pk["id"] for d in report.divergences if d.table == "public.items"} == keys
    plan = repair(conns, report, dry_run=True)
    winners = {a["pk"]["id"]: a["on"] for a in plan}
    # the majority's content wins a tie of versions; the lone insert is spread; the lost row is re-sent
    assert winners[12000] in (A, B) and winners[12001] in (A, C) and winners[12100] == A
    assert m.execute(C, "SELECT v FROM items WHERE id = 12000") == [("corrupted on c",)]  # dry run changed nothing
    repair(conns, report)
    m.wait_converged(["items"], timeout=20)
    assert m.execute(C, "SELECT v FROM items WHERE id = 12000") == [("same",)]
    assert verify(conns, buckets=64, margin_s=0.0).diverged_rows == 0
    res = m.resolutions()
    assert res.get("repair_reemitted", 0) + res.get("repair_restamped", 0) >= 3  # counted like any decision


def test_the_cli_finds_and_repairs_then_reports_a_clean_second_verify(m: Mesh) -> None:
    _inject(m, 13000)
    outputs = io.StringIO(json.dumps({"phase": "b", "regions": {r: "active" for r in REGIONS},
                                      "writerDbIdentifiers": {r: r for r in REGIONS}, "healthCheckIds": {},
                                      "routingControlArns": {r: "arn" for r in REGIONS},
                                      "arcClusterEndpoints": [{"region": "us-west-2", "endpoint": "https://x"}],
                                      "quorum": 2, "replicationLagAlarmArns": {},
                                      "slo": {"rtoSeconds": 90, "rpoSeconds": 1, "lagAlarmSeconds": 0.5}}))
    dsn = [f"--dsn={r}={m.pg[r].dsn}" for r in REGIONS]
    out = io.StringIO()
    rc = main(["verify", "--outputs", "-", "--json", "--buckets", "64", "--in-flight-margin", "0.1", *dsn],
              Runtime(out=out, stdin=outputs))
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rc == 1 and lines[-1]["data"]["diverged_rows"] == 3
    outputs.seek(0)
    out = io.StringIO()
    rc = main(["verify", "--outputs", "-", "--json", "--repair", "--buckets", "64", "--in-flight-margin", "0.1", *dsn],
              Runtime(out=out, stdin=outputs))
    last = json.loads(out.getvalue().splitlines()[-1])
    assert rc == 0 and last["data"] == {"repaired": 3, "diverged_rows": 0}


def test_a_dsn_with_a_password_is_refused() -> None:
    out = io.StringIO()
    rc = main(["verify", "--outputs", "-", "--dsn", "us-east-1=host=x password=secret"],
              Runtime(out=out, stdin=io.StringIO("{}")))
    assert rc == 2 and "secret" not in out.getvalue()


def _no_writer_behind(m: Mesh) -> None:
    """Forget the watermarks earlier tests of the package left (this mesh runs no agents, so nothing
    renews them): a round lists its keys only once no writer's watermark is older than its horizon."""
    for n in REGIONS:
        m.execute(n, "DELETE FROM fraiseql_repl.peer_applied")
        m.execute(n, "DELETE FROM fraiseql_repl.applied")


def test_the_agents_rounds_count_diverged_rows_through_the_control_channel(m: Mesh) -> None:
    keys = _inject(m, 14000)
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]
    rnd = 42
    for n in REGIONS:
        m.execute(n, "SELECT fraiseql_repl.publish_digests(%s, %s::timestamptz, 64)", (rnd, horizon))
    time.sleep(0.5)
    for n in REGIONS:
        m.execute(n, "SELECT fraiseql_repl.publish_key_details(%s, 64, %s::timestamptz)", (rnd, horizon))
    time.sleep(0.5)
    found = {n: {(t, pk["id"]) for t, pk, _ in m.execute(
                 n, "SELECT * FROM fraiseql_repl.diverged_keys(%s, %s::timestamptz)", (rnd, horizon))}
             for n in REGIONS}
    # every writer differs from some peer on each injected key, and on nothing else
    assert all({k for _, k in found[n]} == keys for n in REGIONS), found
    with _conns_ctx(m) as c:
        repair(c, verify(c, buckets=64, margin_s=0.1))
    m.wait_converged(["items"], timeout=20)


def test_no_keys_are_published_while_a_writer_has_not_applied_what_was_written_before_the_horizon(m: Mesh) -> None:
    # A large transaction in flight makes every bucket differ: the keys would be every key of the
    # table, sent through the heartbeats' link, and every heartbeat would wait behind them.
    _inject(m, 15000)
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]
    rnd = 43
    for n in REGIONS:
        m.execute(n, "SELECT fraiseql_repl.publish_digests(%s, %s::timestamptz, 64)", (rnd, horizon))
    time.sleep(0.5)
    mine = "SELECT count(*) FROM fraiseql_repl.digest_keys WHERE round = %s AND node = %s"
    # B's watermark says it has applied C's writes only up to a minute before the horizon
    m.execute(A, "INSERT INTO fraiseql_repl.peer_applied AS p (peer, origin, at) "
                 "VALUES (%s, %s, %s::timestamptz - interval '1 minute') ON CONFLICT (peer, origin) DO UPDATE SET at = excluded.at",
              (B, C, horizon))
    try:
        assert m.execute(A, "SELECT fraiseql_repl.publish_key_details(%s, 64, %s::timestamptz)", (rnd, horizon)) == [(0,)]
        assert m.execute(A, mine, (rnd, A)) == [(0,)]
        # so is A itself, behind on C
        m.execute(A, "DELETE FROM fraiseql_repl.peer_applied WHERE peer = %s AND origin = %s", (B, C))
        m.execute(A, "INSERT INTO fraiseql_repl.applied AS a (origin, at) VALUES (%s, %s::timestamptz - interval '1 minute') "
                     "ON CONFLICT (origin) DO UPDATE SET at = excluded.at", (C, horizon))
        assert m.execute(A, "SELECT fraiseql_repl.publish_key_details(%s, 64, %s::timestamptz)", (rnd, horizon)) == [(0,)]
        # caught up: the keys of the buckets that differ are published
        m.execute(A, "UPDATE fraiseql_repl.applied SET at = %s::timestamptz + interval '1 second' WHERE origin = %s",
                  (horizon, C))
        assert m.execute(A, "SELECT fraiseql_repl.publish_key_details(%s, 64, %s::timestamptz)", (rnd, horizon))[0][0] > 0
        assert m.execute(A, mine, (rnd, A))[0][0] > 0
    finally:
        m.execute(A, "DELETE FROM fraiseql_repl.peer_applied WHERE peer = %s AND origin = %s", (B, C))
        m.execute(A, "DELETE FROM fraiseql_repl.applied WHERE origin = %s", (C,))
        with _conns_ctx(m) as c:
            repair(c, verify(c, buckets=64, margin_s=0.1))
        m.wait_converged(["items"], timeout=20)


def _round(m: Mesh, rnd: int, horizon: str, *, step: float | None = None, buckets: dict[str, int] | None = None,
           max_keys: int = 1000) -> dict[str, tuple[int, int, int]]:
    """One round by hand, as VerifySide runs it: digests, then the keys (keys, buckets listed, skipped)."""
    for n in REGIONS:
        m.execute(n, "SELECT fraiseql_repl.publish_digests(%s, %s::timestamptz, %s, %s)",
                  (rnd, horizon, (buckets or {}).get(n, 64), step))
    time.sleep(0.5)
    out = {n: m.execute(n, "SELECT * FROM fraiseql_repl.publish_key_details(%s, 64, %s::timestamptz, %s)",
                        (rnd, horizon, max_keys))[0] for n in REGIONS}
    time.sleep(0.5)
    return out


def _found(m: Mesh, rnd: int, horizon: str) -> dict[str, set[int]]:
    return {n: {pk["id"] for t, pk, _ in m.execute(n, "SELECT * FROM fraiseql_repl.diverged_keys(%s, %s::timestamptz)",
                                                     (rnd, horizon))} for n in REGIONS}


def test_a_round_lists_about_max_keys_and_later_rounds_the_other_buckets(m: Mesh) -> None:
    # The keys travel in the heartbeats' channel: however many buckets differ (ordinary updates
    # between the writers' digests, an agent role's digests published ahead), a round lists about
    # max_keys keys; the buckets past it come first in other rounds.
    keys = _inject(m, 16000)
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]
    try:
        none = _round(m, 60, horizon, max_keys=0)
        assert all(k == 0 and listed == 0 and skipped > 0 for k, listed, skipped in none.values()), none
        assert _found(m, 60, horizon) == {n: set() for n in REGIONS}
        # two of the biggest buckets that differ fit
        (biggest,) = m.execute(A, "SELECT max(nrows) FROM fraiseql_repl.digests WHERE round = 60 AND bucket >= 0 AND "
                              "bucket IN (SELECT fraiseql_repl.bucket_of(jsonb_build_object('id', k), 64) FROM unnest(%s::int[]) k)",
                           (sorted(keys),))[0]
        cap = 2 * biggest
        seen: set[int] = set()
        for rnd in range(61, 73):
            got = _round(m, rnd, horizon, max_keys=cap)
            assert all(k <= cap for k, _, _ in got.values()), got
            seen |= set().union(*_found(m, rnd, horizon).values())
        assert seen == keys
    finally:
        with _conns_ctx(m) as c:
            repair(c, verify(c, buckets=64, margin_s=0.1))
        m.wait_converged(["items"], timeout=20)


def test_a_writer_behind_the_horizon_takes_digests_earlier_and_only_equal_horizons_are_compared(m: Mesh) -> None:
    # An application session idle in a transaction that wrote holds its writer's watermark, and a
    # large transaction its receivers': the round is compared at the last horizon of the grid that
    # every writer has applied, not skipped (red team 14: verify stayed blind for as long as either lasted).
    keys = _inject(m, 17000)
    time.sleep(2.0)
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]
    # B has applied C's writes only up to a second before the horizon, and its peers know it
    m.execute(B, "INSERT INTO fraiseql_repl.applied (origin, at) VALUES (%s, %s::timestamptz - interval '1 second')",
              (C, horizon))
    for n in (A, C):
        m.execute(n, "INSERT INTO fraiseql_repl.peer_applied (peer, origin, at) VALUES (%s, %s, %s::timestamptz - interval '1 second')",
                  (B, C, horizon))
    try:
        _round(m, 80, horizon, step=0.4)
        marks = m.execute(A, "SELECT DISTINCT fraiseql_repl.marked_horizon(digest) = %s::timestamptz - interval '1.2 seconds' "
                             "FROM fraiseql_repl.digests WHERE round = 80 AND bucket = -1", (horizon,))
        assert marks == [(True,)], marks
        assert _found(m, 80, horizon) == {n: keys for n in REGIONS}
        # without a step (a previous release's agent) a writer behind publishes nothing
        assert m.execute(A, "SELECT fraiseql_repl.publish_digests(81, %s::timestamptz, 64)", (horizon,)) == [(-1,)]
        # a writer whose digests have another bucket count is compared with nobody
        _round(m, 82, horizon, step=0.4, buckets={B: 32})
        assert _found(m, 82, horizon) == {A: {17000, 17100}, B: set(), C: {17000, 17100}}
    finally:
        _no_writer_behind(m)
        with _conns_ctx(m) as c:
            repair(c, verify(c, buckets=64, margin_s=0.1))
        m.wait_converged(["items"], timeout=20)


def test_a_wrong_shard_under_a_counter_written_all_the_time_is_found_and_repaired(m: Mesh) -> None:
    # A counter's row changes with every increment anywhere, so it is never older than the horizon;
    # its shards change only with their own node's increments (red team 14: a wrong copy of a quiet
    # writer's shard under a hot counter was never counted).
    key = 18000
    m.execute(A, "INSERT INTO counters (id, label, hits) VALUES (%s, 'hot', 0)", (key,))
    m.wait_converged(["counters"])
    m.execute(B, "UPDATE counters SET hits = hits + 1 WHERE id = %s", (key,))
    m.wait_converged(["counters"])
    time.sleep(1.0)
    b_node = m.execute(B, "SELECT fraiseql_repl.node_name()")[0][0]
    with m.connect(C) as c:  # C's copy of B's shard, behind the mesh (a replication origin keeps it here)
        c.execute("SET session_replication_role = replica")
        c.execute("SELECT pg_replication_origin_create('test_verify_shard')")
        try:
            c.execute("SELECT pg_replication_origin_session_setup('test_verify_shard')")
            c.execute("UPDATE fraiseql_repl.shards SET amount = amount + 1000 WHERE table_name = 'public.counters' "
                      "AND pk = jsonb_build_object('id', %s::int) AND node = %s", (key, b_node))
            c.execute("UPDATE counters SET hits = hits + 1000 WHERE id = %s", (key,))
            c.execute("SELECT pg_replication_origin_session_reset()")
        finally:
            c.execute("SELECT pg_replication_origin_drop('test_verify_shard')")
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]
    m.execute(A, "UPDATE counters SET hits = hits + 1 WHERE id = %s", (key,))  # the row: newer than the horizon
    m.wait_for(B, f"SELECT hits FROM counters WHERE id = {key}", 2)
    try:
        _round(m, 90, horizon, step=1.0)
        found = {n: m.execute(n, "SELECT pk -> 'pk' ->> 'id', pk ->> 'node' FROM fraiseql_repl.diverged_keys(90, %s::timestamptz) "
                                 "WHERE table_name = 'fraiseql_repl.shards'", (horizon,)) for n in REGIONS}
        assert found == {A: [(str(key), b_node)], B: [(str(key), b_node)], C: [(str(key), b_node), (str(key), b_node)]}, found
        with _conns_ctx(m) as c:
            m.execute(A, "UPDATE counters SET hits = hits + 1 WHERE id = %s", (key,))  # the row in flight again
            report = verify(c, buckets=64, margin_s=0.5)
            assert [(d.table, d.pk) for d in report.divergences] == [("public.counters", {"id": key})], report.as_dict()
            # the row itself is newer than the horizon: only its shards were compared
            assert m.execute(A, "SELECT _repl_ts > %s::timestamptz FROM counters WHERE id = %s",
                             (report.horizon, key)) == [(True,)]
            repair(c, report)
        m.wait_converged(["counters"], timeout=20)
        assert {m.execute(n, f"SELECT hits FROM counters WHERE id = {key}")[0][0] for n in REGIONS} == {3}
    finally:
        with _conns_ctx(m) as c:
            repair(c, verify(c, buckets=64, margin_s=0.1))
        m.wait_converged(["counters"], timeout=20)


def test_keys_crowded_into_one_bucket_spread_out_in_the_next_round(m: Mesh) -> None:
    # The application chooses its keys, and bucket_of is public: a bucket filled past max_keys was
    # never listed, so a row that differs there was never counted (red team 15). Each round seeds the
    # buckets with its number.
    crowd = [k for (k,) in m.execute(A, "SELECT g FROM generate_series(7700000, 7760000) g WHERE "
                                        "fraiseql_repl.bucket_of(jsonb_build_object('id', g), 64, 100) = 7 LIMIT 200")]
    m.execute(A, "INSERT INTO items SELECT g, 'crowd' FROM unnest(%s::int[]) g", (crowd,))
    m.wait_converged(["items"])
    time.sleep(0.3)
    _behind_the_mesh(m, C, "UPDATE items SET v = 'corrupted on c' WHERE id = %s", (crowd[0],))
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]

    def listing(seed: int) -> int:  # what listing crowd[0]'s bucket sends, on the writer where it is largest
        return max(m.execute(n, "SELECT count(*) FROM fraiseql_repl.bucket_keys('public.items', 64, ARRAY["
                                "fraiseql_repl.bucket_of(jsonb_build_object('id', %s::int), 64, %s)], %s)",
                             (crowd[0], seed, seed))[0][0] for n in REGIONS)

    cap = listing(101)  # the bucket crowd[0] falls in next round fits; the crowded one does not
    assert listing(100) > cap, (listing(100), cap)
    try:
        crowded = _round(m, 100, horizon, step=1.0, max_keys=cap)
        assert all(skipped >= 1 for _, _, skipped in crowded.values()), crowded
        assert crowd[0] not in set().union(*_found(m, 100, horizon).values())
        _round(m, 101, horizon, step=1.0, max_keys=cap)
        assert _found(m, 101, horizon) == {A: {crowd[0]}, B: {crowd[0]}, C: {crowd[0]}}
    finally:
        with _conns_ctx(m) as c:
            repair(c, verify(c, buckets=64, margin_s=0.1))
        m.wait_converged(["items"], timeout=20)


class _conns_ctx:
    def __init__(self, m: Mesh) -> None:
        self.c = _conns(m)

    def __enter__(self) -> dict[str, object]:
        return self.c

    def __exit__(self, *exc: object) -> None:
        for x in self.c.values():
            x.close()  # type: ignore[attr-defined]


def test_policy_winner_prefers_live_incarnations_then_the_newest_version() -> None:
    old, new = Decimal("100"), Decimal("200")
    row = lambda ts, node, born=Decimal("-Infinity"): KeyState(row={"v": node}, ts=ts, vnode=node, born=born)  # noqa: E731
    assert policy_winner("lww", {"a": row(old, "a"), "b": row(new, "b")}) == ("b", "row")
    deleted = KeyState(tomb_ts=new, tomb_node="c", tomb_born=Decimal("-Infinity"))
    assert policy_winner("lww", {"a": row(new, "a"), "c": deleted}) == ("c", "delete")
    reborn = row(Decimal("300"), "a", born=new)
    assert policy_winner("lww", {"a": reborn, "c": deleted}) == ("a", "row")
    assert policy_winner("app", {"a": row(old, "a")})[0] is None


def test_a_rounds_rows_arriving_again_keep_the_control_link_and_its_heartbeats(m: Mesh) -> None:
    # A copy promoted to join the mesh holds what its source published before the promotion, and its
    # subscription to the source starts at the slot made for it earlier: rows published between the
    # two arrive again. Here A deletes its rows (deletes are not published) and publishes them again.
    rnd = 9_000_001
    for rows in range(2):
        if rows:
            m.execute(A, "DELETE FROM fraiseql_repl.digests WHERE round = %s", (rnd,))
            m.execute(A, "DELETE FROM fraiseql_repl.digest_keys WHERE round = %s", (rnd,))
        m.execute(A, "INSERT INTO fraiseql_repl.digests VALUES (%s, %s, 'public.items', 0, %s, 'd')", (A, rnd, 1 + rows))
        m.execute(A, "INSERT INTO fraiseql_repl.digest_keys (node, round, table_name, bucket, pk, digest, deleted) "
                     "VALUES (%s, %s, 'public.items', 0, '{\"id\": 1}', %s, false)", (A, rnd, f"k{rows}"))
        for n in (B, C):
            m.wait_for(n, f"SELECT count(*) FROM fraiseql_repl.digests WHERE round = {rnd} AND nrows = {1 + rows}", 1)
    seq = 9_000_000 + int(time.time()) % 100_000
    m.execute(A, "DELETE FROM fraiseql_repl.heartbeats WHERE node = %s", (A,))
    m.execute(A, "INSERT INTO fraiseql_repl.heartbeats (node, seq, sent_at) VALUES (%s, %s, clock_timestamp())", (A, seq))
    for n in (B, C):  # the heartbeat behind the repeated rows arrives
        m.wait_for(n, f"SELECT count(*) FROM fraiseql_repl.heartbeats WHERE node = '{A}' AND seq = {seq}", 1, timeout=20)
        assert m.execute(n, "SELECT digest FROM fraiseql_repl.digest_keys WHERE round = %s", (rnd,)) == [("k1",)]
    for n in REGIONS:
        m.execute(n, "DELETE FROM fraiseql_repl.digests WHERE round = %s", (rnd,))
        m.execute(n, "DELETE FROM fraiseql_repl.digest_keys WHERE round = %s", (rnd,))


def test_every_published_table_takes_a_row_it_has_on_arrival(m: Mesh) -> None:
    # The same rows arrive twice whenever a copy joins (above); an INSERT on a key the writer has
    # must not fail the link. Each published table has an arrival trigger for it (a replica trigger
    # firing before INSERT), or a new one would stop a link the first time a copy joins.
    published = {f"{s}.{t}" for s, t in m.execute(A, "SELECT schemaname, tablename FROM pg_publication_tables")}
    assert published == set(DATA_TABLES) | set(CONTROL_TABLES)
    arriving = {r for (r,) in m.execute(
        A, "SELECT t.tgrelid::regclass::text FROM pg_trigger t WHERE t.tgenabled = 'R' "
           "AND (t.tgtype & 2) <> 0 AND (t.tgtype & 4) <> 0")}  # BEFORE, INSERT
    assert published - arriving == set()


def test_rows_written_while_a_round_lists_its_keys_do_not_take_it_past_the_cap(m: Mesh) -> None:
    # A round counts each differing bucket, then lists the buckets that fit under max_keys; rows
    # the application writes in between come on top unless the listing counts them again. Here a
    # lock on the keys table holds A's listing between the two while rows go into a chosen bucket.
    keys = _inject(m, 19000)
    _no_writer_behind(m)
    horizon = m.execute(A, "SELECT (clock_timestamp() - interval '0.1 second')::text")[0][0]
    rnd = 9_000_002  # a round no other test here uses
    try:
        for n in REGIONS:
            m.execute(n, "SELECT fraiseql_repl.publish_digests(%s, %s::timestamptz, 64)", (rnd, horizon))
        time.sleep(0.5)
        differing = sorted({b for (b,) in m.execute(
            A, "SELECT fraiseql_repl.bucket_of(jsonb_build_object('id', k), 64, %s) FROM unnest(%s::int[]) k",
            (rnd, sorted(keys)))})
        natural = m.execute(A, "SELECT count(*) FROM fraiseql_repl.bucket_keys('public.items', 64, %s, %s)",
                            (differing, rnd))[0][0]
        cap = natural + 5
        crowd = [k for (k,) in m.execute(
            A, "SELECT g FROM generate_series(19200, 29999) g "
               "WHERE fraiseql_repl.bucket_of(jsonb_build_object('id', g), 64, %s) = %s LIMIT %s",
            (rnd, differing[0], cap))]
        result: list[tuple[int, int, int]] = []
        with m.connect(A) as lock:
            lock.execute("BEGIN")
            lock.execute("LOCK TABLE fraiseql_repl.digest_keys IN SHARE MODE")
            listing = threading.Thread(target=lambda: result.extend(m.execute(
                A, "SELECT * FROM fraiseql_repl.publish_key_details(%s, 64, %s::timestamptz, %s)", (rnd, horizon, cap))))
            listing.start()
            deadline = time.monotonic() + 20
            while not m.execute(A, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND query LIKE '%%publish_key_details%%'")[0][0]:
                assert time.monotonic() < deadline, "the listing never reached the keys table"
                time.sleep(0.05)
            m.execute(A, "INSERT INTO items SELECT k, 'written while the round lists' FROM unnest(%s::int[]) k", (crowd,))
            lock.execute("COMMIT")
            listing.join(timeout=30)
        ((listed_keys, _, skipped),) = result
        sent = m.execute(A, "SELECT count(*) FROM fraiseql_repl.digest_keys WHERE node = %s AND round = %s "
                            "AND pk <> '{\"_empty\": true}'", (A, rnd))[0][0]
        assert listed_keys == sent <= cap and skipped >= 1, (listed_keys, sent, cap, skipped)
    finally:
        m.execute(A, "DELETE FROM items WHERE id BETWEEN 19200 AND 29999")
        with _conns_ctx(m) as c:
            repair(c, verify(c, buckets=64, margin_s=0.1))
        m.wait_converged(["items"], timeout=20)
