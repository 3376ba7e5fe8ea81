"""The entry points: the Lambda ``handler``, and ``main`` (``python -m replication.agent``), which
invokes it back to back as the scheduler would (drills)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from replication.agent.aws_side import AwsSide, _boto3_client
from replication.agent.loop import _log_stdout, acquire_loop, run_loop
from replication.agent.maintenance_side import MaintenanceSide
from replication.agent.settings import Settings
from replication.agent.verify_side import VerifySide
from replication.sql import AGENT_STATE_TABLE

__all__ = ["LocalContext", "handler", "main"]


def _connect(settings: Settings, user: str, password: str) -> Any:
    import psycopg

    # verify-full against the RDS CA bundle the layer ships: the writer proves it is the writer.
    rootcert = settings.db_sslrootcert
    tls: dict[str, Any] = {"sslrootcert": rootcert} if rootcert and settings.db_sslmode.startswith("verify") else {}
    conn = psycopg.connect(
        host=settings.db_host, port=settings.db_port, dbname=settings.db_name, user=user, password=password,
        sslmode=settings.db_sslmode, autocommit=True, connect_timeout=5, **tls,
        # A frozen or vanished agent must release the advisory lock quickly.
        keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
        application_name=f"fraiseql-agent-{settings.region}",
    )
    conn.execute("SET statement_timeout = '5s'; SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
                 "SET tcp_keepalives_count = 3")
    return conn


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry (also what ``main`` runs locally): hold the agent loop until near the deadline."""
    t_start = time.monotonic()
    settings = Settings.from_env(os.environ)
    remaining = lambda: context.get_remaining_time_in_millis() / 1000.0  # noqa: E731
    holder = getattr(context, "aws_request_id", "") or f"pid-{os.getpid()}"
    secret = json.loads(_boto3_client("secretsmanager", region_name=settings.region)
                        .get_secret_value(SecretId=settings.db_secret_arn)["SecretString"])
    conn = _connect(settings, secret["username"], secret["password"])
    try:
        skipped = acquire_loop(conn, settings)
        if skipped:
            return {"region": settings.region, "skipped": skipped}
        state = conn.execute(f"SELECT traffic_out FROM {AGENT_STATE_TABLE} WHERE singleton").fetchone()
        aws = AwsSide(settings, log=_log_stdout).start(traffic_out=bool(state and state[0]))
        connect = lambda: _connect(settings, secret["username"], secret["password"])  # noqa: E731
        sides = (VerifySide(settings, connect, aws, log=_log_stdout).start(),
                 MaintenanceSide(settings, connect, aws, log=_log_stdout).start())
        _log_stdout({"event": "setup", "region": settings.region, "seconds": round(time.monotonic() - t_start, 3)})
        try:
            last = run_loop(conn, settings, aws, remaining_s=remaining, holder=holder)
        finally:
            # Until this returns, the next invocation cannot take the loop: no heartbeat goes out.
            spent = {}
            for name, side in (("verify", sides[0]), ("maintenance", sides[1]), ("aws", aws)):
                t_stop = time.monotonic()
                side.stop()
                spent[name] = round(time.monotonic() - t_stop, 3)
            _log_stdout({"event": "teardown", "region": settings.region, "spent": spent})
        d = last.decision if last else None
        return {"region": settings.region, "fenced": not (last and last.writable), "reason": d.reason if d else None}
    finally:
        conn.close()  # also releases the advisory lock


@dataclass
class LocalContext:
    """What the Lambda runtime passes as ``context``, for local runs."""

    deadline: float
    aws_request_id: str = field(default_factory=lambda: f"local-{os.getpid()}-{time.monotonic_ns()}")

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.deadline - time.monotonic()) * 1000)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m replication.agent [--run-seconds N]``: invoke ``handler`` back to back, as the
    scheduler does, until interrupted. Configuration comes from the same environment as the Lambda."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m replication.agent", description=main.__doc__)
    parser.add_argument("--run-seconds", type=float, default=900.0, help="length of one invocation (Lambda timeout)")
    args = parser.parse_args(argv)
    while True:
        try:
            out = handler({}, LocalContext(deadline=time.monotonic() + args.run_seconds))
            _log_stdout({"event": "invocation_done", **out})
        except KeyboardInterrupt:
            return 0
        except Exception as exc:  # noqa: BLE001 - like a failed invocation: the next one starts over
            _log_stdout({"event": "invocation_failed", "error": f"{type(exc).__name__}: {exc}"[:300]})
            time.sleep(1.0)
