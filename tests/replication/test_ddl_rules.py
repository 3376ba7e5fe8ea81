"""Which migration statements schema apply refuses, and why (pure: the parser and the rules, no
database), and the order its steps run in (a pure planner, property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drills.sample import POLICY
from replication.ddl_rules import Catalog, MigrationError, analyse, parse_migration
from replication.migrate import plan
from replication.model import ConflictPolicy, TablePolicy

CATALOG = Catalog({"public.items": "lww", "public.counters": "counter", "public.tags": "set", "public.accounts": "app"},
                  {"public.items": "items_pkey", "public.counters": "counters_pkey"}, {"public.counters": ("hits",)})
WITH_LIKES = ConflictPolicy(tables=POLICY.tables + (TablePolicy("likes", "counter", ("n",)),), replicated=POLICY.replicated)


def refusals(sql: str, policy: ConflictPolicy = WITH_LIKES, **kw: object) -> list[str]:
    m = parse_migration("0007_change.sql", sql)
    return [r.message(m.name) for r in analyse(m, CATALOG, policy, **kw).refusals]  # type: ignore[arg-type]


# One case per class of unsafe DDL: the statement, then words the message must carry (why, and what instead).
UNSAFE = {
    "drop column": ("ALTER TABLE items DROP COLUMN v",
                    ["drops replicated column public.items.v", "peers still send it", "Instead: keep the column"]),
    "rename column": ("ALTER TABLE items RENAME COLUMN v TO label",
                      ["renames replicated column public.items.v", "peers still send it under its old name",
                       "Instead: add a column label"]),
    "primary key dropped": ("ALTER TABLE items DROP CONSTRAINT items_pkey",
                            ["changes the primary key of replicated table public.items", "Instead: create a new table"]),
    "primary key added": ("ALTER TABLE counters ADD PRIMARY KEY (id, label)",
                          ["changes the primary key of replicated table public.counters"]),
    "enum value renamed": ("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'",
                           ["renames value 'ok' of enum mood", "Instead: add a value (ALTER TYPE"]),
    "case-blind key": ("CREATE TABLE likes (id citext PRIMARY KEY, n bigint NOT NULL DEFAULT 0)",
                       ["keys replicated table public.likes by citext column id", "Instead: key public.likes by a column "
                        "with plain equality"]),
    "no primary key": ("CREATE TABLE likes (id int, n bigint NOT NULL DEFAULT 0)",
                       ["creates public.likes, which the replication policy replicates (counter), without a primary key",
                        "Instead: give it a PRIMARY KEY"]),
    "truncate": ("TRUNCATE items", ["truncates replicated table public.items", "TRUNCATE is not replicated",
                                    "Instead: DELETE FROM public.items once, on one writer"]),
    "type change": ("ALTER TABLE items ALTER COLUMN v TYPE varchar(20)",
                    ["changes the type of replicated column public.items.v", "old type", "Instead: add a column"]),
    "volatile default": ("ALTER TABLE items ADD COLUMN seen timestamptz DEFAULT now()",
                         ["default that is not a constant (now())", "its own value", "Instead: add it with a constant default"]),
    "clock string default": ("ALTER TABLE items ADD COLUMN seen timestamptz DEFAULT 'now'",
                             ["default that is not a constant"]),
    "serial column": ("ALTER TABLE items ADD COLUMN n bigserial", ["adds identity or serial column public.items.n"]),
    "not null without default": ("ALTER TABLE items ADD COLUMN w int NOT NULL", ["without a default"]),
    "set not null": ("ALTER TABLE items ALTER COLUMN v SET NOT NULL",
                     ["sets NOT NULL on replicated column public.items.v", "parked for good"]),
    "check constraint": ("ALTER TABLE accounts ADD CONSTRAINT positive CHECK (balance >= 0)",
                         ["adds a CHECK constraint on replicated table public.accounts"]),
    "data change": ("UPDATE counters SET hits = 0", ["updates replicated table public.counters", "once per writer",
                                                     "Instead: run data changes once, on one writer"]),
    "drop table": ("DROP TABLE tags", ["drops replicated table public.tags"]),
    "rename table": ("ALTER TABLE items RENAME TO things", ["renames replicated table public.items", "CREATE VIEW things"]),
    "unique on expression": ("CREATE UNIQUE INDEX ON items (lower(v))", ["unique index on an expression"]),
    "exclusion constraint": ("ALTER TABLE items ADD CONSTRAINT items_v_excl EXCLUDE USING btree (v WITH =)",
                             ["adds an exclusion constraint on replicated table public.items", "Instead: check it in the application"]),
    # A counter column's shapes that a sum of legal writes can break (the install's check_counter_column).
    "counter check": ("ALTER TABLE counters ADD CONSTRAINT hits_nonneg CHECK (hits >= 0)",
                      ["adds a CHECK constraint over counter column public.counters.hits", "stall the link",
                       "Instead: check the rule in the application"]),
    "counter expression index": ("CREATE INDEX counters_ratio ON counters ((100 / (hits + 2)))",
                                 ["over counter column public.counters.hits"]),
    "counter partial index": ("CREATE INDEX counters_low ON counters (id) WHERE hits < 10",
                              ["over counter column public.counters.hits"]),
    "counter unique index": ("CREATE UNIQUE INDEX counters_hits ON counters (hits)",
                             ["creates a unique index", "over counter column public.counters.hits"]),
    "counter unique constraint": ("ALTER TABLE counters ADD CONSTRAINT counters_hits_key UNIQUE (label, hits)",
                                  ["adds a unique constraint over counter column public.counters.hits"]),
    "counter nullable": ("ALTER TABLE counters ALTER COLUMN hits DROP NOT NULL",
                         ["lets NULL in (DROP NOT NULL) over counter column public.counters.hits"]),
    "counter generated column": ("ALTER TABLE counters ADD COLUMN twice bigint GENERATED ALWAYS AS (hits * 2) STORED",
                                 ["adds generated column public.counters.twice over counter column public.counters.hits"]),
    "counter trigger on merges": ("CREATE TRIGGER counters_same BEFORE UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION "
                                  "suppress_redundant_updates_trigger(); ALTER TABLE counters ENABLE ALWAYS TRIGGER counters_same",
                                  ["makes trigger counters_same fire on merges too", "counter column public.counters.hits"]),
    "replication trigger": ("ALTER TABLE items DISABLE TRIGGER fraiseql_repl_emit",
                            ["replication trigger fraiseql_repl_emit on public.items"]),
    "replication trigger replaced": ("CREATE OR REPLACE TRIGGER fraiseql_repl_emit AFTER INSERT ON items FOR EACH STATEMENT "
                                     "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
                                     ["creates trigger fraiseql_repl_emit on public.items", "belongs to replication"]),
    "inherits a replicated table": ("CREATE TABLE items_archive () INHERITS (items)",
                                    ["makes public.items_archive a child or partition of replicated table public.items",
                                     "Instead: replicate plain tables"]),
    "before trigger on merges": ("CREATE TRIGGER items_keep BEFORE DELETE ON items FOR EACH ROW EXECUTE FUNCTION "
                                 "suppress_redundant_updates_trigger(); ALTER TABLE items ENABLE ALWAYS TRIGGER items_keep",
                                 ["makes BEFORE trigger items_keep on replicated table public.items fire on merges",
                                  "Instead: let it fire for local writes only"]),
    "rule on merges": ("CREATE RULE items_keep AS ON DELETE TO items DO INSTEAD NOTHING; "
                       "ALTER TABLE items ENABLE ALWAYS RULE items_keep",
                       ["makes rule items_keep on replicated table public.items fire on merges"]),
    "triggers off": ("SET session_replication_role = replica", ["switches off the triggers"]),
    "DO block": ("DO $$ BEGIN UPDATE items SET v = 'x'; END $$", ["is a DO block", "cannot see what it changes"]),
    "function call": ("SELECT reset_all_counters()", ["calls reset_all_counters()"]),
    "transaction control": ("BEGIN; ALTER TABLE items ADD COLUMN w int; COMMIT",
                            ["controls the transaction", "Instead: remove BEGIN/COMMIT"]),
    "machinery": ("DROP FUNCTION fraiseql_repl.retry_parked()", ["touches the replication machinery"]),
    "unknown table": ("CREATE TABLE audit (id int PRIMARY KEY)",
                      ["creates public.audit, which the replication policy does not name", "--local-table public.audit"]),
    "concurrently mixed": ("CREATE INDEX CONCURRENTLY i ON items (v); ALTER TABLE items ADD COLUMN w int",
                           ["runs CONCURRENTLY", "in a migration of their own"]),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_ddl_is_refused_with_why_and_what_instead(case: str) -> None:
    sql, words = UNSAFE[case]
    found = refusals(sql)
    assert found, f"{case}: not refused"
    text = " | ".join(found)
    assert text.startswith("0007_change.sql line 1, statement ")
    for w in words:
        assert w in text, f"{case}: {w!r} not in {text!r}"


SAFE_MIGRATION = """-- likes per item, and a note
CREATE TABLE likes (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0, at timestamptz DEFAULT now());
ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT 'none', ADD COLUMN tags text[] DEFAULT '{}'::text[];
CREATE INDEX items_note ON items (note);
CREATE UNIQUE INDEX ON items (note, v);
ALTER TABLE items ALTER COLUMN v SET DEFAULT 'x', ALTER COLUMN v DROP NOT NULL;
CREATE TABLE tv_item_stats (id int PRIMARY KEY, n int);
INSERT INTO tv_item_stats VALUES (1, 0);
"""


def test_a_safe_migration_passes_and_says_what_must_follow() -> None:
    m = parse_migration("0008_likes.sql", SAFE_MIGRATION)
    a = analyse(m, CATALOG, WITH_LIKES, local_tables=["tv_item_stats"])
    assert a.refusals == []
    assert [t.qualified for t in a.install] == ["public.likes"] and a.install[0].strategy == "counter"
    assert a.new_columns == {"public.items": ["note", "tags"]}
    assert a.reinstall == {"public.items"} and a.transactional
    assert [s.line for s in m.statements] == [2, 3, 4, 5, 6, 7, 8]


def test_constraints_on_columns_the_migration_adds_are_allowed() -> None:
    assert refusals("ALTER TABLE items ADD COLUMN q int DEFAULT 1, ADD CONSTRAINT q_pos CHECK (q > 0);"
                    "ALTER TABLE items ALTER COLUMN q SET NOT NULL") == []


def test_counter_shapes_no_sum_can_break_are_allowed() -> None:
    assert refusals("CREATE INDEX ON counters (hits); CREATE INDEX ON counters (id, lower(label)) WHERE label <> '';"
                    "CREATE UNIQUE INDEX ON counters (label); ALTER TABLE items ENABLE ALWAYS TRIGGER tv_refresh;"
                    "ALTER TABLE counters ALTER COLUMN label DROP NOT NULL") == []


def test_a_concurrently_only_migration_runs_without_a_transaction() -> None:
    m = parse_migration("0009_idx.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_v ON items (v)")
    a = analyse(m, CATALOG, WITH_LIKES)
    assert a.refusals == [] and not a.transactional


def test_a_change_of_strategy_is_not_a_schema_change() -> None:
    policy = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)), TablePolicy("tags", "set"),
                                    TablePolicy("accounts", "lww")), replicated=("items",))
    found = refusals("ALTER TABLE items ADD COLUMN w int", policy)
    assert found == ["0007_change.sql: the policy gives public.accounts strategy lww, but the writers merge it as app: a "
                     "change of strategy is not a schema change. Instead: keep app in the --policy file for this migration"]


def test_a_syntax_error_names_the_line() -> None:
    with pytest.raises(MigrationError, match=r"0010_bad.sql: syntax error at or near \",\" at line 3; fix the SQL"):
        parse_migration("0010_bad.sql", "-- bad\nCREATE TABLE x (\n  id int,,\n)")
    with pytest.raises(MigrationError, match="no SQL statement"):
        parse_migration("0011_empty.sql", "-- nothing here\n")
    with pytest.raises(MigrationError, match="migration name"):
        parse_migration("../etc/passwd", "SELECT 1")


STATUS = st.sampled_from([None, "applied", "completed"])


@given(st.dictionaries(st.sampled_from(["us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "sa-east-1"]), STATUS,
                       min_size=1))
def test_no_writer_releases_before_every_writer_has_the_change_and_merges_it(status: dict[str, str | None]) -> None:
    steps = plan(status)
    if all(s == "completed" for s in status.values()):
        assert steps == []
        return
    order = [(s.phase, s.writer) for s in steps]
    first_release = min(i for i, (p, _) in enumerate(order) if p == "release")
    # every writer is re-installed (merges the new columns), and every writer that lacked the
    # migration ran its additive step, before the first release lets a writer send them
    assert {w for p, w in order[:first_release] if p == "install"} == set(status)
    assert {w for p, w in order[:first_release] if p == "additive"} == {w for w, s in status.items() if s is None}
    if any(s is None for s in status.values()):
        last_additive = max(i for i, (p, _) in enumerate(order) if p == "additive")
        assert last_additive < min(i for i, (p, _) in enumerate(order) if p == "install")
    # the statements run only where they are missing, each after its own rehearsal
    for w, s in status.items():
        if s is None:
            assert order.index(("rehearse", w)) < order.index(("additive", w))
        else:
            assert ("additive", w) not in order
