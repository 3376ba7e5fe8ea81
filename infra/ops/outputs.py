"""The stack outputs the runbooks act on, validated per phase.

Input is the JSON of `pulumi stack output --json --show-secrets`, from a file or stdin. Nothing in the
runbooks hard-codes an identifier: every instance, zone, health check, security group and routing
control comes from here. A missing or malformed key gives one message that names every bad key.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal, Optional, TextIO, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra.ops.errors import UsageError

# `pulumi stack output --json` without --show-secrets prints secret values as this string.
SECRET_PLACEHOLDER = "[secret]"


class _Model(BaseModel):
    # Stack outputs carry more keys than a runbook needs (apiUrl, clusterNames, budgetName...).
    model_config = ConfigDict(extra="ignore", frozen=True)


class Slo(_Model):
    rtoSeconds: float = Field(gt=0)
    rpoSeconds: float = Field(gt=0)
    lagAlarmSeconds: Optional[float] = Field(default=None, gt=0)


class PhaseAOutputs(_Model):
    """What `infra/program.py` exports for phase A (one primary, one warm standby)."""

    phase: Literal["a"]
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
    """Phase B (three or more active regions, ARC routing controls, quorum). Designed ahead of the program."""

    phase: Literal["b", "c"]
    regions: dict[str, Literal["active"]]
    writerDbIdentifiers: dict[str, str]
    healthCheckIds: dict[str, str]
    routingControlArns: dict[str, str]
    arcClusterEndpoints: list[ArcEndpoint] = Field(min_length=1)
    quorum: int = Field(ge=1)
    replicationLagAlarmArns: dict[str, str]
    slo: Slo

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


Outputs = Union[PhaseAOutputs, PhaseBOutputs, PhaseCOutputs]
MODELS: dict[str, type[_Model]] = {"a": PhaseAOutputs, "b": PhaseBOutputs, "c": PhaseCOutputs}


def _describe(err: ValidationError, phase: str) -> str:
    missing, bad = [], []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "missing":
            missing.append(loc)
        elif loc:
            bad.append(f"{loc}: {e['msg']}")
        else:
            bad.append(str(e["msg"]).removeprefix("Value error, "))
    parts = []
    if missing:
        keys = ", ".join(f"'{k}'" for k in missing)
        parts.append(
            f"missing key{'s' if len(missing) > 1 else ''} {keys} (phase {phase} needs "
            f"{'them' if len(missing) > 1 else 'it'}: export {'them' if len(missing) > 1 else 'it'} from "
            "infra/program.py, run `pulumi up`, then re-read the outputs)"
        )
    parts.extend(bad)
    return f"invalid stack outputs for phase {phase}: " + "; ".join(parts)


def _find_secret(value: Any, path: str = "") -> Optional[str]:
    if value == SECRET_PLACEHOLDER:
        return path or "(root)"
    if isinstance(value, dict):
        for k, v in value.items():
            if (hit := _find_secret(v, f"{path}.{k}" if path else str(k))) is not None:
                return hit
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (hit := _find_secret(v, f"{path}[{i}]")) is not None:
                return hit
    return None


def parse_outputs(data: Any) -> Outputs:
    if not isinstance(data, dict):
        raise UsageError("stack outputs must be a JSON object (the output of `pulumi stack output --json --show-secrets`)", step="outputs")
    phase = data.get("phase")
    if phase is None:
        raise UsageError("invalid stack outputs: missing key 'phase' (expected \"a\", \"b\" or \"c\")", step="outputs")
    if phase not in MODELS:
        raise UsageError(f"invalid stack outputs: 'phase' is {phase!r}; expected \"a\", \"b\" or \"c\"", step="outputs")
    try:
        return MODELS[phase].model_validate(data)  # type: ignore[return-value]
    except ValidationError as e:
        message = _describe(e, phase)
        if (where := _find_secret(data)) is not None:
            message += f" (key '{where}' reads {SECRET_PLACEHOLDER!r}: run `pulumi stack output --json --show-secrets`)"
        raise UsageError(message, step="outputs") from None


def load_outputs(source: str, stdin: Optional[TextIO] = None) -> Outputs:
    """Read and validate outputs from a path, or from stdin when `source` is "-"."""
    try:
        if source == "-":
            text = (stdin or sys.stdin).read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read stack outputs from {source}: {e.strerror or e}", step="outputs") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"stack outputs in {'stdin' if source == '-' else source} are not JSON: {e}", step="outputs") from None
    return parse_outputs(data)


def require_phase(outputs: Outputs, command: str, phases: tuple[str, ...]) -> None:
    if outputs.phase not in phases:
        hint = {
            "failover": "phase b/c fails over with region-out/region-in",
            "region-out": "phase a fails over with `failover`",
            "region-in": "phase a fails over with `failover`",
            "purge": "only phase c sits behind Cloudflare",
        }.get(command, "")
        raise UsageError(
            f"`{command}` is a phase {'/'.join(phases)} runbook, but these outputs are phase {outputs.phase}"
            + (f" ({hint})" if hint else ""),
            step="outputs",
        )
