"""The DDL rules written twice agree: `replication.ddl_rules` (what schema apply refuses before any
writer runs anything, from the migration's text) and the event trigger of `replication/schema/ddl.sql`
(what a writer refuses when the DDL reaches it, by hand or past schema apply), on a live writer.

Each case of the rule table (`tests/replication/test_ddl_rules.py`'s `UNSAFE`) runs on a real writer
inside a transaction that sets schema apply's own setting and is rolled back. The trigger sees DDL
commands only, so the rule table is the stricter of the two: `TRIGGER_ALSO` names the cases the
trigger refuses too, and each other case says why the trigger cannot see it. A rule added to either
side without the other moves a case in or out of that set and fails here. The safe migration of the
rule tests passes both."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.migrate import render_ddl_objects
from tests.replication.test_ddl_rules import SAFE_MIGRATION, UNSAFE, refusals

A = REGIONS[0]

#: The cases the writer's event trigger refuses as well (SQLSTATE FQ003).
TRIGGER_ALSO = {
    "drop column", "rename column", "primary key dropped", "type change", "drop table", "rename table",
    "replication trigger", "unique on expression", "exclusion constraint", "counter check", "counter expression index",
    "counter partial index", "counter unique index", "counter unique constraint", "counter nullable",
    "counter generated column", "counter trigger on merges", "set not null", "check constraint",
    "replication trigger replaced", "inherits a replicated table", "before trigger on merges", "rule on merges",
    "serial column",  # its nextval() default rewrites every row: the table_rewrite guard
}
#: The cases PostgreSQL itself refuses on this writer, before the trigger could look: the SQLSTATE.
POSTGRES_ITSELF = {"primary key added": "42P16"}  # a second primary key (a swap of keys: "primary key dropped")
#: Why each other case is for the rule table alone.
RULES_ONLY = {
    "machinery": "only its owner may change it, and privilege, not the trigger, keeps everyone else out",
    "no primary key": "a table the policy names is created: the writer has no policy to read",
    "case-blind key": "as above (the install refuses it when schema apply installs the table)",
    "enum value renamed": "inside schema apply the writer lets ALTER TYPE through (how an enum gains a value); only the "
                          "text tells a rename",
    "truncate": "not DDL (no event trigger fires); TRUNCATE is not published",
    "volatile default": "the default is evaluated where the DDL runs: only the text shows it",
    "clock string default": "as above",
    "not null without default": "allowed on an empty table; only the plan knows peers still send rows without it",
    "data change": "not DDL",
    "triggers off": "not DDL (a setting)",
    "DO block": "not DDL until it runs something",
    "function call": "not DDL",
    "transaction control": "not DDL",
    "unknown table": "the writer has no policy to read",
    "concurrently mixed": "a rule about how schema apply runs the file",
}


@pytest.fixture(scope="module")
def writer() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        running.execute(A, "CREATE FUNCTION reset_all_counters() RETURNS void LANGUAGE sql AS 'SELECT'")
        yield running


def on_the_writer(m: Mesh, sql: str) -> str | None:
    """What a writer says to ``sql`` with schema apply's setting on (rolled back): the SQLSTATE it
    refuses with, or None."""
    with m.connect(A) as c:
        try:
            with c.transaction():
                c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
                c.execute(sql.encode())
                raise psycopg.Rollback()
        except psycopg.Error as e:
            return e.sqlstate
    return None


def test_every_case_is_accounted_for_once() -> None:
    sets = [TRIGGER_ALSO, set(POSTGRES_ITSELF), set(RULES_ONLY)]
    assert sum(len(x) for x in sets) == len(set().union(*sets)) and set().union(*sets) == set(UNSAFE)


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_the_rule_table_and_the_writers_event_trigger_agree(writer: Mesh, case: str) -> None:
    sql = UNSAFE[case][0]
    assert refusals(sql), f"{case}: the rule table lets it through"
    said = on_the_writer(writer, sql)
    if case in TRIGGER_ALSO:
        assert said == "FQ003", f"{case}: the event trigger lets {sql!r} through ({said}); the rule table refuses it"
    elif case in POSTGRES_ITSELF:
        assert said == POSTGRES_ITSELF[case], f"{case}: {sql!r} gave {said}"
    else:
        assert said != "FQ003", (f"{case}: the event trigger refuses {sql!r} too: move it to TRIGGER_ALSO (it was "
                                 f"for the rule table alone: {RULES_ONLY[case]})")


def test_the_safe_migration_passes_both(writer: Mesh) -> None:
    assert refusals(SAFE_MIGRATION, local_tables=["tv_item_stats"]) == []
    assert on_the_writer(writer, SAFE_MIGRATION) is None


@pytest.mark.parametrize("sql,refused", [
    ("CREATE UNIQUE INDEX ON items (v) WHERE v <> ''", True),
    ("CREATE UNIQUE INDEX CONCURRENTLY ON items (lower(v))", True),
    ("CREATE UNIQUE INDEX ON items (v)", False),
    ("CREATE INDEX ON items (lower(v)) WHERE v <> ''", False),
    # a counter column: what no sum can break (check_counter_column)
    ("CREATE INDEX ON counters (hits)", False),
    ("CREATE INDEX ON counters (id, lower(label)) WHERE label <> ''", False),
    # no plain column: PostgreSQL records the index as depending on the whole row, the counter too
    ("CREATE INDEX ON counters (lower(label))", True),
    ("CREATE UNIQUE INDEX ON counters (label)", False),
])
def test_both_sides_judge_the_other_indexes_alike(writer: Mesh, sql: str, refused: bool) -> None:
    assert bool(refusals(sql)) == refused
    if "CONCURRENTLY" in sql:
        # Not in a transaction: by hand, as an operator would. PostgreSQL cannot take a concurrent build
        # back, so the refused index stays, invalid but enforced; every later DDL on the table is refused
        # and says to drop it.
        with writer.connect(A) as c:
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql.encode())
            assert e.value.sqlstate == "FQ003"
            left = c.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'items'::regclass "
                             "AND indexprs IS NOT NULL AND NOT indisvalid").fetchall()
            assert len(left) == 1
            try:
                with pytest.raises(psycopg.Error) as later:
                    c.execute("ALTER TABLE items ALTER COLUMN v SET DEFAULT 'x'")
                assert later.value.sqlstate == "FQ003"
                assert f"DROP INDEX public.{left[0][0]} " in str(later.value.diag.message_hint)
            finally:
                c.execute(f"DROP INDEX {left[0][0]}".encode())
    else:
        assert (on_the_writer(writer, sql) == "FQ003") == refused


def test_a_writer_guarded_by_the_previous_release_gets_the_new_guard_on_a_rerun(writer: Mesh) -> None:
    with writer.connect(A) as c:
        c.execute("DROP EVENT TRIGGER fraiseql_repl_ddl_guard")
        # recorded before the unique keys were (and before upgrade 2 recorded them)
        c.execute("ALTER TABLE fraiseql_repl.table_shape DROP COLUMN uniques")
        c.execute("DELETE FROM fraiseql_repl.schema_upgrades WHERE version = 2")
        c.execute("CREATE EVENT TRIGGER fraiseql_repl_ddl_guard ON ddl_command_end WHEN TAG IN ('ALTER TABLE', "
                  "'ALTER SCHEMA') EXECUTE FUNCTION fraiseql_repl.ddl_guard()")  # as the previous release made it
        assert on_the_writer(writer, "CREATE UNIQUE INDEX ON items (lower(v))") is None
        for stmt in render_ddl_objects():  # what the bootstrap re-runs
            c.execute(stmt.encode())
        assert c.execute("SELECT count(*) FROM fraiseql_repl.table_shape WHERE uniques IS NULL").fetchall() == [(0,)]
        with pytest.raises(psycopg.Error) as e, c.transaction():  # by hand: the merge does not know it
            c.execute("CREATE UNIQUE INDEX ON items (v)")
        assert e.value.sqlstate == "FQ003"
    assert on_the_writer(writer, "CREATE UNIQUE INDEX ON items (lower(v))") == "FQ003"


def test_the_merge_settles_a_unique_key_on_its_key_columns_not_its_included_ones(writer: Mesh) -> None:
    """fraiseql_repl.unique_keys: what install_table builds a clash block for and the guard compares.
    An INCLUDE column is no part of the rule (a clash compared on it too would be missed)."""
    with writer.connect(A) as c, c.transaction():
        c.execute("CREATE TABLE kinds (id int PRIMARY KEY, a int, b int, UNIQUE (a) INCLUDE (b), UNIQUE NULLS NOT DISTINCT (b, a))")
        c.execute("CREATE UNIQUE INDEX ON kinds (lower(a::text))")  # refused by the install, not a key here
        got = c.execute("SELECT cols, nnd FROM fraiseql_repl.unique_keys('kinds'::regclass) ORDER BY cols").fetchall()
        assert got == [(["a"], False), (["b", "a"], True)]
        raise psycopg.Rollback()
