"""Pure checks of the model and the rendered SQL (no database)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from drills.sample import POLICY
from replication.model import ConflictPolicy, Node, TablePolicy
from replication.sql import (
    RDS_PARAMETERS,
    REQUIRED_PARAMETERS,
    default_conninfo,
    render_bootstrap,
    render_lease,
    render_publication,
    render_subscriptions,
    subscription_name,
)

NODES = [Node(r, r, f"db.{r}.internal", index=i + 1) for i, r in enumerate(("us-east-1", "us-west-2", "eu-west-1"))]

IDEMPOTENT = re.compile(
    r"^(CREATE (SCHEMA|TABLE|UNLOGGED TABLE|INDEX|SEQUENCE) IF NOT EXISTS|CREATE OR REPLACE (FUNCTION|VIEW)|DO \$do\$|"
    r"ALTER TABLE \S+\s+ADD COLUMN IF NOT EXISTS|ALTER TABLE \S+\s+DROP CONSTRAINT IF EXISTS|INSERT INTO .*\sON CONFLICT|"
    r"SELECT fraiseql_repl\.set_lease\(|ALTER SUBSCRIPTION \w+ (REFRESH PUBLICATION|SET \(streaming = \w+\))|"
    r"DROP (TABLE|FUNCTION) IF EXISTS|DROP TRIGGER IF EXISTS \w+ ON |REVOKE (EXECUTE|ALL) ON (FUNCTION|SEQUENCE|TABLE|ALL FUNCTIONS IN SCHEMA) |ALTER DEFAULT PRIVILEGES IN SCHEMA \w+ REVOKE|DELETE FROM fraiseql_repl\.members WHERE name NOT IN|"
    r"SELECT fraiseql_repl\.(install_(table|dispatcher)|make_merge_marker)\()",
    re.S,
)


def test_every_statement_has_an_idempotent_form() -> None:
    stmts = render_bootstrap(NODES[0], NODES, POLICY) + render_lease(None, 'x') + render_lease(5, 'y')
    def code(s: str) -> str:
        return "\n".join(ln for ln in s.splitlines() if not ln.lstrip().startswith("--")).strip()

    bad = [code(s)[:80] for s in stmts if not IDEMPOTENT.match(code(s))]
    assert bad == []


def test_no_statement_needs_to_run_twice_in_a_transaction() -> None:
    for s in render_bootstrap(NODES[0], NODES, POLICY):
        # CREATE SUBSCRIPTION only appears inside DO blocks with create_slot = false.
        if "CREATE SUBSCRIPTION" in s:
            assert s.startswith("DO $do$") and "create_slot = false" in s


def test_subscriptions_full_mesh_origin_none_no_copy_with_a_separate_control_channel() -> None:
    stmts = render_subscriptions(NODES[2], NODES, default_conninfo("pw"))
    creates = [s for s in stmts if "CREATE SUBSCRIPTION" in s]
    assert len(creates) == 4  # data and heartbeats, from each of two peers
    for s in creates:
        assert "origin = none" in s and "copy_data = false" in s
    names = {subscription_name(NODES[2], p) for p in NODES[:2]}
    assert names == {"fq_eu_west_1_from_us_east_1", "fq_eu_west_1_from_us_west_2"}
    assert all(n in "".join(stmts) for n in names)
    assert sum("PUBLICATION fraiseql_ctl" in s for s in creates) == 2


def test_conninfo_quotes_password() -> None:
    ci = default_conninfo("it's\\secret")(NODES[1])
    assert "password='it\\'s\\\\secret'" in ci
    assert "sslmode=require" in ci and "host=db.us-west-2.internal" in ci
    sub = next(s for s in render_subscriptions(NODES[0], NODES, default_conninfo("it's")) if "CREATE SUBSCRIPTION" in s)
    assert "it\\''s" in sub  # SQL literal doubles the quote inside the conninfo


def test_only_change_images_and_counter_shards_are_published_heartbeats_separately() -> None:
    stmt, control = render_publication(POLICY)
    assert "SET TABLE fraiseql_repl.changes, fraiseql_repl.shards;" in stmt
    assert "items" not in stmt  # application tables replicate as images, never directly
    assert "publish = 'insert, update'" in stmt  # purges of the change log stay local
    assert "fraiseql_repl.heartbeats" in control and "heartbeats" not in stmt


def test_a_writer_needs_an_index_for_its_identity_values() -> None:
    with pytest.raises(ValueError, match="index 0; give every writer a distinct index from 1 to 16"):
        render_bootstrap(Node("x", "x", "h"), NODES, POLICY)


def test_required_parameters_and_rds_mapping() -> None:
    assert REQUIRED_PARAMETERS["wal_level"] == "logical"
    assert REQUIRED_PARAMETERS["track_commit_timestamp"] == "on"
    assert RDS_PARAMETERS["rds.logical_replication"][0] == "1"
    assert "wal_level" not in RDS_PARAMETERS  # not settable on RDS
    assert set(REQUIRED_PARAMETERS) - {"wal_level"} <= set(RDS_PARAMETERS)


def test_lease_reason_is_a_quoted_literal() -> None:
    assert "'O''Brien; DROP TABLE x'" in render_lease(None, "O'Brien; DROP TABLE x")[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: TablePolicy("Items", "lww"),
        lambda: TablePolicy("items; drop table x", "lww"),
        lambda: TablePolicy("c", "counter"),
        lambda: TablePolicy("c", "bogus"),  # type: ignore[arg-type]
        lambda: ConflictPolicy(tables=(TablePolicy("a", "set"),), replicated=("public.a",)),
        lambda: Node("", "r", "h"),
        lambda: Node("n", "r", "h", port=0),
    ],
)
def test_model_rejects_bad_input(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_policy_strategy_lookup() -> None:
    assert POLICY.strategy_for("items") == "lww"
    assert POLICY.strategy_for("public.tags") == "set"
    assert POLICY.strategy_for("scratch") is None
