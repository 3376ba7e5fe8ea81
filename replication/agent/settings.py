"""The fence agent's settings and the environment they travel in: the one definition both sides use.

The stack builds a ``Settings`` and writes ``to_env()`` into the agent's Lambda environment
(``components/quorum.py``); the agent reads it back with ``from_env`` (``replication.agent.entry``).
Standard library and ``replication.quorum`` only: this module ships in the Lambda and runs in the
Pulumi program alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from replication.quorum import timing_problems

__all__ = ["ENV_KEYS", "Settings"]

#: The environment variable each setting travels in (every field has one).
ENV_KEYS: Mapping[str, str] = MappingProxyType({
    "region": "FRAISEQL_REGION",
    "regions": "FRAISEQL_REGIONS",
    "probe_s": "FRAISEQL_PROBE_INTERVAL_SECONDS",
    "stale_after_s": "FRAISEQL_STALE_AFTER_SECONDS",
    "lease_s": "FRAISEQL_LEASE_SECONDS",
    "unfence_after": "FRAISEQL_UNFENCE_AFTER",
    "db_host": "FRAISEQL_DB_HOST",
    "db_port": "FRAISEQL_DB_PORT",
    "db_name": "FRAISEQL_DB_NAME",
    "db_sslmode": "FRAISEQL_DB_SSLMODE",
    "db_secret_arn": "FRAISEQL_DB_SECRET_ARN",
    "db_sslrootcert": "FRAISEQL_DB_SSLROOTCERT",
    "routing_control_arn": "FRAISEQL_ROUTING_CONTROL_ARN",
    "arc_endpoints": "FRAISEQL_ARC_ENDPOINTS",
    "fence_rule_arn": "FRAISEQL_FENCE_RULE_ARN",
    "health_path": "FRAISEQL_HEALTH_PATH",
    "metrics_every_s": "FRAISEQL_METRICS_EVERY_SECONDS",
    "handoff_wait_s": "FRAISEQL_HANDOFF_WAIT_SECONDS",
    "stop_margin_s": "FRAISEQL_STOP_MARGIN_SECONDS",
    "watermark_every_s": "FRAISEQL_WATERMARK_EVERY_SECONDS",
    "maintenance_every_s": "FRAISEQL_MAINTENANCE_EVERY_SECONDS",
    "verify_every_s": "FRAISEQL_VERIFY_EVERY_SECONDS",
    "verify_margin_s": "FRAISEQL_VERIFY_MARGIN_SECONDS",
    "verify_buckets": "FRAISEQL_VERIFY_BUCKETS",
    "verify_max_keys": "FRAISEQL_VERIFY_MAX_KEYS",
    "regions_next": "FRAISEQL_REGIONS_NEXT",
})


def _number(x: float) -> str:
    """A number as the environment carries it: whole numbers without a fraction ("5", not "5.0"),
    others exactly (``float`` reads back the same value)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Settings:
    """Everything the agent reads from its environment (the stack sets it; see components/quorum)."""

    region: str
    regions: tuple[str, ...]
    probe_s: float
    stale_after_s: float
    lease_s: float
    unfence_after: int
    db_host: str
    db_port: int
    db_name: str
    db_sslmode: str
    db_secret_arn: str
    #: The CA bundle a ``verify-*`` sslmode checks the writer against ('' : the client's default).
    db_sslrootcert: str = ""
    routing_control_arn: str = ""
    arc_endpoints: tuple[Mapping[str, str], ...] = ()
    fence_rule_arn: str = ""
    health_path: str = "/health"
    metrics_every_s: float = 10.0
    handoff_wait_s: float = 75.0
    stop_margin_s: float = 15.0
    watermark_every_s: float = 10.0
    maintenance_every_s: float = 60.0
    verify_every_s: float = 300.0
    verify_margin_s: float = 60.0
    verify_buckets: int = 256
    #: About how many keys a verify round may list into the control channel, which the heartbeats
    #: share (replication/README.md, verify); a bucket larger than this is never listed, so keep
    #: ``verify_buckets`` at least the largest table's rows over a quarter of it.
    verify_max_keys: int = 10_000
    #: During a membership change (joint consensus): the members after it.
    regions_next: tuple[str, ...] = ()

    @property
    def everyone(self) -> tuple[str, ...]:
        """Current and next members, in order: whom to hear from and relay about."""
        return self.regions + tuple(r for r in self.regions_next if r not in self.regions)

    @property
    def membership(self) -> str:
        """What the heartbeat says this agent runs, so a runbook can wait for every agent to adopt it."""
        return ",".join(self.regions) + ("|" + ",".join(self.regions_next) if self.regions_next else "")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        k = ENV_KEYS
        probe = float(env[k["probe_s"]])
        return cls(
            region=env[k["region"]],
            regions=tuple(env[k["regions"]].split(",")),
            probe_s=probe,
            stale_after_s=float(env.get(k["stale_after_s"]) or 3 * probe),
            lease_s=float(env.get(k["lease_s"]) or 3 * probe),
            unfence_after=int(env[k["unfence_after"]]),
            db_host=env[k["db_host"]],
            db_port=int(env[k["db_port"]]),
            db_name=env[k["db_name"]],
            db_sslmode=env.get(k["db_sslmode"], "require"),
            db_secret_arn=env[k["db_secret_arn"]],
            db_sslrootcert=env.get(k["db_sslrootcert"], ""),
            routing_control_arn=env.get(k["routing_control_arn"], ""),
            arc_endpoints=tuple(json.loads(env.get(k["arc_endpoints"]) or "[]")),
            fence_rule_arn=env.get(k["fence_rule_arn"], ""),
            health_path=env.get(k["health_path"], "/health"),
            metrics_every_s=float(env.get(k["metrics_every_s"]) or 10),
            handoff_wait_s=float(env.get(k["handoff_wait_s"]) or 75),
            stop_margin_s=float(env.get(k["stop_margin_s"]) or 15),
            watermark_every_s=float(env.get(k["watermark_every_s"]) or 10),
            maintenance_every_s=float(env.get(k["maintenance_every_s"]) or 60),
            verify_every_s=float(env.get(k["verify_every_s"]) or 300),
            verify_margin_s=float(env.get(k["verify_margin_s"]) or 60),
            verify_buckets=int(env.get(k["verify_buckets"]) or 256),
            verify_max_keys=int(env.get(k["verify_max_keys"]) or 10_000),
            regions_next=tuple(r for r in (env.get(k["regions_next"]) or "").split(",") if r),
        )

    def to_env(self) -> dict[str, str]:
        """The environment ``from_env`` reads these settings back from, every field stated (no
        ``FRAISEQL_REGIONS_NEXT`` outside a membership change: its absence is what says so)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "regions_next" and not value:
                continue
            if f.name == "arc_endpoints":
                text = json.dumps([dict(e) for e in value])
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, (int, float)):
                text = _number(value)
            else:
                text = value
            out[ENV_KEYS[f.name]] = text
        return out

    def __post_init__(self) -> None:
        # A region in neither list is not a member (a copy being seeded, or a writer that left): its
        # agent runs, reports and keeps it fenced ("not_member").
        problems = timing_problems(len(self.everyone), probe_s=self.probe_s, stale_after_s=self.stale_after_s,
                                   lease_s=self.lease_s)
        for name in ("verify_buckets", "verify_max_keys"):
            if getattr(self, name) < 1:
                problems.append(f"{ENV_KEYS[name]} must be at least 1 (got {getattr(self, name)})")
        if problems:
            raise ValueError("; ".join(problems))
