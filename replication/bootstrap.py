"""Run the rendered SQL against the writers; also the body of the bootstrap Lambda.

``pulumi up`` invokes one Lambda per region inside its VPC, twice: step ``local``
in every region, then step ``subscribe`` in every region. The replication
password comes from a Secrets Manager secret replicated to every region, and reaches
PostgreSQL as a session setting, never as SQL text (``replication.roles``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from replication.model import ConflictPolicy, Node, TablePolicy
from replication.redact import SecretBox, guarded
from replication.roles import render_login_role, render_replication_grants, render_roles, secret_options
from replication.sql import default_conninfo, render_local_objects, render_subscriptions

__all__ = ["STEPS", "apply", "bootstrap_mesh", "handler", "nodes_from_event", "policy_from_event",
           "render_replication_role", "run_step"]


class _Conn(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


#: How long the transition lease of a phase A primary lasts if its agent never runs (it fences then).
TRANSITION_LEASE_S = 1800.0


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
    # A writer's index defaults to its place in the list, as the stack numbers them.
    return [Node(**{**n, "index": n.get("index") or i + 1}) for i, n in enumerate(event["nodes"])]


def policy_from_event(event: Mapping[str, Any]) -> ConflictPolicy:
    """``event["policy"]``: ``{"default": "lww", "tables": [{"table", "strategy", "columns"}], "replicated": [...]}``."""
    p = event.get("policy") or {}
    tables = tuple(
        TablePolicy(t["table"], t["strategy"], tuple(t.get("columns", ()))) for t in p.get("tables", ())
    )
    return ConflictPolicy(
        default=p.get("default", "lww"), tables=tables, replicated=tuple(p.get("replicated", ()))
    )


def render_replication_role(user: str, policy: ConflictPolicy) -> list[str]:
    """The login role peers' subscriptions use: replication rights plus SELECT on what is published.

    Its password is the one bound in the session (``replication.roles.secret_options``), never a
    literal here. On RDS, replication is granted through ``rds_replication``; elsewhere through the
    REPLICATION attribute. Idempotent: re-running resets the password to the bound one.
    """
    return render_login_role(user, replication=True) + render_replication_grants(policy, user)


def _replication_password(client: Any, secret_id: str, *, create: bool, wait_s: float = 180,
                          sleep: Callable[[float], None] = time.sleep, version_id: str | None = None,
                          username: str | None = None) -> str:
    """A password secret's value: generated once (by the region that owns it), read everywhere else.

    A replica region reads its own replica of the secret, which Secrets Manager fills within
    seconds of the owner's write (and likewise a rotation's pending version); it waits rather than
    fails. ``version_id`` reads that version (a rotation) instead of the current one.
    """
    deadline = time.monotonic() + wait_s
    delay = 2.0
    query: dict[str, Any] = {"SecretId": secret_id}
    if version_id:
        query["VersionId"] = version_id
    while True:
        try:
            return json.loads(client.get_secret_value(**query)["SecretString"])["password"]
        except client.exceptions.ResourceNotFoundException:
            if create and not version_id:
                password = secrets.token_urlsafe(32)
                value = {"username": username, "password": password} if username else {"password": password}
                client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))
                return password
            if time.monotonic() > deadline:
                what = f"version {version_id}" if version_id else "no value"
                raise RuntimeError(f"secret {secret_id} has {what} after {wait_s:g} s") from None
            sleep(delay)
            delay = min(delay * 2, 20)


#: Steps ``pulumi up`` runs (local, subscribe) and those the rotation function runs (the rest).
STEPS = ("local", "subscribe", "set_password", "resubscribe", "test_password", "roles")


def run_step(event: Mapping[str, Any], connect: Callable[..., Any], secrets_client: Any,
             sleep: Callable[[float], None] = time.sleep, box: SecretBox | None = None) -> dict[str, Any]:
    """One region's bootstrap step, with its I/O injected (the Lambda handler and the tests use it).

    ``connect(node, user, password, options)`` returns an autocommit connection; ``options`` binds
    role passwords to the session. Steps: ``local`` (objects, publication, slots, roles) and
    ``subscribe`` (this writer's subscriptions to every peer), which Pulumi runs in every region in
    that order; ``roles`` (phase A: the app's role only, on the primary); ``set_password``, ``resubscribe`` and ``test_password`` with ``version_id``: a
    rotation of the replication password (see ``replication.rotation``).
    """
    box = box if box is not None else SecretBox()
    step = event["step"]
    if step not in STEPS:
        raise ValueError(f"unknown bootstrap step {step!r}; use one of {', '.join(STEPS)}")
    nodes = nodes_from_event(event)
    me = next(n for n in nodes if n.name == event["node"])
    policy = policy_from_event(event)
    master = json.loads(secrets_client.get_secret_value(SecretId=event["master_secret_arn"])["SecretString"])
    box.add(master.get("password"))
    version = event.get("version_id") if step in ("set_password", "resubscribe", "test_password") else None
    if step in ("set_password", "resubscribe", "test_password") and not version:
        raise ValueError(f"step {step} needs the rotation's version_id")
    passwords: dict[str, str] = {}
    roles: list[str] = []
    password = ""
    if step != "roles":  # phase A: only the app's role, on the primary; streaming copies it to the standby
        password = _replication_password(secrets_client, event["replication_secret"], sleep=sleep, version_id=version,
                                         create=bool(event.get("create_replication_secret")) and step == "local")
        box.add(password)
        passwords, roles = {me.user: password}, [me.user]
    if step in ("local", "roles"):
        for role, secret_id in sorted((event.get("role_secrets") or {}).items()):
            passwords[role] = _replication_password(secrets_client, secret_id, create=True, sleep=sleep, username=role)
            box.add(passwords[role])
            roles.append(role)
    # Subscriptions run inside RDS, where no CA file can be named: TLS with SCRAM channel binding
    # (the peer proves it holds the password verifier on this TLS session). Local drills: no TLS.
    no_tls = event.get("sslmode") == "disable"
    subscriptions = default_conninfo(sslmode=event.get("peer_sslmode") or ("disable" if no_tls else "require"),
                                     channel_binding=event.get("channel_binding") or (None if no_tls else "require"))
    if step == "test_password":
        with connect(me, me.user, password, "") as conn:  # the new password logs in
            conn.execute("SELECT 1")
        with connect(me, master["username"], master["password"], "") as conn:
            down = _wait_subscriptions(conn, sleep, float(event.get("wait_s", 60)))
        if down:
            raise RuntimeError(f"subscriptions not streaming after the password change: {', '.join(down)}")
        return {"ok": True, "node": me.name, "step": step, "statements": 0}
    # Verifiers for every role; the replication role's cleartext too, which the subscriptions need.
    with connect(me, master["username"], master["password"], secret_options(passwords, cleartext=[me.user])) as conn:
        if step == "local":
            # A mesh of one is the phase A primary becoming a writer: it keeps taking writes (a
            # transition lease on the first install only) until its fence agent takes over.
            lease = TRANSITION_LEASE_S if len(nodes) == 1 else None
            statements = (render_local_objects(me, nodes, policy, transition_lease_s=lease)
                          + render_roles(policy, roles, repl_role=me.user))
        elif step == "roles":
            statements = render_roles(policy, roles)
        elif step == "set_password":
            statements = render_login_role(me.user, replication=True)
        else:  # subscribe, resubscribe
            statements = render_subscriptions(me, nodes, subscriptions)
        count = apply(conn, statements)
    return {"ok": True, "node": me.name, "step": step, "statements": count}


def _wait_subscriptions(conn: Any, sleep: Callable[[float], None], wait_s: float) -> list[str]:
    """Subscriptions of this database without a running apply worker, after waiting up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        down = [r[0] for r in conn.execute(
            "SELECT s.subname FROM pg_catalog.pg_subscription s "
            "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid AND d.datname = current_database() "
            "LEFT JOIN pg_catalog.pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL "
            "  AND st.leader_pid IS NULL WHERE st.pid IS NULL OR NOT s.subenabled ORDER BY 1").fetchall()]
        if not down or time.monotonic() > deadline:
            return down
        sleep(0.5)


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point: one region's step against its own writer.

    Event: ``{"step", "node", "nodes": [...], "policy": {...}, "master_secret_arn",
    "replication_secret", "create_replication_secret", "role_secrets", "version_id"}``; fields
    missing from it come from ``FRAISEQL_BOOTSTRAP`` (the function's own, so the rotation function
    sends only a step and a version). Connections verify the writer's certificate against the RDS
    CA bundle shipped in the layer (``FRAISEQL_DB_SSLROOTCERT``). Errors leave redacted.
    """
    import os

    import boto3  # only in the Lambda runtime
    import psycopg

    box = SecretBox()
    merged = {**json.loads(os.environ.get("FRAISEQL_BOOTSTRAP") or "{}"), **event}
    sslmode = merged.get("sslmode") or os.environ.get("FRAISEQL_DB_SSLMODE", "verify-full")
    rootcert = os.environ.get("FRAISEQL_DB_SSLROOTCERT")

    def connect(node: Node, user: str, password: str, options: str) -> Any:
        kw: dict[str, Any] = {"sslrootcert": rootcert} if rootcert and sslmode.startswith("verify") else {}
        return psycopg.connect(host=node.host, port=node.port, dbname=node.dbname, user=user, password=password,
                               options=options or None, sslmode=sslmode, autocommit=True, connect_timeout=10, **kw)

    @guarded(box)
    def run() -> dict[str, Any]:
        return run_step(merged, connect, boto3.client("secretsmanager"), box=box)

    return run()
