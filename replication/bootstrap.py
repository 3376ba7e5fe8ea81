"""Run the rendered SQL against the writers; also the body of the bootstrap Lambda.

``pulumi up`` invokes one Lambda per region inside its VPC, twice: step ``local``
in every region, then step ``subscribe`` in every region. The replication
password comes from a Secrets Manager secret replicated to every region.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from replication.model import ConflictPolicy, Node, TablePolicy
from replication.sql import (
    CONTROL_TABLES,
    SCHEMA,
    _ident,
    _lit,
    _published,
    default_conninfo,
    render_local_objects,
    render_subscriptions,
)

__all__ = ["apply", "bootstrap_mesh", "handler", "nodes_from_event", "policy_from_event", "render_replication_role",
           "run_step"]


class _Conn(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


def apply(conn: _Conn, statements: Iterable[str]) -> int:
    """Execute ``statements`` one by one on an autocommit connection; returns how many ran.

    Statements are idempotent, so a failure part-way is fixed by running the
    whole list again.
    """
    n = 0
    for stmt in statements:
        conn.execute(stmt.encode())  # bytes: no client-side placeholder parsing
        n += 1
    return n


def bootstrap_mesh(
    connect: Callable[[Node], Any],
    nodes: Sequence[Node],
    policy: ConflictPolicy,
    conninfo: Callable[[Node, Node], str] | None = None,
) -> dict[str, int]:
    """Bootstrap (or re-converge) a whole mesh: local objects everywhere, then subscriptions.

    ``connect(node)`` returns an autocommit DB-API connection usable as a
    context manager; ``conninfo(subscriber, publisher)`` is how the subscriber
    reaches the publisher (default: ``default_conninfo()`` on the publisher's
    model fields). Returns the statement count per node.
    """
    counts: dict[str, int] = {}
    for node in nodes:
        with connect(node) as conn:
            counts[node.name] = apply(conn, render_local_objects(node, nodes, policy))
    for node in nodes:
        with connect(node) as conn:
            per_peer = None if conninfo is None else _bind(conninfo, node)
            counts[node.name] += apply(conn, render_subscriptions(node, nodes, per_peer))
    return counts


def _bind(conninfo: Callable[[Node, Node], str], subscriber: Node) -> Callable[[Node], str]:
    return lambda publisher: conninfo(subscriber, publisher)


def nodes_from_event(event: Mapping[str, Any]) -> list[Node]:
    """``event["nodes"]``: a list of objects with the ``Node`` fields."""
    return [Node(**n) for n in event["nodes"]]


def policy_from_event(event: Mapping[str, Any]) -> ConflictPolicy:
    """``event["policy"]``: ``{"default": "lww", "tables": [{"table", "strategy", "columns"}], "replicated": [...]}``."""
    p = event.get("policy") or {}
    tables = tuple(
        TablePolicy(t["table"], t["strategy"], tuple(t.get("columns", ()))) for t in p.get("tables", ())
    )
    return ConflictPolicy(
        default=p.get("default", "lww"), tables=tables, replicated=tuple(p.get("replicated", ()))
    )


def render_replication_role(user: str, password: str, policy: ConflictPolicy) -> list[str]:
    """The login role peers' subscriptions use: replication rights plus SELECT on what is published.

    On RDS, replication is granted through the ``rds_replication`` role; on plain PostgreSQL through
    the REPLICATION attribute. Idempotent: re-running resets the password to the current secret.
    """
    role, pw = _ident(user), _lit(password)
    stmts = [
        "DO $do$ BEGIN\n"
        f"  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {_lit(user)}) THEN\n"
        f"    CREATE ROLE {role} LOGIN PASSWORD {pw};\n"
        "  ELSE\n"
        f"    ALTER ROLE {role} LOGIN PASSWORD {pw};\n"
        "  END IF;\n"
        "  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication') THEN\n"
        f"    EXECUTE 'GRANT rds_replication TO {role}';\n"
        "  ELSE\n"
        f"    EXECUTE 'ALTER ROLE {role} REPLICATION';\n"
        "  END IF;\n"
        "END $do$",
    ]
    schemas = sorted({SCHEMA} | {t.qualified.split(".")[0] for t in policy.all_tables()})
    stmts += [f"GRANT USAGE ON SCHEMA {_ident(schema)} TO {role}" for schema in schemas]
    stmts += [f"GRANT SELECT ON {table} TO {role}" for table in [*_published(policy), *CONTROL_TABLES]]
    return stmts


def _replication_password(client: Any, secret_id: str, *, create: bool, wait_s: float = 180,
                          sleep: Callable[[float], None] = time.sleep) -> str:
    """The shared password: generated once (by the first region), read everywhere else.

    Other regions read their replica of the secret, which Secrets Manager fills within seconds of
    the first region's write; they wait for it rather than fail.
    """
    deadline = time.monotonic() + wait_s
    delay = 2.0
    while True:
        try:
            return json.loads(client.get_secret_value(SecretId=secret_id)["SecretString"])["password"]
        except client.exceptions.ResourceNotFoundException:
            if create:
                password = secrets.token_urlsafe(32)
                client.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"password": password}))
                return password
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication secret {secret_id} has no value after {wait_s:g} s") from None
            sleep(delay)
            delay = min(delay * 2, 20)


def run_step(event: Mapping[str, Any], connect: Callable[[Node, dict[str, str]], Any], secrets_client: Any,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """One region's bootstrap step, with its I/O injected (the Lambda handler and the tests use it).

    ``step`` is ``local`` (the role, conflict objects, publication, slots on this writer) or
    ``subscribe`` (this writer's subscriptions to every peer). Pulumi runs every region's ``local``
    before any ``subscribe``: a subscription made before its publication exists replicates nothing.
    """
    nodes = nodes_from_event(event)
    me = next(n for n in nodes if n.name == event["node"])
    policy = policy_from_event(event)
    master = json.loads(secrets_client.get_secret_value(SecretId=event["master_secret_arn"])["SecretString"])
    password = _replication_password(
        secrets_client, event["replication_secret"], create=bool(event.get("create_replication_secret")), sleep=sleep
    )
    with connect(me, master) as conn:
        if event["step"] == "local":
            statements = render_local_objects(me, nodes, policy)
            statements += render_replication_role(me.user, password, policy)
        elif event["step"] == "subscribe":
            statements = render_subscriptions(me, nodes, default_conninfo(password, sslmode=event.get("sslmode", "require")))
        else:
            raise ValueError(f"unknown bootstrap step {event['step']!r}; use local or subscribe")
        count = apply(conn, statements)
    return {"ok": True, "node": me.name, "step": event["step"], "statements": count}


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point: one region's ``local`` or ``subscribe`` step against its own writer.

    Event: ``{"step", "node", "nodes": [...], "policy": {...}, "master_secret_arn",
    "replication_secret", "create_replication_secret", "sslmode"(optional)}``. The master secret is
    the writer's RDS-managed secret (``username``/``password``).
    """
    import boto3  # only in the Lambda runtime
    import psycopg

    def connect(node: Node, master: dict[str, str]) -> Any:
        return psycopg.connect(host=node.host, port=node.port, dbname=node.dbname, user=master["username"],
                               password=master["password"], sslmode=event.get("sslmode", "require"),
                               autocommit=True, connect_timeout=10)

    return run_step(event, connect, boto3.client("secretsmanager"))
