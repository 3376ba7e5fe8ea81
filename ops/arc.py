"""Phase B/C: take a region out of (or back into) service with Route 53 ARC routing controls.

Routing control states are read and set through the cluster's data plane
(`route53-recovery-cluster`), one regional cluster endpoint at a time: AWS guarantees that at least
three of the five are up, and recommends trying them in turn. A call that fails on an endpoint
because that endpoint is unavailable moves on to the next one; a throttled call is retried with
backoff on the same one.

Two guards, separate on purpose:
- the stack's quorum: never leave fewer than `quorum` regions On (checked here, before any call);
  `--force` passes it.
- ARC safety rules: evaluated by ARC itself; a blocked change comes back as ConflictException.
  `SafetyRulesToOverride` is sent only when the operator names rules with `--override-safety`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from botocore.exceptions import ClientError

from ops import log
from ops.aws import Runtime
from ops.errors import Refused, StepFailed, UsageError
from ops.outputs import ArcEndpoint, PhaseBOutputs
from ops.retry import error_code, is_connection_error

ON, OFF = "On", "Off"
# Errors that say "this endpoint, not your request": try the next cluster endpoint.
ENDPOINT_ERRORS = frozenset({"EndpointTemporarilyUnavailableException", "InternalServerException"})


class ArcCluster:
    """Calls the ARC data plane, rotating through the cluster endpoints on endpoint failures."""

    def __init__(self, rt: Runtime, endpoints: Sequence[ArcEndpoint]):
        self.rt = rt
        self.endpoints = list(endpoints)
        self._current = 0

    def endpoint(self) -> ArcEndpoint:
        return self.endpoints[self._current]

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        failures: list[str] = []
        n = len(self.endpoints)
        for k in range(n):
            i = (self._current + k) % n
            ep = self.endpoints[i]
            # A dropped connection moves straight on to the next endpoint; throttling is retried here.
            client = self.rt.client("route53-recovery-cluster", ep.region, ep.endpoint, connection_attempts=1)
            try:
                resp = getattr(client, op)(**params)
            except ClientError as e:
                if error_code(e) not in ENDPOINT_ERRORS:
                    raise
                failures.append(f"{ep.region} ({error_code(e)})")
            except Exception as e:  # noqa: BLE001
                if not is_connection_error(e):
                    raise
                failures.append(f"{ep.region} ({type(e).__name__})")
            else:
                self._current = i
                return resp
            if self.rt.reporter and k + 1 < n:
                nxt = self.endpoints[(i + 1) % n]
                self.rt.reporter.emit("arc", log.RETRY, f"{op}: cluster endpoint {failures[-1]} unavailable; trying {nxt.region} ({nxt.endpoint})")
        raise StepFailed(f"{op}: every ARC cluster endpoint failed: {', '.join(failures)}", step="arc")

    def state(self, arn: str) -> str:
        return self.call("get_routing_control_state", RoutingControlArn=arn)["RoutingControlState"]


@dataclass(frozen=True)
class RegionChangeOptions:
    dry_run: bool = False
    force: bool = False
    override_safety: tuple[str, ...] = field(default_factory=tuple)


def read_states(outputs: PhaseBOutputs, arc: ArcCluster) -> dict[str, str]:
    return {region: arc.state(arn) for region, arn in sorted(outputs.routingControlArns.items())}


def _check_regions(outputs: PhaseBOutputs, regions: Sequence[str]) -> list[str]:
    unknown = [r for r in regions if r not in outputs.routingControlArns]
    if unknown:
        raise UsageError(
            f"unknown region{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the routing controls are for "
            f"{', '.join(sorted(outputs.routingControlArns))}",
            step="arc",
        )
    return list(dict.fromkeys(regions))


def set_regions(outputs: PhaseBOutputs, rt: Runtime, regions: Sequence[str], desired: str, opts: RegionChangeOptions) -> int:
    """Set the routing controls of `regions` to `desired` (On = region-in, Off = region-out)."""
    assert rt.reporter is not None
    r = rt.reporter
    step = "region-out" if desired == OFF else "region-in"
    targets = _check_regions(outputs, regions)
    arc = ArcCluster(rt, outputs.arcClusterEndpoints)
    before = read_states(outputs, arc)
    on_before = sorted(g for g, s in before.items() if s == ON)
    r.emit("state", log.INFO, f"routing controls: {', '.join(f'{g} {s}' for g, s in before.items())}; {len(on_before)} On, quorum {outputs.quorum} "
           f"(read via {arc.endpoint().region})", states=before, quorum=outputs.quorum)

    todo = [g for g in targets if before[g] != desired]
    for g in targets:
        if g not in todo:
            r.emit(step, log.SKIP, f"{g} is already {desired}")
    if not todo:
        r.emit(step, log.DONE, f"done: nothing to do, {', '.join(targets)} already {desired}")
        return 0

    after = dict(before, **{g: desired for g in todo})
    on_after = sorted(g for g, s in after.items() if s == ON)
    if desired == OFF and len(on_after) < outputs.quorum:
        reason = (
            f"taking {', '.join(todo)} out would leave {len(on_after)} region{'s' if len(on_after) != 1 else ''} On "
            f"({', '.join(on_after) or 'none'}), below the quorum of {outputs.quorum}: the regions left could not form a majority, "
            "so writes would stop (or, with a split, two minorities could diverge)"
        )
        if not opts.force:
            r.emit(step, log.REFUSED, reason)
            raise Refused(
                f"refused: {reason}. Nothing was changed. Bring a region back first (region-in), or use --force if the regions "
                "left On are the only healthy ones and you accept running below quorum",
                step=step,
            )
        r.emit(step, log.WARN, f"FORCED below quorum: {reason}")

    entries = [{"RoutingControlArn": outputs.routingControlArns[g], "RoutingControlState": desired} for g in todo]
    params: dict[str, Any]
    if len(entries) == 1:
        op, params = "update_routing_control_state", dict(entries[0])
    else:
        op, params = "update_routing_control_states", {"UpdateRoutingControlStateEntries": entries}
    if opts.override_safety:
        params["SafetyRulesToOverride"] = list(opts.override_safety)
    if opts.dry_run:
        r.emit(step, log.WOULD, f"would call {op} via {arc.endpoint().region}: {json.dumps(params)}", call=op, params=params)
        return 0
    if opts.override_safety:
        r.emit(step, log.WARN, f"overriding ARC safety rules (break glass): {', '.join(opts.override_safety)}")
    try:
        arc.call(op, **params)
    except ClientError as e:
        code, msg = error_code(e), e.response.get("Error", {}).get("Message", "")
        if code == "ConflictException":
            r.emit(step, log.REFUSED, f"ARC refused the change: a safety rule blocks it ({msg})")
            raise Refused(
                f"refused by an ARC safety rule: {msg}. Nothing was changed. Check the control panel's assertion/gating rules; "
                "to break glass, re-run with --override-safety <safety rule ARN> for each rule named above",
                step=step,
            ) from None
        if code == "ServiceLimitExceededException":
            raise StepFailed(f"ARC rejected {op}: {msg} (too many routing controls in one call?)", step=step) from None
        raise
    verified = {g: arc.state(outputs.routingControlArns[g]) for g in todo}
    wrong = {g: s for g, s in verified.items() if s != desired}
    if wrong:
        raise StepFailed(f"{op} returned, but reading back shows {wrong}; re-run to retry", step=step)
    final = dict(before, **verified)
    r.emit(step, log.OK, f"{', '.join(todo)} {desired}; now On: {', '.join(sorted(g for g, s in final.items() if s == ON)) or 'none'}",
           states=final)
    r.emit(step, log.DONE, f"done: {', '.join(todo)} {'out of' if desired == OFF else 'back in'} service")
    return 0
