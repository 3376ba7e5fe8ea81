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
    """The targets the stack declares (`fraiseql:slo`), in seconds."""

    rtoSeconds: float = Field(gt=0)
    rpoSeconds: float = Field(gt=0)
    lagAlarmSeconds: Optional[float] = Field(default=None, gt=0)


class PhaseAOutputs(_Model):
    """What the program exports for phase A (one primary, one warm standby). Optional keys are the ones
    no runbook needs."""

    #: a, b or c
    phase: Literal["a"]
    #: the API's URL (phase c: the origin's name; the public one is apiHostname)
    apiUrl: Optional[str] = None
    #: phase A: the standby's read name
    readUrl: Optional[str] = None
    #: region -> its ALB's DNS name
    albDnsNames: Optional[dict[str, str]] = None
    #: the primary's ARN (the replica's source)
    primaryDbArn: Optional[str] = None
    #: the primary's RDS-managed master secret
    dbSecretArn: Optional[str] = None
    #: region -> ECS cluster
    clusterNames: Optional[dict[str, str]] = None
    #: region -> ECS service
    serviceNames: Optional[dict[str, str]] = None
    #: the AWS Budgets budget
    budgetName: Optional[str] = None
    #: region -> role
    regions: dict[str, Literal["primary", "standby"]]
    #: the region of the writer
    primaryRegion: str
    #: the region of the warm standby
    standbyRegion: str
    #: the primary's RDS identifier
    primaryDbIdentifier: str
    #: the primary's endpoint address
    primaryDbAddress: str
    #: standby region -> its read replica's identifier
    replicaDbIdentifiers: dict[str, str]
    #: standby region -> its read replica's address
    replicaDbAddresses: dict[str, str]
    #: region -> the Route 53 health check its records follow
    healthCheckIds: dict[str, str]
    #: standby region -> its ReplicaLag alarm
    replicaLagAlarmArns: dict[str, str]
    #: the public Route 53 zone
    zoneId: str
    #: the API's name in that zone
    recordName: str
    #: the private zone of the database names
    dbPrivateZoneId: str
    #: the private name the app writes to (the failover moves it)
    dbWriterHostname: str
    #: region -> the database security group
    dbSecurityGroupIds: dict[str, str]
    #: region -> the empty group the failover puts on an old primary
    fenceSecurityGroupIds: dict[str, str]
    #: the declared RTO, RPO and lag alarm
    slo: Slo
    #: region -> the SNS topic every alarm of that region notifies
    alertTopicArns: dict[str, str]
    #: the databases' port
    dbPort: Optional[int] = None
    #: the application's database
    dbName: Optional[str] = None
    #: while `database.adopt` is set: the peering the new primary reaches the existing database through
    adoptPeeringConnectionId: Optional[str] = None
    #: while `database.adopt` is set: the stack's CIDR there (the existing side routes it back through the peering)
    adoptStackCidr: Optional[str] = None
    #: the stack's CloudWatch dashboard
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
    """One regional data-plane endpoint of the ARC cluster."""

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

    #: a, b or c
    phase: Literal["b", "c"]
    #: the API's URL (phase c: the origin's name; the public one is apiHostname)
    apiUrl: Optional[str] = None
    #: the public Route 53 zone
    zoneId: Optional[str] = None
    #: the API's name in that zone
    recordName: Optional[str] = None
    #: the inter-region network
    topology: Optional[Literal["mesh", "hub-and-spoke"]] = None
    #: the peerings or TGW links, as region pairs
    networkLinks: Optional[list[str]] = None
    #: region -> its ALB's DNS name
    albDnsNames: Optional[dict[str, str]] = None
    #: region -> its writer's address
    writerDbAddresses: Optional[dict[str, str]] = None
    #: region -> its writer's master secret
    writerSecretArns: Optional[dict[str, str]] = None
    #: the databases' port
    dbPort: Optional[int] = None
    #: the application's database
    dbName: Optional[str] = None
    #: the private zone of the database names
    dbPrivateZoneId: Optional[str] = None
    #: the subscriptions' password secret (replicated to every region)
    replicationSecretName: Optional[str] = None
    #: region -> its bootstrap function
    bootstrapFunctionNames: Optional[dict[str, str]] = None
    #: region -> its fence agent function
    fenceFunctionNames: Optional[dict[str, str]] = None
    #: region -> the ALB rule its agent switches to take it out of traffic
    fenceRuleArns: Optional[dict[str, str]] = None
    #: region -> the SNS topic every alarm of that region notifies
    alertTopicArns: Optional[dict[str, str]] = None
    #: region -> ECS cluster
    clusterNames: Optional[dict[str, str]] = None
    #: region -> ECS service
    serviceNames: Optional[dict[str, str]] = None
    #: the AWS Budgets budget
    budgetName: Optional[str] = None
    #: region -> role
    regions: dict[str, Literal["active"]]
    #: region -> its writer's RDS identifier
    writerDbIdentifiers: dict[str, str]
    #: region -> the Route 53 health check its records follow
    healthCheckIds: dict[str, str]
    #: region -> its ARC routing control
    routingControlArns: dict[str, str]
    #: the ARC cluster's data-plane endpoints
    arcClusterEndpoints: list[ArcEndpoint] = Field(min_length=1)
    #: the write majority of the current members
    quorum: int = Field(ge=1)
    #: "publisher->subscriber" -> that pair's lag alarm
    replicationLagAlarmArns: dict[str, str]
    #: the declared RTO, RPO and lag alarm
    slo: Slo
    # Optional for outputs of a stack deployed before issue 12: every region was a member then.
    #: the regions whose agents vote
    quorumMembers: Optional[list[str]] = None
    #: the members after a membership change in progress (else null)
    quorumNextMembers: Optional[list[str]] = None
    #: region -> the writer it is a read replica of (seed_from)
    seedingRegions: Optional[dict[str, str]] = None
    #: Each writer's identity index (`regions[i].index`, default its position): what the transition runbook gives a copy it promotes.
    writerIndexes: Optional[dict[str, int]] = None
    #: the stack's CloudWatch dashboard
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

    #: a, b or c
    phase: Literal["c"]
    #: the Cloudflare zone
    cloudflareZoneId: str
    #: the public name Cloudflare answers for
    apiHostname: str
    #: the Cloudflare load balancer
    edgeLoadBalancerId: Optional[str] = None
    #: region -> its Cloudflare pool
    edgePoolIds: Optional[dict[str, str]] = None
    #: the caching worker's script name
    edgeWorkerName: Optional[str] = None


Outputs = Union[PhaseAOutputs, PhaseBOutputs, PhaseCOutputs]
MODELS: dict[str, type[_Model]] = {"a": PhaseAOutputs, "b": PhaseBOutputs, "c": PhaseCOutputs}
