"""The stack outputs the runbooks act on, validated per phase.

Input is the JSON of `pulumi stack output --json --show-secrets`, from a file or stdin. Nothing in the
runbooks hard-codes an identifier: every instance, zone, health check, security group and routing
control comes from here. A missing or malformed key gives one message that names every bad key.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional, TextIO

from pydantic import ValidationError

from core.outputs import MODELS, SECRET_PLACEHOLDER, ArcEndpoint, Outputs, PhaseAOutputs, PhaseBOutputs, PhaseCOutputs, Slo
from ops.errors import UsageError

__all__ = ["ArcEndpoint", "Outputs", "PhaseAOutputs", "PhaseBOutputs", "PhaseCOutputs", "Slo", "load_outputs", "parse_outputs"]

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
            "the program, run `pulumi up`, then re-read the outputs)"
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
            "adopt": "a database is adopted into phase A, before any move to phase B",
        }.get(command, "")
        raise UsageError(
            f"`{command}` is a phase {'/'.join(phases)} runbook, but these outputs are phase {outputs.phase}"
            + (f" ({hint})" if hint else ""),
            step="outputs",
        )
