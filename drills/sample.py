"""The sample application schema and conflict policy used by the phase-B drill and tests.

One table per strategy, shaped like FraiseQL's write tables (integer keys to
keep the drill output readable).
"""

from __future__ import annotations

from replication.model import ConflictPolicy, TablePolicy

APP_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE items (id int PRIMARY KEY, v text)",
    "CREATE TABLE counters (id int PRIMARY KEY, label text, hits bigint NOT NULL DEFAULT 0)",
    "CREATE TABLE tags (item int, tag text, PRIMARY KEY (item, tag))",
    "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)",
    "CREATE TABLE scratch (id int PRIMARY KEY)",  # deliberately not replicated
)

POLICY = ConflictPolicy(
    tables=(
        TablePolicy("counters", "counter", ("hits",)),
        TablePolicy("tags", "set"),
        TablePolicy("accounts", "app"),
    ),
    replicated=("items",),
)

#: Tables that must be identical on every node once replication is quiet.
CONVERGENT_TABLES: tuple[str, ...] = ("items", "counters", "tags", "fraiseql_repl.shards")
