"""The fence agent's probe on a real PostgreSQL 18 writer.

Peers' heartbeats are the rows replication would deliver; here they are written directly with
chosen ages, so each case controls exactly what the writer can see.
"""

from __future__ import annotations

import psycopg
import pytest

from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication.fence_agent import step
from replication.model import Node
from replication.sql import FENCE_SQLSTATE, HEARTBEAT_TABLE, render_conflict_objects

ME, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
NODES = [Node(name=r, region=r, host="127.0.0.1") for r in (ME, WEST, EU)]
INTERVAL = 1.0  # a heartbeat older than 3 intervals is stale


@pytest.fixture(scope="module")
def writer():
    with cluster([ME]) as pg:
        node = pg[ME]
        for stmt in APP_SCHEMA:
            node.execute(stmt)
        for stmt in render_conflict_objects(POLICY, NODES[0]):
            node.execute(stmt)
        with psycopg.connect(node.conninfo(), autocommit=True) as conn:
            yield node, conn


def peers(conn, **ages_and_views):
    conn.execute(f"DELETE FROM {HEARTBEAT_TABLE} WHERE node <> %s", (ME,))
    for name, (age, sees) in ages_and_views.items():
        conn.execute(
            f"INSERT INTO {HEARTBEAT_TABLE} (node, ts, sees) VALUES (%s, clock_timestamp() - make_interval(secs => %s), %s)",
            (name.replace("_", "-"), age, sees),
        )


def probe(conn, previous=None, control_on=True):
    return step(conn, NODES[0], NODES, control_on=control_on, previous=previous, unfence_after=3,
                probe_interval_s=INTERVAL)


def can_write(node) -> bool:
    try:
        node.execute("INSERT INTO items (id, v) VALUES ((SELECT coalesce(max(id), 0) + 1 FROM items), 'w')")
        return True
    except psycopg.Error as e:
        assert e.sqlstate == FENCE_SQLSTATE, e
        return False


def test_with_one_mutually_connected_peer_the_writer_keeps_writing(writer):
    node, conn = writer
    peers(conn, us_west_2=(0.2, [WEST, ME]), eu_west_1=(30, [EU]))
    result = probe(conn)
    assert not result.fenced and result.decisions[ME].majority == {ME, WEST}
    assert result.decisions[ME].quorum_reduced
    assert can_write(node)
    beat = node.execute(f"SELECT sees FROM {HEARTBEAT_TABLE} WHERE node = %s", (ME,))
    assert beat == [([ME, WEST],)] or beat == [(sorted([ME, WEST]),)]


def test_isolated_writer_fences_itself_and_unfences_after_three_healthy_probes(writer):
    node, conn = writer
    peers(conn, us_west_2=(30, [WEST, ME]), eu_west_1=(30, [EU, ME]))
    isolated = probe(conn)
    assert isolated.fenced and isolated.changed and isolated.decisions[ME].reason == "no_quorum"
    assert not can_write(node)

    peers(conn, us_west_2=(0.1, [WEST, ME, EU]), eu_west_1=(0.1, [EU, ME, WEST]))
    previous = isolated.decisions
    for expected_fenced in (True, True, False):  # hysteresis: fencing is instant, unfencing is not
        previous_result = probe(conn, previous)
        previous = previous_result.decisions
        assert previous_result.fenced is expected_fenced
    assert can_write(node)


def test_a_one_way_link_does_not_count(writer):
    node, conn = writer
    # Both peers' rows reach me, but neither receives from me.
    peers(conn, us_west_2=(0.1, [WEST, EU]), eu_west_1=(0.1, [EU, WEST]))
    result = probe(conn)
    assert result.fenced and result.decisions[ME].reason == "no_quorum"
    assert result.decisions[ME].majority == {WEST, EU}
    probe(conn, control_on=True)  # leave it consistent for the next test
    peers(conn, us_west_2=(0.1, [WEST, ME]), eu_west_1=(0.1, [EU, ME]))
    for _ in range(3):
        result = probe(conn, result.decisions)
    assert not result.fenced


def test_routing_control_off_fences_even_with_quorum(writer):
    node, conn = writer
    peers(conn, us_west_2=(0.1, [WEST, ME, EU]), eu_west_1=(0.1, [EU, ME, WEST]))
    result = probe(conn, control_on=False)
    assert result.fenced and result.decisions[ME].reason == "control_off"
    assert not can_write(node)
    for _ in range(3):
        result = probe(conn, result.decisions, control_on=True)
    assert not result.fenced and can_write(node)


def test_no_walsender_means_no_lag_figure(writer):
    _, conn = writer
    result = probe(conn)
    assert result.lag == {WEST: None, EU: None}
