"""Typed stack outputs: one model per phase, the single definition of what the program exports.

The program builds its exports through `Model.exports(...)` (key set checked before export); the
runbooks (`ops`) validate `pulumi stack output --json --show-secrets` with the same models.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# `pulumi stack output --json` without --show-secrets prints secret values as this string.
SECRET_PLACEHOLDER = "[secret]"


class _Model(BaseModel):
    # Outputs of a stack deployed by another release may carry keys this one no longer exports.
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def exports(cls, **values: Any) -> dict[str, Any]:
        """The program's exports, checked against this model's keys before anything is exported.

        Values are Pulumi outputs, still unresolved, so only the key set is checked here; the resolved
        values are validated by the same model when a runbook reads them (and in tests/ops)."""
        unknown = sorted(set(values) - set(cls.model_fields))
        # Every key, optional ones too: they are optional only for runbooks reading an older stack.
        missing = sorted(set(cls.model_fields) - set(values))
        if unknown or missing:
            raise TypeError(f"{cls.__name__} exports: unknown keys {unknown}, missing keys {missing}")
        return values


class Slo(_Model):
    rtoSeconds: float = Field(gt=0)
    rpoSeconds: float = Field(gt=0)
    lagAlarmSeconds: Optional[float] = Field(default=None, gt=0)


class PhaseAOutputs(_Model):
    """What the program exports for phase A (one primary, one warm standby). Optional keys are the ones
    no runbook needs."""

    phase: Literal["a"]
    apiUrl: Optional[str] = None
    readUrl: Optional[str] = None
    albDnsNames: Optional[dict[str, str]] = None
    primaryDbArn: Optional[str] = None
    dbSecretArn: Optional[str] = None
    clusterNames: Optional[dict[str, str]] = None
    serviceNames: Optional[dict[str, str]] = None
    budgetName: Optional[str] = None
    regions: dict[str, Literal["primary", "standby"]]
    primaryRegion: str
    standbyRegion: str
    primaryDbIdentifier: str
    primaryDbAddress: str
    replicaDbIdentifiers: dict[str, str]
    replicaDbAddresses: dict[str, str]
    healthCheckIds: dict[str, str]
    replicaLagAlarmArns: dict[str, str]
    zoneId: str
    recordName: str
    dbPrivateZoneId: str
    dbWriterHostname: str
    dbSecurityGroupIds: dict[str, str]
    fenceSecurityGroupIds: dict[str, str]
    slo: Slo
    alertTopicArns: dict[str, str]
    dbPort: Optional[int] = None
    dbName: Optional[str] = None
    #: While `database.adopt` is set: the peering the new primary reaches the existing database through,
    #: and the stack's CIDR in that region (the route and the rule the existing side needs back).
    adoptPeeringConnectionId: Optional[str] = None
    adoptStackCidr: Optional[str] = None
    dashboardName: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self) -> "PhaseAOutputs":
        p, s = self.primaryRegion, self.standbyRegion
        problems = []
        if self.regions.get(p) != "primary":
            problems.append(f"primaryRegion {p!r} is not the region with role 'primary' in regions {self.regions}")
        if self.regions.get(s) != "standby":
            problems.append(f"standbyRegion {s!r} is not a region with role 'standby' in regions {self.regions}")
        for key, regions in (
            ("replicaDbIdentifiers", (s,)),
            ("replicaDbAddresses", (s,)),
            ("healthCheckIds", (p, s)),
            ("fenceSecurityGroupIds", (p,)),
            ("dbSecurityGroupIds", (p,)),
        ):
            have = getattr(self, key)
            for r in regions:
                if r not in have:
                    problems.append(f"{key} has no entry for {r} (has: {', '.join(sorted(have)) or 'none'})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def standby_db_identifier(self) -> str:
        return self.replicaDbIdentifiers[self.standbyRegion]


class ArcEndpoint(_Model):
    region: str
    endpoint: str

    @field_validator("endpoint")
    @classmethod
    def _https(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be a URL, e.g. https://host-xxxx.us-west-2.example.aws/v1")
        return v


class PhaseBOutputs(_Model):
    """Phase B: three or more active regions, multi-master writers, ARC routing controls and the quorum fence."""

    phase: Literal["b", "c"]
    apiUrl: Optional[str] = None
    zoneId: Optional[str] = None
    recordName: Optional[str] = None
    topology: Optional[Literal["mesh", "hub-and-spoke"]] = None
    networkLinks: Optional[list[str]] = None
    albDnsNames: Optional[dict[str, str]] = None
    writerDbAddresses: Optional[dict[str, str]] = None
    writerSecretArns: Optional[dict[str, str]] = None
    dbPort: Optional[int] = None
    dbName: Optional[str] = None
    dbPrivateZoneId: Optional[str] = None
    replicationSecretName: Optional[str] = None
    bootstrapFunctionNames: Optional[dict[str, str]] = None
    fenceFunctionNames: Optional[dict[str, str]] = None
    fenceRuleArns: Optional[dict[str, str]] = None
    alertTopicArns: Optional[dict[str, str]] = None
    clusterNames: Optional[dict[str, str]] = None
    serviceNames: Optional[dict[str, str]] = None
    budgetName: Optional[str] = None
    regions: dict[str, Literal["active"]]
    writerDbIdentifiers: dict[str, str]
    healthCheckIds: dict[str, str]
    routingControlArns: dict[str, str]
    arcClusterEndpoints: list[ArcEndpoint] = Field(min_length=1)
    quorum: int = Field(ge=1)
    replicationLagAlarmArns: dict[str, str]
    slo: Slo
    # Optional for outputs of a stack deployed before issue 12: every region was a member then.
    quorumMembers: Optional[list[str]] = None
    quorumNextMembers: Optional[list[str]] = None
    seedingRegions: Optional[dict[str, str]] = None
    #: Each writer's identity index (`regions[i].index`, default its position): what the transition runbook gives a copy it promotes.
    writerIndexes: Optional[dict[str, int]] = None
    dashboardName: Optional[str] = None

    @property
    def members(self) -> list[str]:
        """The regions whose agents vote (every region, for a stack deployed before quorum.members)."""
        return list(self.quorumMembers) if self.quorumMembers is not None else sorted(self.regions)

    @model_validator(mode="after")
    def _consistent(self) -> "PhaseBOutputs":
        problems = []
        if self.quorum > len(self.regions):
            problems.append(f"quorum {self.quorum} is more than the {len(self.regions)} regions")
        for key in ("routingControlArns", "writerDbIdentifiers"):
            missing = sorted(set(self.regions) - set(getattr(self, key)))
            if missing:
                problems.append(f"{key} has no entry for {', '.join(missing)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PhaseCOutputs(PhaseBOutputs):
    """Phase C: phase B behind Cloudflare. The API token is never an output (env CLOUDFLARE_API_TOKEN)."""

    phase: Literal["c"]
    cloudflareZoneId: str
    apiHostname: str
    edgeLoadBalancerId: Optional[str] = None
    edgePoolIds: Optional[dict[str, str]] = None
    edgeWorkerName: Optional[str] = None


Outputs = Union[PhaseAOutputs, PhaseBOutputs, PhaseCOutputs]
MODELS: dict[str, type[_Model]] = {"a": PhaseAOutputs, "b": PhaseBOutputs, "c": PhaseCOutputs}
