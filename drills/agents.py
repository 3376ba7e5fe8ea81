"""The real fence agent, one OS process per region, each with only its own writer.

Each process runs ``python -m replication.agent``: the Lambda ``handler`` invoked back to back as
the scheduler would, configured by the same environment variables the stack sets, with AWS served
by ``drills.localaws``. The nemesis kills (SIGKILL), stalls (SIGSTOP) and resumes (SIGCONT) them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drills.localaws import LocalAws
from drills.mesh import Mesh
from replication.agent import Settings
from replication.quorum import min_stale_after

__all__ = ["AgentProcess", "AgentTiming", "agents"]

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class AgentTiming:
    probe_s: float = 0.5
    stale_after_s: float = 1.5
    lease_s: float = 1.5
    unfence_after: int = 3
    invocation_s: float = 20.0  # one "Lambda invocation"; the next starts right after

    def for_voters(self, n: int) -> "AgentTiming":
        """This timing with the staleness ``n`` voting regions need (``replication.quorum.timing_problems``):
        a relayed report must stay fresh over ``n - 1`` relays."""
        return replace(self, stale_after_s=max(self.stale_after_s, min_stale_after(n, self.probe_s)))

    def settings(self, region: str, regions: tuple[str, ...], **where: Any) -> Settings:
        """One region's agent settings at this timing (``where``: the database and AWS fields)."""
        return Settings(
            region=region, regions=regions, probe_s=self.probe_s, stale_after_s=self.stale_after_s,
            lease_s=self.lease_s, unfence_after=self.unfence_after, handoff_wait_s=self.invocation_s,
            metrics_every_s=1, stop_margin_s=1, watermark_every_s=1, maintenance_every_s=5,
            # A tenth of the defaults, like the probe (6 s hashed every table every few probes: the
            # drill's own load, not the system's).
            verify_every_s=30, verify_margin_s=2, verify_buckets=64, verify_max_keys=1000, **where)


class AgentProcess:
    """One region's agent process and its JSON-lines log."""

    def __init__(self, region: str, env: Mapping[str, str], log_path: Path, invocation_s: float) -> None:
        self.region = region
        self.env = dict(env)
        self.log_path = log_path
        self.invocation_s = invocation_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.stalled = False
        #: the file a drill writes to make this agent pause (``replication.failpoints``)
        self.failpoints: Path | None = Path(env["FRAISEQL_FAILPOINTS_FILE"]) if env.get("FRAISEQL_FAILPOINTS_FILE") else None

    def start(self) -> "AgentProcess":
        if self.alive:
            return self
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "replication.agent", "--run-seconds", str(self.invocation_s)],
                cwd=str(REPO), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        self.stalled = False
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Like a crash: no goodbye, the connection drops, the lease is left to run out."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)
        self.stalled = False

    def stall(self) -> None:
        """Like a frozen Lambda or a GC pause: alive, connected, silent."""
        if self.alive and self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            self.stalled = True

    def resume(self) -> None:
        if self.alive and self.proc is not None and self.stalled:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.stalled = False

    def records(self) -> list[dict[str, Any]]:
        out = []
        try:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        out.append(json.loads(line))
        except OSError:
            pass
        return out


def agent_env(region: str, regions: list[str], port: int, aws: LocalAws, timing: AgentTiming, *,
              next_regions: tuple[str, ...] = (), dbname: str = "postgres") -> dict[str, str]:
    """The environment the stack gives one region's agent, pointing at loopback servers and AWS."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FRAISEQL_"))}
    base.update(aws.env())
    res = aws.regions[region]
    settings = timing.for_voters(len(set(regions) | set(next_regions))).settings(
        region, tuple(regions), regions_next=tuple(next_regions), db_host="127.0.0.1", db_port=port, db_name=dbname,
        db_sslmode="disable", db_secret_arn=res.db_secret_arn, routing_control_arn=res.routing_control_arn,
        arc_endpoints=tuple(aws.arc_endpoints()), fence_rule_arn=res.fence_rule_arn, health_path="/health")
    env = {**base, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "AWS_DEFAULT_REGION": region, **settings.to_env()}
    return env


@contextlib.contextmanager
def agents(m: Mesh, aws: LocalAws, timing: AgentTiming, log_dir: Path) -> Iterator[dict[str, AgentProcess]]:
    """One agent process per region of ``m``; all killed on exit."""
    regions = list(m.nodes)
    procs: dict[str, AgentProcess] = {}
    try:
        for r in regions:
            env = agent_env(r, regions, m.pg[r].port, aws, timing, dbname=m.pg[r].dbname)
            env["FRAISEQL_FAILPOINTS_FILE"] = str(log_dir / f"failpoints-{r}.json")
            procs[r] = AgentProcess(r, env, log_dir / f"agent-{r}.log", timing.invocation_s).start()
        yield procs
    finally:
        for p in procs.values():
            with contextlib.suppress(Exception):
                p.resume()
                p.kill()


def wait_writable(m: Mesh, regions: list[str], timeout: float = 30.0) -> float:
    """Until every region in ``regions`` holds a valid lease; seconds waited (raises on timeout)."""
    t0 = time.monotonic()
    while True:
        ok = all(
            m.execute(r, "SELECT clock_timestamp() + interval '100 ms' < valid_until FROM fraiseql_repl.lease")[0][0]
            for r in regions
        )
        if ok:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            states = {r: m.execute(r, "SELECT valid_until::text, reason FROM fraiseql_repl.lease")[0] for r in regions}
            raise TimeoutError(f"regions not writable after {timeout}s: {states}")
        time.sleep(0.1)
