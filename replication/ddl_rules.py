"""Which statements of a migration are safe on a multi-writer mesh, read with PostgreSQL's own parser.

``load_migration`` parses a file with libpg_query (``pglast``); ``analyse`` decides, statement by
statement, against the replicated tables (the writers' ``table_meta``) and the conflict policy:

* refused, with why and what to do instead: dropping, renaming or retyping a replicated column,
  changing a primary key, a replicated table without one, TRUNCATE, data changes to replicated
  tables (every writer would run them, and each run replicates), defaults that are not constants
  (every writer fills its existing rows itself), constraints that a peer's change could violate,
  exclusion constraints, shapes of a counter column that a legal sum can break (a CHECK, NULL, a
  unique or expression index or generated column over it, a trigger that fires on merges: what the
  install's ``check_counter_column`` refuses), anything the parser cannot see into (DO, CALL,
  function calls), transaction control, and the replication machinery itself;
* what must follow: the new tables to install with their strategy, and the replicated tables whose
  conflict objects must be re-rendered.

The writers enforce the same rules with an event trigger (``schema/ddl.sql``); this module gives the
reasons before anything runs. Pure: no database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from replication.model import ConflictPolicy, TablePolicy

__all__ = ["Analysis", "Catalog", "Migration", "MigrationError", "Refusal", "Statement", "analyse", "load_migration",
           "parse_migration"]

SCHEMA = "fraiseql_repl"
_AT = enums.AlterTableType
_CT = enums.ConstrType
_OT = enums.ObjectType
_SERIAL = {"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"}
# Casting these strings to a date/time type reads the clock at that moment.
_CLOCK_WORDS = {"now", "today", "tomorrow", "yesterday"}
_REPLICATION_TRIGGERS = ("fraiseql_repl_",)
_TRIGGER_BEFORE = 2  # CreateTrigStmt.timing: TRIGGER_TYPE_BEFORE
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class MigrationError(ValueError):
    """The file cannot be read or parsed."""


@dataclass(frozen=True)
class Statement:
    index: int   # 1-based
    line: int
    sql: str
    kind: str    # the node type, e.g. AlterTableStmt

    def brief(self, width: int = 70) -> str:
        one = " ".join(self.sql.split())
        return one if len(one) <= width else one[: width - 1] + "…"


@dataclass(frozen=True)
class Migration:
    name: str
    checksum: str
    text: str
    statements: tuple[Statement, ...]
    nodes: tuple[Any, ...] = field(repr=False, compare=False, default=())


@dataclass(frozen=True)
class Refusal:
    statement: Statement | None
    why: str
    instead: str

    def message(self, name: str) -> str:
        s = self.statement
        where = f"{name} line {s.line}, statement {s.index} ({s.brief()})" if s else name
        return f"{where}: {self.why}. Instead: {self.instead}"


@dataclass(frozen=True)
class Catalog:
    """What the writers already replicate: ``table -> strategy`` (from ``table_meta``, qualified),
    each replicated table's primary-key constraint name, and each counter table's counter columns."""

    replicated: Mapping[str, str] = field(default_factory=dict)
    pk_constraints: Mapping[str, str] = field(default_factory=dict)
    counter_cols: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass
class Analysis:
    refusals: list[Refusal] = field(default_factory=list)
    created: list[str] = field(default_factory=list)              # tables this migration creates
    install: list[TablePolicy] = field(default_factory=list)      # ... that the policy replicates
    reinstall: set[str] = field(default_factory=set)              # replicated tables it changes
    reinstall_all: bool = False                                   # an index was dropped: which table is unknown
    new_columns: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    transactional: bool = True

    @property
    def ok(self) -> bool:
        return not self.refusals


# -- reading ---------------------------------------------------------------------------------------


def parse_migration(name: str, text: str) -> Migration:
    """Parse ``text``; a syntax error names the line."""
    if not _NAME.match(name):
        raise MigrationError(f"migration name {name!r}: use letters, digits, '.', '_' or '-' (e.g. 0007_add_tags.sql)")
    try:
        raw = parse_sql(text)
    except ParseError as e:
        at = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], int) else None
        where = f" at line {text[:at].count(chr(10)) + 1}" if at is not None else ""
        raise MigrationError(f"{name}: {e.args[0]}{where}; fix the SQL (it is parsed with PostgreSQL's own grammar)") from None
    statements = []
    for i, r in enumerate(raw, 1):
        start = r.stmt_location or 0
        chunk = text[start: start + r.stmt_len] if r.stmt_len else text[start:]
        lead = len(chunk) - len(_strip_leading(chunk))
        sql = chunk[lead:].strip().rstrip(";").strip()
        statements.append(Statement(i, text[: start + lead].count("\n") + 1, sql, type(r.stmt).__name__))
    if not statements:
        raise MigrationError(f"{name}: no SQL statement in the file")
    checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Migration(name, checksum, text, tuple(statements), tuple(r.stmt for r in raw))


def load_migration(path: str | Path) -> Migration:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise MigrationError(f"cannot read migration {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise MigrationError(f"migration {path} is not UTF-8 text") from None
    return parse_migration(p.name, text)


def _strip_leading(chunk: str) -> str:
    """Drop whitespace and ``--`` / ``/* */`` comments before a statement (for its line number)."""
    s = chunk
    while True:
        t = s.lstrip()
        if t.startswith("--"):
            nl = t.find("\n")
            s = "" if nl < 0 else t[nl + 1:]
        elif t.startswith("/*"):
            end = t.find("*/")
            s = "" if end < 0 else t[end + 2:]
        else:
            return t


# -- helpers -----------------------------------------------------------------------------------------


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from _walk(getattr(node, attr))
    elif isinstance(node, (tuple, list)):
        for x in node:
            yield from _walk(x)


def _sval(node: ast.String) -> str:
    """A string node's text (pglast types it optional; the parser always sets it)."""
    return cast(str, node.sval)


def _names(items: Any) -> list[str]:
    return [_sval(x) for x in items or () if isinstance(x, ast.String)]


def _is_constant(expr: Any) -> bool:
    """A default every writer evaluates to the same value: constants, casts and arrays of them."""
    if isinstance(expr, ast.A_Const):
        return True
    if isinstance(expr, ast.TypeCast):
        arg = expr.arg
        if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String) and _sval(arg.val).strip().lower() in _CLOCK_WORDS:
            return False
        return _is_constant(arg)
    if isinstance(expr, ast.A_ArrayExpr):
        return all(_is_constant(e) for e in expr.elements or ())
    if isinstance(expr, ast.A_Expr) and expr.kind == enums.A_Expr_Kind.AEXPR_OP:
        return all(e is None or _is_constant(e) for e in (expr.lexpr, expr.rexpr))
    if isinstance(expr, ast.BoolExpr):
        return all(_is_constant(e) for e in expr.args or ())
    return False


def _deparse(node: Any) -> str:
    try:
        from pglast.stream import RawStream

        return str(RawStream()(node))
    except Exception:  # noqa: BLE001 - only for the message
        return type(node).__name__


def _columns_in(expr: Any) -> set[str]:
    return {f[-1] for f in (_names(n.fields) for n in _walk(expr) if isinstance(n, ast.ColumnRef)) if f}


# -- the rules -------------------------------------------------------------------------------------------


class _Analyser:
    def __init__(self, migration: Migration, catalog: Catalog, policy: ConflictPolicy, local_tables: Sequence[str]):
        self.m = migration
        self.catalog = catalog
        self.policy = {t.qualified: t for t in policy.all_tables()}
        self.local = {t if "." in t else f"public.{t}" for t in local_tables}
        self.search_path = ["public"]
        self.a = Analysis()
        self.created: set[str] = set()
        self.new_pk: set[str] = set()
        self.before_triggers: set[tuple[str, str]] = set()  # (table, trigger) made BEFORE in this migration
        self.added: dict[str, set[str]] = {}
        self.concurrent: list[Statement] = []
        self.stmt: Statement = migration.statements[0]

    # names
    def qualify(self, rv: Any) -> str:
        if rv.schemaname:
            return f"{rv.schemaname}.{rv.relname}"
        return f"{self.search_path[0] if self.search_path else 'public'}.{rv.relname}"

    def qualify_names(self, names: Sequence[str]) -> str:
        return ".".join(names) if len(names) > 1 else f"{self.search_path[0] if self.search_path else 'public'}.{names[0]}"

    def replicated(self, table: str) -> bool:
        """Installed on the writers: its merge functions exist and peers send its changes."""
        return table in self.catalog.replicated

    def replicated_data(self, table: str) -> bool:
        """Data that replicates once the migration is done (so it must be written once, not per writer)."""
        return table in self.catalog.replicated or table in self.policy

    def refuse(self, why: str, instead: str) -> None:
        self.a.refusals.append(Refusal(self.stmt, why, instead))

    def counter_shape(self, t: str, cols: set[str], what: str) -> bool:
        """Refuse ``what`` when it reads a counter column of replicated table ``t``: a shape the
        install's check_counter_column refuses, which a sum of legal writes can break."""
        hit = sorted(cols & set(self.catalog.counter_cols.get(t, ())))
        if hit:
            self.refuse(f"{what} over counter column {t}.{hit[0]}: regions add to it where each write was legal, and "
                        "their sum could break it on a peer's merge and stall the link (the install refuses the same shape)",
                        "check the rule in the application (it sees the whole sum only after the merge), or keep the table "
                        "out of counter replication")
        return bool(hit)

    def case_blind_key(self, t: str, elts: Sequence[Any]) -> None:
        """A key column of type citext in a new replicated table (the install refuses it, with a
        nondeterministic collation or a domain over citext, which the text alone does not show)."""
        types = {str(e.colname): _names(e.typeName.names if e.typeName else ()) for e in elts if isinstance(e, ast.ColumnDef)}
        key = {str(e.colname) for e in elts if isinstance(e, ast.ColumnDef)
               and any(x.contype == _CT.CONSTR_PRIMARY for x in e.constraints or ())}
        for e in elts:
            if isinstance(e, ast.Constraint) and e.contype == _CT.CONSTR_PRIMARY:
                key |= set(_names(e.keys))
        for c in sorted(key):
            if types.get(c, [])[-1:] == ["citext"]:
                self.refuse(f"keys replicated table {t} by citext column {c}: the mesh tells keys apart by their "
                            "spelling, so 'Key-1' and 'KEY-1' would be two keys to it and one to the table",
                            f"key {t} by a column with plain equality and keep the case-insensitive value in a unique "
                            "column beside it, or store it lower-cased")

    def merge_veto(self, t: str, what: str, *, known: bool) -> None:
        """``what`` on replicated table ``t`` is made to fire on merges: refused where it can drop or
        rewrite one (a rule, a BEFORE trigger), noted where this migration did not make it (the writer's
        event trigger reads its timing then)."""
        if known:
            self.refuse(f"makes {what} on replicated table {t} fire on merges: it can drop or rewrite a change merged "
                        "from a peer, and this writer would keep a row every other writer changed or deleted",
                        "let it fire for local writes only; an AFTER trigger may fire on merges (e.g. one that keeps a "
                        "tv_* projection)")
        else:
            self.a.notes.append(f"{what.removeprefix('BEFORE ')} on {t} will fire on merges: the writers refuse it if it "
                                "is a BEFORE trigger (it could drop or rewrite a merged change)")

    def machinery(self, schema: str | None) -> bool:
        if schema == SCHEMA:
            self.refuse(f"touches the replication machinery in schema {SCHEMA}",
                        "leave it to the bootstrap and to schema apply, which re-render it")
            return True
        return False

    # the walk
    def run(self) -> Analysis:
        for stmt, node in zip(self.m.statements, self.m.nodes):
            self.stmt = stmt
            self.statement(node)
        self.finish()
        return self.a

    def statement(self, node: Any) -> None:
        handler = getattr(self, "on_" + type(node).__name__, None)
        if handler is not None:
            handler(node)
        for rv in (n for n in _walk(node) if isinstance(n, ast.RangeVar)):
            if self.machinery(self.qualify(rv).split(".")[0]):
                break
        for dml in (n for n in _walk(node) if isinstance(n, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt))):
            table = self.qualify(dml.relation)
            if self.replicated_data(table):
                verb = {"InsertStmt": "inserts into", "UpdateStmt": "updates", "DeleteStmt": "deletes from",
                        "MergeStmt": "merges into"}[type(dml).__name__]
                self.refuse(f"{verb} replicated table {table}: every writer would run it and each run replicates "
                            "(counters would count it once per writer, app tables would log conflicts)",
                            "run data changes once, on one writer, after schema apply has finished: they replicate")

    def on_TransactionStmt(self, node: Any) -> None:
        self.refuse("controls the transaction: schema apply runs the whole file in one transaction per writer",
                    "remove BEGIN/COMMIT/SAVEPOINT from the file")

    def on_DoStmt(self, node: Any) -> None:
        self.refuse("is a DO block: schema apply cannot see what it changes on the replicated tables",
                    "write its statements out in the migration (conditional DDL: use IF [NOT] EXISTS)")

    def on_CallStmt(self, node: Any) -> None:
        self.refuse("calls a procedure: schema apply cannot see what it changes on the replicated tables",
                    "write its statements out, or run it once on one writer after schema apply")

    def on_SelectStmt(self, node: Any) -> None:
        for f in (n for n in _walk(node) if isinstance(n, ast.FuncCall)):
            fname = _names(f.funcname)
            if fname[-1] == "set_config":
                args = f.args or ()
                if len(args) >= 2 and all(isinstance(x, ast.A_Const) and isinstance(x.val, ast.String) for x in args[:2]):
                    if args[0].val.sval == "search_path":
                        self.search_path = [s.strip().strip('"') for s in args[1].val.sval.split(",") if s.strip()]
                    continue
            self.refuse(f"calls {'.'.join(fname)}(): schema apply cannot see what a function changes, and it would run "
                        "on every writer", "write the DDL out; run data changes once on one writer after schema apply")
            return

    def on_VariableSetStmt(self, node: Any) -> None:
        name = (node.name or "").lower()
        if name == "session_replication_role":
            self.refuse("sets session_replication_role: it switches off the triggers that stamp, emit and guard writes",
                        "remove it; schema apply needs the triggers on")
        elif name.startswith(SCHEMA + "."):
            self.refuse(f"sets {name}, which belongs to the replication machinery", "remove it; schema apply sets what it needs")
        elif name == "search_path" and node.args:
            self.search_path = [_sval(a.val) for a in node.args if isinstance(a, ast.A_Const) and isinstance(a.val, ast.String)]

    def on_CopyStmt(self, node: Any) -> None:
        if node.relation is not None and node.is_from and self.replicated_data(self.qualify(node.relation)):
            self.refuse(f"copies rows into replicated table {self.qualify(node.relation)} on every writer",
                        "load data once, on one writer, after schema apply has finished: it replicates")

    def on_TruncateStmt(self, node: Any) -> None:
        for rv in node.relations or ():
            t = self.qualify(rv)
            if self.replicated_data(t):
                self.refuse(f"truncates replicated table {t}: TRUNCATE is not replicated and cannot be merged with "
                            "concurrent writes in other regions", f"DELETE FROM {t} once, on one writer, after schema apply "
                            "(deletes replicate, with tombstones)")

    def on_CreateStmt(self, node: Any) -> None:
        if node.relation.relpersistence == "t":
            return
        t = self.qualify(node.relation)
        if self.replicated(t):
            if not node.if_not_exists:
                self.refuse(f"creates {t}, which is already a replicated table", "drop the statement, or use IF NOT EXISTS")
            return
        self.created.add(t)
        if t not in self.a.created:
            self.a.created.append(t)
        elts = node.tableElts or ()
        for e in elts:
            if isinstance(e, ast.Constraint) and e.contype == _CT.CONSTR_PRIMARY:
                self.new_pk.add(t)
            if isinstance(e, ast.ColumnDef) and any(c.contype == _CT.CONSTR_PRIMARY for c in e.constraints or ()):
                self.new_pk.add(t)
            if isinstance(e, ast.TableLikeClause):
                self.new_pk.add(t)  # may come from LIKE: the writers check it when they install the table
        if t in self.policy:
            self.case_blind_key(t, elts)
        if t in self.policy and (node.inhRelations or node.partspec or node.partbound):
            self.refuse(f"creates replicated table {t} with inheritance or partitions: the merge functions do not follow them",
                        "replicate a plain table")
        for parent in (self.qualify(rv) for rv in node.inhRelations or ()):
            if self.replicated(parent):
                self.refuse(f"makes {t} a child or partition of replicated table {parent}: writes through it skip the "
                            "change capture, and the merge functions do not follow them", "replicate plain tables; a view "
                            "can combine them")

    def on_CreateTableAsStmt(self, node: Any) -> None:
        if node.objtype != _OT.OBJECT_TABLE or node.into is None or node.into.rel.relpersistence == "t":
            return
        t = self.qualify(node.into.rel)
        if t in self.policy:
            self.refuse(f"creates replicated table {t} with CREATE TABLE AS: it has no primary key, and every writer "
                        "would fill it itself", f"CREATE TABLE {t} with a PRIMARY KEY, then fill it once on one writer "
                        "after schema apply")
            return
        self.created.add(t)
        self.a.created.append(t)

    def on_IndexStmt(self, node: Any) -> None:
        t = self.qualify(node.relation)
        if node.concurrent:
            self.concurrent.append(self.stmt)
        if not (self.replicated(t) or (t in self.created and t in self.policy)):
            return
        if node.primary:
            self.pk_change(t)
            return
        params = list(node.indexParams or ())
        reads = {p.name for p in params if p.name} | _columns_in([p.expr for p in params]) | _columns_in(node.whereClause)
        if not any(p.name for p in params):  # PostgreSQL records such an index as reading the whole row
            reads |= set(self.catalog.counter_cols.get(t, ()))
        shaped = node.unique or node.whereClause is not None or any(p.expr is not None for p in params)
        if shaped and self.counter_shape(t, reads, "creates a unique index, or one on an expression or with a WHERE clause,"):
            return
        if node.unique and (node.whereClause is not None or any(e.expr is not None for e in node.indexParams or ())):
            self.refuse(f"creates a unique index on an expression or with a WHERE clause on replicated table {t}: two regions "
                        "can insert rows that clash on it, and the merge could not tell which to keep",
                        "make it a unique index on plain columns, or a non-unique index")
            return
        if self.replicated(t):
            self.a.reinstall.add(t)

    def on_DropStmt(self, node: Any) -> None:
        if node.concurrent:
            self.concurrent.append(self.stmt)
        kind = node.removeType
        for obj in node.objects or ():
            if isinstance(obj, ast.ObjectWithArgs):
                names = _names(obj.objname)
            else:
                names = _names(obj) if isinstance(obj, (tuple, list)) else _names([obj])
            if not names:
                continue
            if kind in (_OT.OBJECT_TABLE, _OT.OBJECT_FOREIGN_TABLE):
                t = self.qualify_names(names)
                if self.machinery(t.split(".")[0]):
                    return
                if self.replicated(t):
                    self.refuse(f"drops replicated table {t}: peers still send its changes, which would park on every "
                                "writer that has dropped it", "stop using it and keep it; taking a table out of replication "
                                "is not a schema change")
            elif kind == _OT.OBJECT_SCHEMA:
                schema = names[0]
                if self.machinery(schema):
                    return
                inside = sorted(t for t in self.catalog.replicated if t.split(".")[0] == schema)
                if inside:
                    self.refuse(f"drops schema {schema}, which holds replicated tables ({', '.join(inside)})",
                                "keep the schema and its replicated tables")
            elif kind == _OT.OBJECT_TRIGGER:
                table, trig = self.qualify_names(names[:-1]), names[-1]
                if self.replicated(table) and trig.startswith(_REPLICATION_TRIGGERS):
                    self.refuse(f"drops replication trigger {trig} on {table}: this writer's changes would stop replicating",
                                "leave the fraiseql_repl_* triggers to the bootstrap and schema apply")
            elif kind == _OT.OBJECT_INDEX:
                if self.catalog.replicated:
                    self.a.reinstall_all = True  # a unique index the merge knows may be gone
            elif len(names) > 1 and self.machinery(names[0]):
                return

    def on_RenameStmt(self, node: Any) -> None:
        rt = node.renameType
        if rt == _OT.OBJECT_SCHEMA:
            if self.machinery(node.subname):
                return
            inside = sorted(t for t in self.catalog.replicated if t.split(".")[0] == node.subname)
            if inside:
                self.refuse(f"renames schema {node.subname}, which holds replicated tables ({', '.join(inside)}): peers "
                            "still send their changes under the old name", "keep the schema name")
            return
        if node.relation is None:
            return
        t = self.qualify(node.relation)
        if not self.replicated(t):
            return
        if rt == _OT.OBJECT_COLUMN:
            self.refuse(f"renames replicated column {t}.{node.subname}: peers still send it under its old name, and every "
                        "writer that has renamed it would park their changes",
                        f"add a column {node.newname}, write both from the application, backfill it once on one writer "
                        f"after schema apply, and keep {node.subname}")
        elif rt in (_OT.OBJECT_TABLE, _OT.OBJECT_FOREIGN_TABLE):
            self.refuse(f"renames replicated table {t}: peers still send its changes under its name",
                        f"keep the name; CREATE VIEW {node.newname} AS SELECT * FROM {t} if the new name is wanted")
        elif rt == _OT.OBJECT_TRIGGER and (node.subname or "").startswith(_REPLICATION_TRIGGERS):
            self.refuse(f"renames replication trigger {node.subname} on {t}", "leave the fraiseql_repl_* triggers alone")

    def on_AlterObjectSchemaStmt(self, node: Any) -> None:
        if node.relation is not None and node.objectType == _OT.OBJECT_TABLE:
            t = self.qualify(node.relation)
            if self.replicated(t):
                self.refuse(f"moves replicated table {t} to schema {node.newschema}: peers still send its changes under "
                            "its name", "keep it where it is")
            elif node.newschema == SCHEMA:
                self.machinery(SCHEMA)

    def on_AlterEnumStmt(self, node: Any) -> None:
        if node.oldVal:
            self.refuse(f"renames value {node.oldVal!r} of enum {'.'.join(_names(node.typeName))}: a replicated column of "
                        "that type would read differently on writers that have not renamed it yet, and their rows be parked",
                        "add a value (ALTER TYPE ... ADD VALUE) and stop using the old one")

    def on_AlterDomainStmt(self, node: Any) -> None:
        self.a.notes.append(f"alters domain {'.'.join(_names(node.typeName))}: the writers refuse it where a replicated "
                            "column uses the domain (its values would be checked otherwise on each writer)")

    def on_CreateTrigStmt(self, node: Any) -> None:
        t = self.qualify(node.relation)
        if not self.replicated(t):
            return
        if (node.trigname or "").startswith(_REPLICATION_TRIGGERS):
            self.refuse(f"creates trigger {node.trigname} on {t}: the fraiseql_repl_ prefix belongs to replication",
                        "name it otherwise")
        else:
            if node.timing & _TRIGGER_BEFORE:
                self.before_triggers.add((t, node.trigname))
            self.a.notes.append(f"trigger {node.trigname} on {t} fires for local writes only, not for changes merged from "
                                "peers; ALTER TABLE ... ENABLE ALWAYS TRIGGER if it must (e.g. tv_* projections)")

    def on_AlterTableStmt(self, node: Any) -> None:
        if node.objtype != _OT.OBJECT_TABLE or node.relation is None:
            return
        t = self.qualify(node.relation)
        if not self.replicated(t):
            for cmd in node.cmds or ():
                if cmd.subtype in (_AT.AT_AddConstraint, _AT.AT_AddIndexConstraint) and isinstance(cmd.def_, ast.Constraint) \
                        and cmd.def_.contype == _CT.CONSTR_PRIMARY:
                    self.new_pk.add(t)
                if cmd.subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef) and any(
                        c.contype == _CT.CONSTR_PRIMARY for c in cmd.def_.constraints or ()):
                    self.new_pk.add(t)
            return
        self.a.reinstall.add(t)
        for cmd in node.cmds or ():
            self.alter(t, cmd)

    def pk_change(self, t: str) -> None:
        self.refuse(f"changes the primary key of replicated table {t}: every writer identifies its rows by it",
                    "create a new table with the new key (in the replication policy), copy the rows once on one writer "
                    "after schema apply, and switch the application to it")

    def alter(self, t: str, cmd: Any) -> None:
        st = cmd.subtype
        col = cmd.name
        added = self.added.setdefault(t, set())
        if st == _AT.AT_AddColumn:
            self.add_column(t, cmd.def_)
        elif st == _AT.AT_DropColumn:
            self.refuse(f"drops replicated column {t}.{col}: peers still send it, and every writer that has dropped it "
                        "would park their changes", f"keep the column and stop using it (ALTER TABLE {t} ALTER COLUMN {col} "
                        "DROP NOT NULL if the application no longer fills it)")
        elif st == _AT.AT_AlterColumnType:
            if col not in added:
                self.refuse(f"changes the type of replicated column {t}.{col}: peers still send values of the old type",
                            f"add a column with the new type, backfill it once on one writer after schema apply, switch "
                            f"the application to it, and keep {col}")
        elif st in (_AT.AT_AddConstraint, _AT.AT_AddIndexConstraint):
            self.add_constraint(t, cmd.def_, added)
        elif st == _AT.AT_DropConstraint:
            if col and self.catalog.pk_constraints.get(t) == col:
                self.pk_change(t)
        elif st == _AT.AT_SetNotNull:
            if col not in added:
                self.refuse(f"sets NOT NULL on replicated column {t}.{col}: a writer that has not got the constraint yet "
                            "can send NULLs that the others would refuse to merge (parked for good)",
                            "enforce it in the application; the column keeps accepting NULLs from peers")
        elif st == _AT.AT_DropNotNull:
            self.counter_shape(t, {col}, "lets NULL in (DROP NOT NULL)")
        elif st in (_AT.AT_DisableTrig, _AT.AT_EnableReplicaTrig, _AT.AT_EnableAlwaysTrig, _AT.AT_EnableTrig):
            if (col or "").startswith(_REPLICATION_TRIGGERS):
                self.refuse(f"changes when replication trigger {col} on {t} fires: this writer's changes would stop "
                            "replicating or be stamped twice", "leave the fraiseql_repl_* triggers alone")
            elif st in (_AT.AT_EnableReplicaTrig, _AT.AT_EnableAlwaysTrig):
                if not self.counter_shape(t, set(self.catalog.counter_cols.get(t, ())),
                                          f"makes trigger {col} fire on merges too (it may refuse a sum)"):
                    self.merge_veto(t, f"BEFORE trigger {col}", known=(t, col) in self.before_triggers)
        elif st in (_AT.AT_EnableReplicaRule, _AT.AT_EnableAlwaysRule):
            self.merge_veto(t, f"rule {col}", known=True)
        elif st in (_AT.AT_DisableTrigAll, _AT.AT_DisableTrigUser):
            self.refuse(f"disables every trigger of replicated table {t}, the replication triggers too",
                        "disable your own triggers by name")
        elif st == _AT.AT_SetUnLogged:
            self.refuse(f"makes replicated table {t} unlogged: a crash empties it on that writer and nothing refills it",
                        "keep it logged")
        elif st in (_AT.AT_AttachPartition, _AT.AT_DetachPartition, _AT.AT_DetachPartitionFinalize, _AT.AT_AddInherit,
                    _AT.AT_DropInherit, _AT.AT_AddOf, _AT.AT_DropOf):
            self.refuse(f"changes the partitions or inheritance of replicated table {t}: the merge functions do not follow them",
                        "replicate plain tables")

    def add_column(self, t: str, cd: Any) -> None:
        c = cd.colname
        self.added.setdefault(t, set()).add(c)
        self.a.new_columns.setdefault(t, []).append(c)
        typ = _names(cd.typeName.names if cd.typeName else ())
        cons = list(cd.constraints or ())
        kinds = {x.contype for x in cons}
        if typ and typ[-1].lower() in _SERIAL or _CT.CONSTR_IDENTITY in kinds:
            self.refuse(f"adds identity or serial column {t}.{c}: every writer would number its existing rows itself",
                        "add a plain column, then fill it once on one writer after schema apply")
            return
        if _CT.CONSTR_PRIMARY in kinds:
            self.pk_change(t)
            return
        default = next((x.raw_expr for x in cons if x.contype == _CT.CONSTR_DEFAULT), None)
        if default is not None and (not _is_constant(default) or any(
                isinstance(n, ast.A_Const) and isinstance(n.val, ast.String) and _sval(n.val).strip().lower() in _CLOCK_WORDS
                for n in _walk(default))):
            self.refuse(f"adds column {t}.{c} with a default that is not a constant ({_deparse(default)}): every writer "
                        "would fill its existing rows with its own value", "add it with a constant default (or none), then "
                        "backfill it once on one writer after schema apply")
        elif _CT.CONSTR_GENERATED in kinds and self.counter_shape(
                t, _columns_in([x.raw_expr for x in cons if x.contype == _CT.CONSTR_GENERATED]), f"adds generated column {t}.{c}"):
            return
        elif _CT.CONSTR_NOTNULL in kinds and default is None and _CT.CONSTR_GENERATED not in kinds:
            self.refuse(f"adds NOT NULL column {t}.{c} without a default: it fails on every writer that has rows, and "
                        "peers' changes made before they have it carry no value for it", "give it a constant DEFAULT")
        elif _CT.CONSTR_EXCLUSION in kinds:
            self.refuse(f"adds an exclusion constraint on replicated table {t}: the merge cannot settle a clash on it",
                        "check it in the application")

    def add_constraint(self, t: str, con: Any, added: set[str]) -> None:
        if not isinstance(con, ast.Constraint):
            return
        if con.contype == _CT.CONSTR_PRIMARY:
            self.pk_change(t)
        elif con.contype == _CT.CONSTR_EXCLUSION:
            self.refuse(f"adds an exclusion constraint on replicated table {t}: the merge cannot settle a clash on it",
                        "check it in the application")
        elif con.contype == _CT.CONSTR_FOREIGN:
            self.a.notes.append(f"foreign key on {t}: changes merged from peers are not checked against it (the apply "
                                "worker runs as a replica), so a row may arrive before the row it references")
        elif con.contype == _CT.CONSTR_UNIQUE:
            self.counter_shape(t, set(_names(con.keys)), "adds a unique constraint")
        elif con.contype in (_CT.CONSTR_CHECK, _CT.CONSTR_NOTNULL):
            if con.contype == _CT.CONSTR_CHECK and self.counter_shape(t, _columns_in(con.raw_expr), "adds a CHECK constraint"):
                return
            cols = _columns_in(con.raw_expr) | set(_names(con.keys))
            if not cols or not cols <= added:
                what = "CHECK" if con.contype == _CT.CONSTR_CHECK else "NOT NULL"
                self.refuse(f"adds a {what} constraint on replicated table {t}: a writer that has not got it yet can send "
                            "rows that the others would refuse to merge (parked for good)",
                            "check it in the application, or only on columns this migration adds")

    def finish(self) -> None:
        for t in self.a.created:
            if t in self.policy:
                if t not in self.new_pk:
                    self.stmt = next(s for s, n in zip(self.m.statements, self.m.nodes)
                                     if isinstance(n, (ast.CreateStmt, ast.CreateTableAsStmt)) and t in self._created_by(n))
                    self.refuse(f"creates {t}, which the replication policy replicates ({self.policy[t].strategy}), without a "
                                "primary key: every writer identifies its rows by it",
                                "give it a PRIMARY KEY (FraiseQL write tables: pk_<entity>)")
                self.a.install.append(self.policy[t])
            elif t not in self.local and t.split(".")[0] != SCHEMA:
                self.stmt = next(s for s, n in zip(self.m.statements, self.m.nodes)
                                 if isinstance(n, (ast.CreateStmt, ast.CreateTableAsStmt)) and t in self._created_by(n))
                self.refuse(f"creates {t}, which the replication policy does not name: it would stay on each writer alone",
                            f"add it to the stack config's fraiseql:replication (tables or replicated) and pass that file "
                            f"with --policy, or pass --local-table {t} to keep it local on purpose")
        if self.concurrent:
            if len(self.concurrent) < len(self.m.statements):
                self.stmt = self.concurrent[0]
                self.refuse("runs CONCURRENTLY, which cannot run inside a transaction, next to statements that must",
                            "put the CONCURRENTLY statements in a migration of their own (run statement by statement, "
                            "write them with IF [NOT] EXISTS so that a re-run is harmless)")
            else:
                self.a.transactional = False

    def _created_by(self, node: Any) -> set[str]:
        rv = cast(ast.RangeVar, node.relation if isinstance(node, ast.CreateStmt) else node.into.rel)
        return {self.qualify(rv)} | ({f"public.{rv.relname}"} if not rv.schemaname else set())


def analyse(migration: Migration, catalog: Catalog, policy: ConflictPolicy, local_tables: Sequence[str] = ()) -> Analysis:
    """Decide every statement of ``migration`` (see the module docstring)."""
    a = _Analyser(migration, catalog, policy, local_tables).run()
    for t, strategy in sorted(catalog.replicated.items()):
        want = next((p.strategy for p in policy.all_tables() if p.qualified == t), None)
        if want is not None and want != strategy:
            a.refusals.append(Refusal(None, f"the policy gives {t} strategy {want}, but the writers merge it "
                                      f"as {strategy}: a change of strategy is not a schema change",
                                      f"keep {strategy} in the --policy file for this migration"))
    return a
