"""Stack configuration: the one place where input is validated.

Every key lives in the `fraiseql:` namespace of a `Pulumi.<stack>.yaml`. `load_config` turns the raw
values into a `StackConfig` or raises `ConfigError` with one message listing each bad key, what is
wrong and what would be valid. The program calls it before registering any resource, so bad config
never produces a half-built stack. Components downstream assume a valid `StackConfig`.

Each field is checked by its model (pydantic, messages by `core.problems`). A rule that spans keys
lives beside the model whose keys it reads, as that model's `cross_checks` (the region list's, beside
`RegionConfig`); `StackConfig.cross_checks` runs them all.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.agent_schedule import MAX_CONCURRENT as AGENT_MAX_CONCURRENT
from core.engine import POSTGRES_MAJOR
from core.manifest import build_manifest
from core.membership import list_problem
from core.naming import RESERVED_TAGS
from core.planning import MAX_AZS, MAX_VPC_PREFIX, MIN_VPC_PREFIX, overlapping_pairs
from core.problems import Problem, pydantic_problems
from core.regions import REGIONS
from core.slo import TARGET_KEYS, describe_ceiling, lag_alarm_ceiling, manifest_bounds
from replication.quorum import min_stale_after, timing_problems

NAMESPACE = "fraiseql"
#: Every key a problem names starts with the namespace.
_K = f"{NAMESPACE}:"

# Fargate accepts only these CPU units, each with its own memory range (MiB) and step.
FARGATE_MEMORY: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}
_INSTANCE_CLASS = re.compile(r"^db\.[a-z0-9]+\.[a-z0-9]+$")
_ENGINE_VERSION = re.compile(r"^(\d+)(\.\d+)*$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Ranges AWS accepts for a VPC's primary CIDR here: the RFC 1918 private blocks.
VPC_RANGES = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _check_emails(addresses: list[str]) -> list[str]:
    bad = [e for e in addresses if not _EMAIL.match(e)]
    if bad:
        raise ValueError(f"not e-mail addresses: {bad}")
    return addresses


class ConfigError(ValueError):
    """Invalid stack configuration. `problems` holds (key, message) pairs."""

    def __init__(self, stack: str, problems: list[tuple[str, str]]):
        self.stack = stack
        self.problems = problems
        lines = [f"invalid stack config for '{stack}' ({len(problems)} problem(s)):"]
        lines += [f"  {key}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Writers hand out identity values congruent to their index modulo this (replication.model.ConflictPolicy).
SEQUENCE_STRIDE = 16


class RegionConfig(_Model):
    """One region of the stack (`fraiseql:regions`, a list). Each known AWS region once; private
    VPC CIDRs (10/8, 172.16/12, 192.168/16) of /16 to /23 that do not overlap. Phase a: exactly one
    `primary` and one `standby`; phases b/c: at least 3, all `active`."""

    name: str = Field(examples=["us-east-1"])
    role: Literal["primary", "standby", "active"] = Field(examples=["primary"])
    cidr: str = Field(examples=["10.10.0.0/16"])
    seed_from: Optional[str] = Field(
        None, examples=["us-east-1"],
        description="phases b/c: this region joins as a cross-region read replica of that region's writer; "
                    "remove it once the runbook has promoted the replica",
    )
    index: Optional[int] = Field(
        None, ge=1, le=SEQUENCE_STRIDE, examples=[3],
        description="phases b/c: the writer's identity index, fixed for its life; default its position in the list "
                    "(pin it before removing or reordering a region)",
    )

    @field_validator("name")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in REGIONS:
            raise ValueError(f"unknown AWS region '{v}'; use one of: {', '.join(sorted(REGIONS))}")
        return v

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as e:
            raise ValueError(
                f"'{v}' is not a valid IPv4 network ({e}); write it like 10.10.0.0/16"
            ) from None
        if not any(net.subnet_of(r) for r in VPC_RANGES):
            raise ValueError(
                f"{v} is not a private range that AWS accepts for a VPC (10.0.0.0/8, 172.16.0.0/12, "
                "192.168.0.0/16); use e.g. 10.10.0.0/16"
            )
        if not MIN_VPC_PREFIX <= net.prefixlen <= MAX_VPC_PREFIX:
            raise ValueError(
                f"{v} has prefix /{net.prefixlen}; a VPC needs /{MIN_VPC_PREFIX} to /{MAX_VPC_PREFIX}"
            )
        return v


    def seeding_checks(self, cfg: StackConfig, i: int) -> list[Problem]:
        """`seed_from` and `index` belong to phases b and c; there `seed_from` names an active writer of
        the stack that is not itself seeding."""
        problems: list[Problem] = []
        if cfg.phase == "a":
            for key in ("seed_from", "index"):
                if getattr(self, key) is not None:
                    problems.append((f"{_K}regions[{i}].{key}", "belongs to phases b and c (multi-master writers); phase a's standby "
                                     "is already a replica of the primary: remove it, or set e.g. phase: b"))
            return problems
        src = self.seed_from
        if src is None:
            return problems
        key = f"{_K}regions[{i}].seed_from"
        writers = cfg.writers
        # A writer it may copy: never itself, never a region that is itself seeding.
        example = next((w for w in writers if w != self.name and cfg.region(w).role == "active"), None)
        fix = f"e.g. seed_from: {example}" if example else "first make one region a writer (no seed_from)"
        if src == self.name:
            problems.append((key, f"{self.name} cannot seed from itself; name the writer to copy, {fix}"))
        elif src not in cfg.region_names:
            problems.append((key, f"'{src}' is not a region of this stack; name the writer to copy, one of {writers}, {fix}"))
        elif cfg.region(src).role != "active":
            problems.append((key, f"{src} is not an active region; seed from an active writer, {fix}"))
        elif cfg.region(src).seed_from is not None:
            problems.append((key, f"{src} is itself seeding (seed_from: {cfg.region(src).seed_from}); a copy must come from "
                             f"a writer, {fix}"))
        return problems


def _regions_checks(cfg: StackConfig) -> list[Problem]:
    """The region list: each region once, disjoint CIDRs, and the roles and count the phase needs."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(cfg.region_names):
        if name in seen:
            problems.append(
                (f"{_K}regions[{i}].name", f"region {name} is listed twice (also regions[{seen[name]}]); list each region once, e.g. name: us-west-2")
            )
        seen.setdefault(name, i)
    for a, b in overlapping_pairs((r.name, r.cidr) for r in cfg.regions):
        ca, cb = cfg.region(a).cidr, cfg.region(b).cidr
        problems.append(
            (f"{_K}regions", f"CIDR {cb} of {b} overlaps {ca} of {a}; give every region a disjoint block, e.g. 10.10.0.0/16, 10.20.0.0/16")
        )
    roles = [r.role for r in cfg.regions]
    if cfg.phase == "a":
        if roles.count("primary") != 1:
            problems.append(
                (f"{_K}regions", f"phase a needs exactly one region with role: primary, found {roles.count('primary')}; e.g. role: primary on the first region")
            )
        if "active" in roles:
            problems.append((f"{_K}regions", "role 'active' belongs to phases b and c; phase a uses primary and standby, e.g. role: standby"))
        if roles.count("standby") != 1:
            problems.append(
                (f"{_K}regions", f"phase a needs exactly one region with role: standby (Route 53 failover has one SECONDARY), found {roles.count('standby')}; e.g. role: standby on the second region")
            )
        return problems
    if set(roles) != {"active"}:
        problems.append(
            (f"{_K}regions", f"phase {cfg.phase} is active-active: every region needs role: active (found {sorted(set(roles))}); e.g. role: active")
        )
    if len(cfg.regions) < 3:
        problems.append(
            (f"{_K}regions", f"phase {cfg.phase} needs at least 3 regions for a majority quorum; found {len(cfg.regions)}; e.g. us-east-1, us-west-2, eu-west-1")
        )
    return problems


def _writer_index_checks(cfg: StackConfig) -> list[Problem]:
    """Phases b/c: each writer's identity index is its own (the list position unless pinned)."""
    problems: list[Problem] = []
    seen: dict[int, str] = {}
    for i, rc in enumerate(cfg.regions):
        index = cfg.writer_index(rc.name)
        if index in seen:
            used = {cfg.writer_index(n) for n in cfg.region_names}
            free = next((x for x in range(1, SEQUENCE_STRIDE + 1) if x not in used), SEQUENCE_STRIDE)
            problems.append((f"{_K}regions[{i}].index", f"{rc.name} would have index {index}, which {seen[index]} already has "
                             f"(an index is the list position unless pinned); give each writer its own from 1 to "
                             f"{SEQUENCE_STRIDE}, e.g. index: {free}"))
        seen.setdefault(index, rc.name)
    return problems


class NetworkConfig(_Model):
    """Each region's VPC and the network between regions. `az_count` at most the AZs of every region
    (`core/regions.py`); `hub_region` is required for hub-and-spoke, and only then."""

    az_count: int = Field(2, ge=2, le=MAX_AZS, description="AZs per region (>=2 for ALB and Multi-AZ)")
    nat: Literal["single", "per_az"] = Field(
        "single", description="one NAT gateway per region (cheaper) or one per AZ (AZ-independent)"
    )
    topology: Literal["none", "mesh", "hub-and-spoke"] = Field(
        "none", description="inter-region network; none relies on RDS's own cross-region transport"
    )
    hub_region: Optional[str] = Field(None, examples=["us-east-1"], description="hub of hub-and-spoke (required there)")


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Phases b/c replicate over a topology; hub-and-spoke names its hub among the regions, and only
        it does; every region has the AZs asked for."""
        problems: list[Problem] = []
        names = cfg.region_names
        if cfg.phase != "a" and self.topology == "none":
            problems.append((f"{_K}network.topology", f"phase {cfg.phase} replicates over the private network: set mesh or hub-and-spoke, e.g. topology: mesh"))
        if self.topology == "hub-and-spoke" and self.hub_region is None:
            problems.append((f"{_K}network.hub_region", f"hub-and-spoke needs its hub named; add e.g. hub_region: {names[0]} (one of {names})"))
        for i, rc in enumerate(cfg.regions):
            have = REGIONS[rc.name].az_count
            if self.az_count > have:
                problems.append(
                    (f"{_K}network.az_count", f"{self.az_count} AZs requested but {rc.name} (regions[{i}]) has {have}; "
                     f"use e.g. az_count: {min(have, 3)}")
                )
        if self.hub_region is not None and self.hub_region not in names:
            problems.append((f"{_K}network.hub_region", f"'{self.hub_region}' is not one of the regions; use one of {names}"))
        if self.hub_region is not None and self.topology != "hub-and-spoke":
            problems.append((f"{_K}network.hub_region", "only meaningful with topology: hub-and-spoke; remove it or set e.g. topology: hub-and-spoke"))
        return problems


class AppConfig(_Model):
    """The FraiseQL service on Fargate in each region: a Fargate CPU size with a memory it allows,
    `max_count` at least `desired_count`, at least 1."""

    image: str = Field(min_length=1, examples=["ghcr.io/fraiseql/fraiseql:1.0.0"])
    cpu: int = Field(examples=[1024], description="Fargate CPU units")
    memory: int = Field(examples=[2048], description="Fargate memory in MiB")
    desired_count: int = Field(ge=1, examples=[2])
    max_count: int = Field(ge=1, examples=[6])
    port: int = Field(8000, ge=1, le=65535)
    health_path: str = Field(
        "/health",
        examples=["/health"],
        description="must answer 200 only when the app can reach its database",
    )
    cpu_target_percent: int = Field(60, ge=10, le=90)
    arch: Literal["x86_64", "arm64"] = "x86_64"
    log_retention_days: int = Field(30, ge=1)

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: int) -> int:
        if v not in FARGATE_MEMORY:
            raise ValueError(f"{v} is not a Fargate CPU size; use one of {sorted(FARGATE_MEMORY)}")
        return v

    @field_validator("health_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"'{v}' must be an absolute path such as /health")
        return v


    def cross_checks(self) -> list[Problem]:
        """A memory the CPU size allows; room to scale to at least the desired count."""
        problems: list[Problem] = []
        lo, hi, step = FARGATE_MEMORY[self.cpu]
        if not (lo <= self.memory <= hi and (self.memory - lo) % step == 0):
            problems.append(
                (f"{_K}app.memory", f"{self.memory} MiB is not valid with cpu {self.cpu}; use {lo} to {hi} in steps of {step}, e.g. memory: {lo}")
            )
        if self.max_count < self.desired_count:
            problems.append(
                (f"{_K}app.max_count", f"{self.max_count} is below desired_count {self.desired_count}; raise it to at least that, e.g. max_count: {self.desired_count}")
            )
        return problems


class AdoptConfig(_Model):
    """Phase a only, while the database a team runs today moves into the stack (`python -m ops adopt`): the
    new primary subscribes to it over a VPC peering. Remove the block after the cutover."""

    source_vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$", examples=["vpc-0123456789abcdef0"],
                               description="the VPC of the existing database, in the primary's region and account")
    source_cidr: str = Field(examples=["172.31.0.0/16"], description="that VPC's CIDR: the new primary's route to it")
    source_port: int = Field(5432, ge=1, le=65535, description="the existing database's port")

    @field_validator("source_cidr")
    @classmethod
    def _private(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"'{v}' is not a valid IPv4 network ({e}); write it like 172.31.0.0/16") from None
        if not any(net.subnet_of(r) for r in VPC_RANGES):
            raise ValueError(f"{v} is not a private VPC range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16); "
                             "give the existing database's VPC CIDR, e.g. source_cidr: 172.31.0.0/16")
        return v


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Adoption ends in phase a; the stack's VPCs cannot share addresses with the peered one."""
        if cfg.phase != "a":
            return [(f"{_K}database.adopt", "adoption ends in phase a: run `python -m ops adopt cutover`, remove "
                     "database.adopt and `pulumi up` (examples/2-phase-a.yaml) before moving to phase b")]
        problems: list[Problem] = []
        source = ipaddress.IPv4Network(self.source_cidr)
        taken = [source, *(ipaddress.IPv4Network(rc.cidr) for rc in cfg.regions)]
        free = next((c for c in (ipaddress.IPv4Network(f"10.{x}.0.0/16") for x in range(10, 256, 10))
                     if not any(c.overlaps(t) for t in taken)), None)
        for i, rc in enumerate(cfg.regions):
            if source.overlaps(ipaddress.IPv4Network(rc.cidr)):
                problems.append((f"{_K}regions[{i}].cidr", f"{rc.cidr} overlaps database.adopt.source_cidr {self.source_cidr}, "
                                 "the existing database's VPC: peered VPCs cannot share addresses; give the stack's VPC "
                                 f"another range, e.g. cidr: {free}"))
        return problems


class DatabaseConfig(_Model):
    """RDS PostgreSQL. `engine_version` is a major only, and only the one the test suite runs
    (`core/engine.py`): AWS retires old minors, and automatic minor upgrades would turn a pinned minor
    into a planned downgrade. What `pulumi up` and `destroy` do to the data tier:
    docs/architecture.md, "Database changes and deletion"."""

    engine_version: str = Field(
        examples=[str(POSTGRES_MAJOR)],
        description="the PostgreSQL major only (core/engine.py: the one the test suite runs); RDS picks the minor",
    )
    instance_class: str = Field(examples=["db.r6g.large"])
    standby_instance_class: Optional[str] = Field(
        None, description="phase a replica size; defaults to instance_class (keep it warm enough to take over)"
    )
    standby_multi_az: bool = False
    allocated_storage_gb: int = Field(ge=20, le=65536, examples=[100])
    max_allocated_storage_gb: Optional[int] = Field(None, description="storage autoscaling ceiling")
    storage_type: Literal["gp3", "io1", "io2"] = "gp3"
    multi_az: bool = True
    apply_immediately: bool = Field(
        True, description="class, storage and Multi-AZ changes apply at `pulumi up`, not in the next maintenance window",
    )
    backup_retention_days: int = Field(7, ge=7, le=35)
    port: int = Field(5432, ge=1150, le=65535)
    db_name: str = Field("fraiseql", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    username: str = Field("fraiseql_admin", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    performance_insights_retention_days: int = Field(7, ge=7)
    adopt: Optional[AdoptConfig] = Field(
        None, description="phase a, while an existing database moves in by replication (`python -m ops adopt`); "
                          "remove it after the cutover",
    )

    @field_validator("engine_version", mode="before")
    @classmethod
    def _major_as_text(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)  # `engine_version: 18` unquoted is the same major
        if isinstance(v, float):
            return repr(v)  # YAML read an unquoted 18.1 as a number: it is still a minor, refused below
        return v

    @field_validator("engine_version")
    @classmethod
    def _version(cls, v: str) -> str:
        m = _ENGINE_VERSION.match(v)
        if not m:
            raise ValueError(f"'{v}' is not a PostgreSQL version; give the major only, e.g. engine_version: \"{POSTGRES_MAJOR}\"")
        if "." in v:
            raise ValueError(
                f"'{v}' pins a minor version; give the major only, e.g. engine_version: \"{v.split('.')[0]}\": AWS retires "
                "old minors (a pinned one can stop being creatable), and auto minor upgrades move the instance past the "
                "pin, after which it would plan a downgrade"
            )
        if int(v) != POSTGRES_MAJOR:
            raise ValueError(
                f"PostgreSQL {v} is not the major the test suite runs (PostgreSQL {POSTGRES_MAJOR}, core/engine.py): the "
                f"replication SQL and the fence agent are tested on that one only; e.g. engine_version: \"{POSTGRES_MAJOR}\""
            )
        return v

    @field_validator("instance_class", "standby_instance_class")
    @classmethod
    def _class(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _INSTANCE_CLASS.match(v):
            raise ValueError(f"'{v}' is not an RDS instance class; write it like db.r6g.large")
        return v

    @property
    def major_version(self) -> int:
        return int(self.engine_version)


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Storage autoscaling ends above the allocated storage; the adoption block's own rules."""
        problems: list[Problem] = []
        if self.max_allocated_storage_gb is not None and self.max_allocated_storage_gb < self.allocated_storage_gb:
            problems.append(
                (f"{_K}database.max_allocated_storage_gb", f"{self.max_allocated_storage_gb} is below allocated_storage_gb {self.allocated_storage_gb}; e.g. max_allocated_storage_gb: {2 * self.allocated_storage_gb}")
            )
        if self.adopt is not None:
            problems += self.adopt.cross_checks(cfg)
        return problems


class DnsConfig(_Model):
    """Route 53: the zone, the API's name and the health checks. The names lie inside `zone_name`
    when it is given. Phase c: `zone_name` is required, a subzone of `edge.zone_name` that holds
    `record_name` but not `edge.hostname`, and `https` stays true (docs/architecture.md, "DNS authority")."""

    zone_id: str = Field(pattern=r"^Z[A-Z0-9]{4,32}$", examples=["Z0123456789ABCDEFGHIJ"])
    zone_name: Optional[str] = Field(
        None, examples=["origin.api.example.com"],
        description="the name of the zone `zone_id` holds; phase c: a subzone delegated from the Cloudflare zone",
    )
    record_name: str = Field(examples=["api.example.com"], description="public API hostname (phase c: the origin hostname)")
    read_record_name: Optional[str] = Field(
        None, description="hostname for reads from the standby; defaults to read.<record_name>"
    )
    ttl: int = Field(60, ge=5, le=86400)
    https: bool = Field(True, description="ACM certificate + HTTPS listener (validated in the zone)")
    health_check_interval: Literal[10, 30] = 10
    failure_threshold: int = Field(3, ge=1, le=10)

    @field_validator("zone_name", "record_name", "read_record_name")
    @classmethod
    def _host(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _HOSTNAME.match(v):
            raise ValueError(f"'{v}' is not a lower-case DNS hostname like api.example.com")
        return v

    @property
    def reads_hostname(self) -> str:
        return self.read_record_name or f"read.{self.record_name}"


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Without the edge, the names lie inside `zone_name` when it is given (phase c: `EdgeConfig`)."""
        problems: list[Problem] = []
        if self.zone_name is not None and cfg.edge is None:
            for key, name in (("record_name", self.record_name), ("read_record_name", self.reads_hostname)):
                if not within(name, self.zone_name):
                    problems.append((f"{_K}dns.{key}", f"{name} is not in the zone {self.zone_name} (dns.zone_name); "
                                     f"name a host of that zone, e.g. {key}: api.{self.zone_name}"))
        return problems


def within(name: str, zone: str) -> bool:
    """`name` is `zone` itself or a name inside it."""
    return name == zone or name.endswith("." + zone)


class SloConfig(_Model):
    """The targets the stack declares. All above 0; the lag alarm at most min(30 s, RPO/2); no target
    below what the topology can reach (the SLO floors of `core/slo.py`, which `plan` prints)."""

    rto_seconds: float = Field(gt=0, examples=[300])
    rpo_seconds: float = Field(gt=0, examples=[60])
    latency_p95_ms: float = Field(gt=0, examples=[50])
    lag_alarm_seconds: float = Field(
        gt=0, examples=[30], description="replication-lag alarm threshold; default and ceiling min(30 s, RPO/2)"
    )
    replication_lag_ms: Optional[float] = Field(
        None, gt=0, description="replication lag expected between the farthest write regions (measured or claimed)"
    )
    availability_percent: Optional[float] = Field(None, gt=0, lt=100, examples=[99.99])

    @model_validator(mode="before")
    @classmethod
    def _default_lag_alarm(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lag_alarm_seconds" not in data:
            rpo = data.get("rpo_seconds")
            if isinstance(rpo, (int, float)) and not isinstance(rpo, bool) and rpo > 0:
                return {**data, "lag_alarm_seconds": lag_alarm_ceiling(rpo)}
        return data


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Every lag alarm fires while there is still time to act: at most min(30 s, RPO/2)."""
        problems: list[Problem] = []
        ceiling = lag_alarm_ceiling(self.rpo_seconds)
        alarms = [("slo.lag_alarm_seconds", self.lag_alarm_seconds)]
        if cfg.replication is not None and cfg.replication.lag_alarm_seconds is not None:
            alarms.append(("replication.lag_alarm_seconds", cfg.replication.lag_alarm_seconds))
        for key, value in alarms:
            if value > ceiling:
                problems.append(
                    (f"{_K}{key}", f"{value:g} s is above the ceiling {describe_ceiling(self.rpo_seconds)}: the alarm must fire "
                     f"while there is still time to act; set e.g. {key.split('.')[-1]}: {ceiling:g}")
                )
        return problems

    @staticmethod
    def feasibility_checks(cfg: StackConfig) -> list[Problem]:
        """No target below what the topology can reach (the SLO floors of `core/slo.py`)."""
        problems: list[Problem] = []
        for bound in manifest_bounds(build_manifest(cfg, "check")):
            if not bound.feasible:
                key = TARGET_KEYS[bound.name]
                problems.append(
                    (f"{_K}{key}", f"{bound.target:g} {bound.unit} is below what this topology can reach: {bound.floor:.3g} "
                     f"{bound.unit} = {bound.arithmetic}; set e.g. {key.split('.')[-1]}: {_round_up(bound.floor)}")
                )
        return problems


def _round_up(x: float) -> str:
    """A tidy value at or above x, for examples in messages."""
    for step in (0.01, 0.1, 1, 5, 10, 30, 60, 300):
        if x <= step * 20:
            return f"{(int(x / step) + 1) * step:g}"
    return f"{int(x) + 1}"


class BudgetConfig(_Model):
    """The monthly budget: an AWS Budgets alert and the ceiling of the policy pack's estimate. When
    `line_items` are given they add up to `monthly_usd`."""

    monthly_usd: float = Field(gt=0, examples=[3450])
    alert_emails: list[str] = Field(min_length=1, examples=[["platform@example.com"]])
    advisory_fraction: float = Field(0.9, gt=0, le=1)
    line_items: dict[str, float] = Field(
        default_factory=dict, description="optional breakdown; when given it must add up to monthly_usd"
    )

    _emails = field_validator("alert_emails")(classmethod(lambda cls, v: _check_emails(v)))


    def cross_checks(self) -> list[Problem]:
        """Line items, when given, add up to the total."""
        items = self.line_items
        if not items or abs(sum(items.values()) - self.monthly_usd) <= 0.005:
            return []
        total = sum(items.values())
        return [(f"{_K}budget.line_items", f"the line items add up to ${total:,.2f}, not monthly_usd ${self.monthly_usd:,.2f} "
                 f"(off by ${self.monthly_usd - total:,.2f}); fix the items or the total, e.g. monthly_usd: {total:.2f}")]


class UsageConfig(_Model):
    """What the resources cannot tell the cost model: traffic and request volumes, per month."""

    inter_region_gb_month: float = Field(0, ge=0, description="GB each region sends to each other region")
    nat_gb_month: float = Field(0, ge=0, description="GB through the NAT gateways of each region")
    alb_lcu: float = Field(1, ge=0, description="average load balancer capacity units per ALB")
    log_gb_month: float = Field(0, ge=0, description="CloudWatch Logs ingested per region")
    edge_requests_million_month: float = Field(0, ge=0, description="requests served by the Cloudflare edge")


_TABLE = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$"


class TableConflictConfig(_Model):
    """One table's conflict strategy (docs/architecture.md, "Conflict policy"). Each table once;
    a counter names its counter columns."""

    table: str = Field(pattern=_TABLE, examples=["tb_post_stats"])
    strategy: Literal["lww", "counter", "set", "app"] = Field(examples=["counter"])
    columns: list[str] = Field(default_factory=list, description="counter columns (strategy counter)")


class ReplicationConfig(_Model):
    """Multi-master conflict policy (phases b and c only), rendered into SQL by the `replication`
    package."""

    default: Literal["lww"] = "lww"
    tables: list[TableConflictConfig] = Field(default_factory=list, description="tables with their own strategy")
    replicated: list[str] = Field(default_factory=list, description="further tables that use the default")
    lag_alarm_seconds: Optional[float] = Field(
        None, gt=0, examples=[0.5], description="per-pair lag alarm; default slo.lag_alarm_seconds, at most min(30 s, RPO/2)"
    )
    verify_buckets: int = Field(
        256, ge=16, le=65536, description="key buckets the agents' verify rounds compare per table; at least four "
                                          "times the largest table's rows over verify_max_keys, or its buckets are never listed")
    verify_max_keys: int = Field(
        10_000, ge=100, le=1_000_000, description="the most keys one verify round lists into the channel the "
                                                  "heartbeats share (replication/README.md, verify)")


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Phases b and c only; a counter names its columns; each table has one strategy."""
        if cfg.phase == "a":
            return [(f"{_K}replication", "multi-master replication belongs to phases b and c; phase a streams to a read replica: remove it, or set e.g. phase: b")]
        problems: list[Problem] = []
        for i, t in enumerate(self.tables):
            if t.strategy == "counter" and not t.columns:
                problems.append((f"{_K}replication.tables[{i}].columns", f"counter table {t.table} needs its counter columns, e.g. columns: [view_count]"))
        tables = [t.table for t in self.tables] + self.replicated
        for name in sorted({t for t in tables if tables.count(t) > 1}):
            problems.append((f"{_K}replication", f"table {name} is listed twice; give each table one strategy, e.g. {{table: {name}, strategy: lww}}"))
        return problems


class QuorumConfig(_Model):
    """How an isolated region stops taking writes (phases b and c). `members` odd and at least 3;
    either list even (at least 3) only while `next_members` is set; one member only at the start of
    A -> B, while every other region seeds from it. `stale_after_seconds` at least (voting regions) x
    probe and `lease_seconds` more than a probe + 0.5 s (`replication.quorum.timing_problems`)."""

    probe_interval_seconds: float = Field(5, ge=1, le=30, description="how often each region probes its peers")
    stale_after_seconds: Optional[float] = Field(
        None, gt=0, description="a peer whose heartbeat is older than this counts as silent; default one probe per "
                                "voting region, at least 3 (relayed reports must stay fresh)")
    lease_seconds: Optional[float] = Field(
        None, gt=0, description="how long a writer keeps writing after the observation its agent last renewed on; "
                                "default 3 probes")
    unfence_after: int = Field(3, ge=1, le=20, description="consecutive healthy probes before writes resume")
    safety_rule_wait_ms: int = Field(5000, ge=0, description="ARC safety rule wait period")
    members: Optional[list[str]] = Field(
        None, min_length=1, examples=[["us-east-1", "us-west-2", "eu-west-1"]],
        description="regions whose fence agents vote; default every region without seed_from",
    )
    next_members: Optional[list[str]] = Field(
        None, description="only during a membership change: writes need a majority of members and of next_members",
    )

    agent_reserved_concurrency: Optional[int] = Field(
        None, examples=[AGENT_MAX_CONCURRENT],
        description="Lambda concurrency reserved for each region's fence agent; default none (works on accounts "
                    "whose concurrency quota is 10, where any reservation is refused)",
    )

    @field_validator("agent_reserved_concurrency")
    @classmethod
    def _reservation(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v < AGENT_MAX_CONCURRENT:
            raise ValueError(
                f"{v} would throttle the hand-over: the running agent and the invocations waiting to take over "
                f"from it need {AGENT_MAX_CONCURRENT} (core/agent_schedule.py); reserve at least that, e.g. "
                f"agent_reserved_concurrency: {AGENT_MAX_CONCURRENT}, or leave it out. A reservation must leave the "
                "account 100 unreserved in each region (10 on accounts whose quota is 10): `python -m ops preflight` checks it"
            )
        return v

    def stale_after(self, voters: int) -> float:
        """``stale_after_seconds``, or its default for ``voters`` voting regions."""
        p = self.probe_interval_seconds
        return self.stale_after_seconds or max(3 * p, min_stale_after(voters, p))

    @property
    def lease(self) -> float:
        return self.lease_seconds or 3 * self.probe_interval_seconds


    def cross_checks(self, cfg: StackConfig, *, writers_known: bool) -> list[Problem]:
        """Phases b and c only. Each list names regions of the stack, each once; then (when they and the
        writers they default to are valid: `writers_known`) the timing holds for the voters, `members`
        can decide, and `next_members`, if set, is a change it can make."""
        if cfg.phase == "a":
            return [(f"{_K}quorum.{key}", "belongs to phases b and c (the write quorum); phase a has one writer: remove it")
                    for key in ("members", "next_members") if getattr(self, key) is not None]
        problems: list[Problem] = []
        for key, given in (("members", self.members), ("next_members", self.next_members)):
            if given is None:
                continue
            unknown = [r for r in given if r not in cfg.region_names]
            twice = sorted({r for r in given if given.count(r) > 1})
            if not given:
                problems.append((f"{_K}quorum.{key}", f"is empty; {_list_fix(cfg, key)}"))
            if unknown:
                problems.append((f"{_K}quorum.{key}", f"{unknown} are not regions of this stack; {_list_fix(cfg, key)}"))
            if twice:
                problems.append((f"{_K}quorum.{key}", f"lists {twice} twice; list each region once"))
        if problems or not writers_known:
            return problems
        for message in timing_problems(cfg.quorum_voters, probe_s=self.probe_interval_seconds,
                                       stale_after_s=cfg.quorum_stale_after, lease_s=self.lease):
            problems.append((f"{_K}quorum.{message.split(' ', 1)[0]}", message))
        return problems + self._list_checks(cfg)

    def _list_checks(self, cfg: StackConfig) -> list[Problem]:
        members, nxt = cfg.quorum_members, cfg.quorum_next_members
        problems: list[Problem] = []
        why = list_problem(members, joint=nxt is not None, writers=cfg.writers)
        if why is not None:
            if self.members is None:
                seeding = ", ".join(cfg.seeding)
                problems.append((f"{_K}quorum.members", f"by default every region without seed_from ({', '.join(members)}): "
                                 f"{why}. Set the current members explicitly (a region rebuilt with seed_from stays a member "
                                 f"while it is down{': ' + seeding if seeding else ''}), e.g. members: {_odd_example(cfg)}"))
            else:
                problems.append((f"{_K}quorum.members", f"{members}: {why}; e.g. members: {_odd_example(cfg)}"))
        if nxt is not None:
            why = list_problem(nxt, joint=True, writers=[])
            if why is not None:
                problems.append((f"{_K}quorum.next_members", f"{nxt}: {why}"))
            elif nxt == members:
                problems.append((f"{_K}quorum.next_members", "is the same as members: no change is in progress; remove next_members"))
        return problems


def _odd_example(cfg: StackConfig) -> list[str]:
    names = cfg.region_names
    return names[: max(3, len(names) - (1 - len(names) % 2))]


def _list_fix(cfg: StackConfig, key: str) -> str:
    """A member list the validator accepts for `key`: suggesting one it refuses would send the
    operator round in circles. `members`: the writers if they can decide alone, else an odd prefix
    of the regions. `next_members`: every region of the stack, when that is a change."""
    if key == "members":
        writers = cfg.writers
        ok = list_problem(writers, joint=False, writers=writers) is None
        return f"list regions of it, e.g. members: {writers if ok else _odd_example(cfg)}"
    current = cfg._in_order(cfg.quorum.members) if cfg.quorum.members else cfg.writers
    everyone = cfg.region_names
    if everyone != current and list_problem(everyone, joint=True, writers=[]) is None:
        return (f"list the members after the change, e.g. next_members: {everyone} (or remove next_members when no "
                "membership change is in progress)")
    return "remove next_members: no membership change is in progress"


#: Cloudflare zone phases whose entry-point ruleset the edge can own, by the name `edge.owns_entry_points`
#: uses. A zone has one entry-point ruleset per phase: whoever holds it holds that phase for every
#: hostname of the zone.
ENTRY_POINT_PHASES = {
    "waf": "http_request_firewall_managed",
    "rate_limit": "http_ratelimit",
    "cache": "http_request_cache_settings",
}
#: Who answers for the public hostname (`edge.dns_authority`): Cloudflare, or Route 53 during B -> C.
DNS_AUTHORITIES = ("route53", "cloudflare")


class WafConfig(_Model):
    """The managed WAF (when the stack owns the `waf` entry point). The OWASP Core Ruleset scores
    every request and acts on the total: on a JSON API its first weeks belong in `log` (Enterprise
    only) or `off`, until Security Events show what it would have blocked."""

    owasp_action: Literal["log", "block", "off"] = Field(
        "log", description="what the OWASP ruleset does above the score threshold: log (Enterprise plans only), "
                           "block, or off (not executed)")
    owasp_paranoia_level: int = Field(1, ge=1, le=4, description="rules of paranoia levels above this are disabled")
    owasp_score_threshold: Literal[25, 40, 60] = Field(
        40, description="anomaly score that triggers the action: 25 (high sensitivity), 40 (medium), 60 (low)")


class EdgeConfig(_Model):
    """Phase C only: the Cloudflare front. `hostname` inside `zone_name`; `dns_authority` and
    `owns_entry_points` are required; `route53_public_zone_id` with `route53` only, and not
    `dns.zone_id`; `waf` in `owns_entry_points` needs plan pro or above, `waf.owasp_action: log` an
    Enterprise plan. The API token is provider config (`cloudflare:apiToken`, secret); the worker's purge
    token is `fraiseql:edge_purge_token` (secret)."""

    account_id: str = Field(pattern=r"^[0-9a-f]{32}$", examples=["0123456789abcdef0123456789abcdef"])
    zone_id: str = Field(pattern=r"^[0-9a-f]{32}$", examples=["fedcba9876543210fedcba9876543210"])
    zone_name: str = Field(examples=["example.com"])
    hostname: str = Field(examples=["api.example.com"], description="public API hostname, on Cloudflare")
    plan: Literal["free", "pro", "business", "enterprise"] = "enterprise"
    steering_policy: Literal["proximity", "dynamic_latency", "least_outstanding_requests", "geo", "random"] = "proximity"
    monitor_interval_seconds: int = Field(15, ge=10, le=3600)
    check_regions: list[str] = Field(default_factory=lambda: ["WNAM", "ENAM", "WEU"], min_length=1)
    session_affinity_ttl_seconds: int = Field(300, ge=1, le=604800)
    rate_limit_requests_per_minute: int = Field(1200, gt=0)
    dns_authority: Optional[Literal["route53", "cloudflare"]] = Field(
        None, examples=["cloudflare"],
        description="who answers for `hostname` on the internet: cloudflare (the registrar delegates zone_name to "
                    "Cloudflare), or route53 while moving from phase b (the records stay in route53_public_zone_id)",
    )
    route53_public_zone_id: Optional[str] = Field(
        None, pattern=r"^Z[A-Z0-9]{4,32}$", examples=["Z0123456789ABCDEFGHIJ"],
        description="dns_authority route53 only: phase b's public Route 53 zone, which still answers for `hostname`",
    )
    owns_entry_points: Optional[list[Literal["waf", "rate_limit", "cache"]]] = Field(
        None, examples=[["waf", "rate_limit", "cache"]],
        description="the zone entry-point rulesets this stack creates and owns, for every hostname of the zone "
                    "(its rules match `hostname` only); [] leaves every phase to the zone's owner",
    )
    waf: WafConfig = WafConfig()

    @field_validator("zone_name", "hostname")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOSTNAME.match(v):
            raise ValueError(f"'{v}' is not a lower-case DNS name like example.com")
        return v


    def cross_checks(self, cfg: StackConfig) -> list[Problem]:
        """Phase c only, `hostname` inside `zone_name`; then who answers for which name (docs/architecture.md,
        "DNS authority") and what the stack may own in the Cloudflare zone."""
        if cfg.phase != "c":
            return [(f"{_K}edge", f"the edge belongs to phase c; remove it from a phase {cfg.phase} stack, or set e.g. phase: c")]
        problems: list[Problem] = []
        if not self.hostname.endswith("." + self.zone_name):
            problems.append((f"{_K}edge.hostname", f"{self.hostname} is not inside the zone {self.zone_name}; e.g. hostname: api.{self.zone_name}"))
        return problems + self._authority_checks(cfg.dns) + self._origin_zone_checks(cfg.dns) + self._entry_point_checks()

    def _authority_checks(self, dns: DnsConfig) -> list[Problem]:
        host, zone = self.hostname, self.zone_name
        problems: list[Problem] = []
        if self.dns_authority is None:
            problems.append((f"{_K}edge.dns_authority", f"missing: say who answers for {host} on the internet. Moving from phase b: "
                             f"dns_authority: route53 and route53_public_zone_id: <phase b's dns.zone_id> (the phase b records keep "
                             f"answering until Cloudflare does); once `python -m ops preflight` shows that the registrar delegates "
                             f"{zone} to Cloudflare: dns_authority: cloudflare"))
        elif self.dns_authority == "route53" and self.route53_public_zone_id is None:
            problems.append((f"{_K}edge.route53_public_zone_id", f"missing: with dns_authority: route53, phase b's latency records "
                             f"for {host} stay in phase b's public zone until Cloudflare answers for {zone}; set it to phase b's "
                             "dns.zone_id, e.g. route53_public_zone_id: Z0123456789ABCDEFGHIJ"))
        elif self.dns_authority == "cloudflare" and self.route53_public_zone_id is not None:
            problems.append((f"{_K}edge.route53_public_zone_id", f"belongs to dns_authority: route53 only; with cloudflare the stack "
                             f"deletes its records for {host} there: remove it (after preflight shows Cloudflare answers for {zone})"))
        if self.route53_public_zone_id is not None and self.route53_public_zone_id == dns.zone_id:
            problems.append((f"{_K}dns.zone_id", f"is the public zone (edge.route53_public_zone_id); the origins need a zone of their own "
                             f"that Cloudflare delegates to Route 53, e.g. a hosted zone for origin.{host}"))
        return problems

    def _origin_zone_checks(self, dns: DnsConfig) -> list[Problem]:
        host, zone = self.hostname, self.zone_name
        problems: list[Problem] = []
        if dns.zone_name is None:
            problems.append((f"{_K}dns.zone_name", f"missing: in phase c the Route 53 zone dns.zone_id holds the origin records and "
                             f"the ACM validation records, so it must be a subzone of {zone} that Cloudflare delegates to Route 53 "
                             f"(NS records in Cloudflare); name it, e.g. zone_name: origin.{host}"))
        else:
            if dns.zone_name == zone or not within(dns.zone_name, zone):
                problems.append((f"{_K}dns.zone_name", f"{dns.zone_name} is not a subzone of the Cloudflare zone {zone}: Cloudflare "
                                 f"answers for {zone}, so nobody would ask a Route 53 zone of that name, ACM would never see its "
                                 f"validation records and `pulumi up` would time out; use a subzone Cloudflare delegates to Route 53, "
                                 f"e.g. zone_name: origin.{host}"))
            if not within(dns.record_name, dns.zone_name):
                problems.append((f"{_K}dns.record_name", f"{dns.record_name} is not in the origin zone {dns.zone_name}; the ALB "
                                 f"certificates are validated there, e.g. record_name: {dns.zone_name}"))
            if within(host, dns.zone_name):
                problems.append((f"{_K}edge.hostname", f"{host} is inside the Route 53 subzone {dns.zone_name}: Cloudflare would "
                                 f"delegate it away and its load balancer would never answer; keep the public name outside, "
                                 f"e.g. hostname: api.{zone} with zone_name: origin.api.{zone}"))
        if not dns.https:
            problems.append((f"{_K}dns.https", "phase c pins the Cloudflare zone to SSL mode Full (strict): the edge reaches the "
                             "origins over TLS only, so the ALBs need their ACM certificates; remove it or set https: true"))
        return problems

    def _entry_point_checks(self) -> list[Problem]:
        owned = self.owns_entry_points
        problems: list[Problem] = []
        if owned is None:
            problems.append((f"{_K}edge.owns_entry_points", f"missing: Cloudflare allows one entry-point ruleset per phase per zone, "
                             f"and whoever creates it owns that phase for every hostname of {self.zone_name} (the stack's rules match "
                             f"{self.hostname} only). Run `python -m ops preflight --stack <stack>` (it runs without this key) to list the "
                             "zone's existing entry points, then list those this stack may own, e.g. owns_entry_points: [waf, rate_limit, cache], or [] to leave every "
                             "phase to the zone's owner"))
            return problems
        twice = sorted({p for p in owned if owned.count(p) > 1})
        if twice:
            problems.append((f"{_K}edge.owns_entry_points", f"lists {twice} twice; list each entry point once"))
        if "waf" in owned:
            if self.plan == "free":
                problems.append((f"{_K}edge.owns_entry_points", "waf executes the Cloudflare Managed and OWASP rulesets, which "
                                 "need a Pro plan or above; remove waf, or set e.g. plan: pro"))
            elif self.waf.owasp_action == "log" and self.plan != "enterprise":
                problems.append((f"{_K}edge.waf.owasp_action", f"log is an Enterprise-only action (plan is {self.plan}); start with "
                                 "owasp_action: off, and switch to block once you know what it would block, e.g. owasp_action: off"))
        elif "waf" in self.model_fields_set:
            problems.append((f"{_K}edge.waf", "configures the waf entry point, which this stack does not own (owns_entry_points); "
                             "remove edge.waf, or add waf to owns_entry_points"))
        return problems


class AlertsConfig(_Model):
    """Who is told when an alarm fires."""

    emails: list[str] = Field(
        default_factory=list, examples=[["oncall@example.com"]], description="subscribed to every region's alert topic"
    )

    _emails = field_validator("emails")(classmethod(lambda cls, v: _check_emails(v)))


class StackConfig(_Model):
    """Everything under the `fraiseql:` namespace of a stack file; `core/config.py` validates it, and
    it is the only place that does. Unknown or misspelled keys are errors. `tags` are free-form but
    `Name`, `project`, `phase`, `stack` and `component` are reserved."""

    phase: Literal["a", "b", "c"] = Field(examples=["a"])
    regions: list[RegionConfig] = Field(min_length=2)
    network: NetworkConfig = NetworkConfig()
    app: AppConfig
    database: DatabaseConfig
    dns: DnsConfig
    slo: SloConfig
    budget: BudgetConfig
    alerts: AlertsConfig = AlertsConfig()
    usage: UsageConfig = UsageConfig()
    replication: Optional[ReplicationConfig] = None
    edge: Optional[EdgeConfig] = None
    quorum: QuorumConfig = QuorumConfig()
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    @property
    def primary(self) -> RegionConfig:
        return next(r for r in self.regions if r.role == "primary")

    @property
    def standbys(self) -> list[RegionConfig]:
        return [r for r in self.regions if r.role == "standby"]

    def region(self, name: str) -> RegionConfig:
        return next(r for r in self.regions if r.name == name)

    @property
    def seeding(self) -> dict[str, str]:
        """Regions joining as a read replica of another region's writer: region -> source."""
        return {r.name: r.seed_from for r in self.regions if r.seed_from is not None}

    @property
    def writers(self) -> list[str]:
        """Regions whose database takes writes per this config (not seeding), in config order."""
        return [r.name for r in self.regions if r.role in ("primary", "active") and r.seed_from is None]

    def _in_order(self, names: list[str]) -> list[str]:
        # Config order is the agents' tie-break: every agent must see the same one.
        return [r.name for r in self.regions if r.name in names]

    @property
    def quorum_members(self) -> list[str]:
        """`quorum.members`, or every region without `seed_from`; in config order."""
        return self._in_order(self.quorum.members) if self.quorum.members is not None else self.writers

    @property
    def quorum_voters(self) -> int:
        """How many regions' agents vote and relay (members and next_members together)."""
        return len(set(self.quorum_members) | set(self.quorum_next_members or ()))

    @property
    def quorum_stale_after(self) -> float:
        return self.quorum.stale_after(self.quorum_voters)

    @property
    def quorum_next_members(self) -> Optional[list[str]]:
        """`quorum.next_members` in config order, while a membership change is in progress."""
        return self._in_order(self.quorum.next_members) if self.quorum.next_members is not None else None

    def writer_index(self, name: str) -> int:
        """A writer's identity index: `regions[i].index`, or its position in the list (1-based)."""
        i, rc = next((i, r) for i, r in enumerate(self.regions) if r.name == name)
        return rc.index if rc.index is not None else i + 1

    @property
    def reserved_concurrency(self) -> dict[str, int]:
        """Lambda concurrency the stack reserves in each region: the fence agents of phases b and c, if
        `quorum.agent_reserved_concurrency` asks for it (none by default)."""
        per_region = (self.quorum.agent_reserved_concurrency or 0) if self.phase in ("b", "c") else 0
        return {r.name: per_region for r in self.regions}

    @property
    def lag_alarm_seconds(self) -> float:
        """Threshold of every replication-lag alarm: the multi-master override, else the SLO's."""
        if self.replication is not None and self.replication.lag_alarm_seconds is not None:
            return self.replication.lag_alarm_seconds
        return self.slo.lag_alarm_seconds

    def cross_checks(self) -> list[Problem]:
        """Rules that span several keys, each beside the model whose keys it reads; each names the key a
        user has to change. The SLO floors are checked only on an otherwise valid stack."""
        seeding = [p for i, rc in enumerate(self.regions) for p in rc.seeding_checks(self, i)]
        if self.phase != "a":
            seeding += _writer_index_checks(self)
        problems = [
            *_regions_checks(self),
            *seeding,
            *self.quorum.cross_checks(self, writers_known=not seeding),
            *self._phase_blocks(),
            *(self.replication.cross_checks(self) if self.replication is not None else []),
            *self.network.cross_checks(self),
            *self.app.cross_checks(),
            *self.database.cross_checks(self),
            *self.budget.cross_checks(),
            *(self.edge.cross_checks(self) if self.edge is not None else []),
            *self.dns.cross_checks(self),
            *self.slo.cross_checks(self),
        ]
        if not problems:
            problems = self.slo.feasibility_checks(self)
        return problems + self._tag_checks()

    def _phase_blocks(self) -> list[Problem]:
        """The blocks a phase cannot do without: a conflict policy in b and c, the edge in c."""
        problems: list[Problem] = []
        if self.phase != "a" and self.replication is None:
            problems.append((f"{_K}replication", f"phase {self.phase} needs a conflict policy, e.g. replication: {{default: lww, replicated: [tb_user]}}"))
        if self.phase == "c" and self.edge is None:
            problems.append((f"{_K}edge", "phase c needs the Cloudflare edge: account_id, zone_id, zone_name, hostname, e.g. edge: {account_id: <32 hex>, zone_id: <32 hex>, zone_name: example.com, hostname: api.example.com}"))
        return problems

    def _tag_checks(self) -> list[Problem]:
        """`Name`, `project`, `phase`, `stack` and `component` are the project's (core/naming.py)."""
        return [(f"{_K}tags.{key}", f"'{key}' is set by the project ({', '.join(RESERVED_TAGS)}); pick another tag name, e.g. team: platform")
                for key in self.tags if key in RESERVED_TAGS]


KEYS = tuple(StackConfig.model_fields)
# Secret keys are read by the program with require_secret, never into the validated model.
SECRET_KEYS = ("edge_purge_token", "origin_auth_token")
#: The secrets each phase needs, and how to set one: `pulumi config set --secret` on the real stack
#: (stack files commit none; the offline plan stands in for them, infra/synth.py).
PHASE_SECRETS: dict[str, tuple[str, ...]] = {"a": (), "b": (), "c": SECRET_KEYS}
SECRET_MISSING = {
    "edge_purge_token": "missing; set it with e.g. `pulumi config set --secret fraiseql:edge_purge_token <token with "
                        "Cache Purge permission>`",
    "origin_auth_token": "missing: the edge sends it to the origins and the ALBs refuse requests without it; set it "
                         "with e.g. `pulumi config set --secret fraiseql:origin_auth_token \"$(openssl rand -hex 32)\"` "
                         "(at most 128 characters, no * or ?)",
}
# Provider keys that hold credentials: refused in plain text like ours.
PROVIDER_SECRET_KEYS = ("cloudflare:apiToken", "aws:secretKey", "aws:token")


def plaintext_secret_problems(present: Mapping[str, Any], is_secret: Any) -> list[tuple[str, str]]:
    """Every documented secret key given in plain text (`present`: full key -> value, `is_secret(key)`).

    `pulumi.Config` knows whether a value was stored with `--secret`; a plain value would sit in the
    stack file and in Pulumi state unencrypted.
    """
    keys = [f"{NAMESPACE}:{k}" for k in SECRET_KEYS] + list(PROVIDER_SECRET_KEYS)
    return [
        (key, f"is stored in plain text; remove it from the stack file and run `pulumi config rm {key}` then "
              f"`pulumi config set --secret {key} <value>`, then rotate the value: it was exposed")
        for key in keys
        if present.get(key) is not None and not is_secret(key)
    ]


def _parse_value(key: str, raw: Any) -> Any:
    """Pulumi hands structured config to programs as JSON strings."""
    if not isinstance(raw, str):
        return raw
    s = raw.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError("?", [(f"{NAMESPACE}:{key}", f"is not valid structured config ({e.msg}); write it as YAML, e.g. {key}: {{az_count: 2}}")]) from None
    return raw


def load_config(values: Mapping[str, Any], stack: str, *, cross_checks: bool = True,
                plaintext_secrets: Optional[list[tuple[str, str]]] = None) -> StackConfig:
    """Validate raw `fraiseql:` config (keys without the namespace) into a StackConfig.

    `cross_checks=False` keeps field validation but skips the rules that span keys (role counts,
    overlaps, quorum size): only benchmarks that plan parts of the program at any region count use it.
    `plaintext_secrets` (from `plaintext_secret_problems`) are reported with the other problems.
    """
    refused = list(plaintext_secrets or [])
    try:
        parsed = {key: _parse_value(key, raw) for key, raw in values.items()}
    except ConfigError as e:
        raise ConfigError(stack, e.problems) from None
    secrets = {k: parsed.pop(k) for k in SECRET_KEYS if k in parsed}
    try:
        cfg = StackConfig.model_validate(parsed)
    except ValidationError as e:
        raise ConfigError(stack, refused + pydantic_problems(e.errors(), StackConfig, prefix=f"{NAMESPACE}:",
                                                             top_level=SECRET_KEYS)) from None
    if not cross_checks:
        if refused:
            raise ConfigError(stack, refused)
        return cfg
    problems = refused + cfg.cross_checks()
    problems += [(f"{NAMESPACE}:{key}", SECRET_MISSING[key]) for key in PHASE_SECRETS[cfg.phase] if key not in secrets]
    if problems:
        raise ConfigError(stack, problems)
    return cfg


def namespaced_values(all_config: Mapping[str, Any]) -> dict[str, Any]:
    """The `fraiseql:` entries of a full config map, with the namespace removed."""
    prefix = NAMESPACE + ":"
    return {k[len(prefix):]: v for k, v in all_config.items() if k.startswith(prefix)}
