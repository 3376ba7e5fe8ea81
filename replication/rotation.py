"""Secrets Manager rotation of the replication password (the four-step rotation contract).

Runs in the region that owns the secret (it replicates to the others). It never connects to a
database itself: each region's bootstrap function does that on its own writer, reading the new
version from its own region's replica of the secret.

- ``createSecret``: a new password as version AWSPENDING (kept if a retry finds it there).
- ``setSecret``: every writer sets ``fraiseql_repl``'s password to it, then every writer re-points
  its subscriptions. Walsenders that are streaming keep streaming (PostgreSQL checks a password
  only at connect); a subscription that reconnects in between retries until re-pointed.
- ``testSecret``: every writer logs in with the new password and has every subscription streaming.
- ``finishSecret``: AWSCURRENT moves to the new version.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from replication.redact import SecretBox, guarded, redact

__all__ = ["handler", "invoke_config", "lambda_invoker", "rotate"]

Invoke = Callable[[str, str, str], Mapping[str, Any]]
#: The bootstrap functions' timeout when the stack does not say (FRAISEQL_BOOTSTRAP_TIMEOUT_SECONDS).
DEFAULT_BOOTSTRAP_TIMEOUT_S = 300.0
#: Added to the bootstrap's timeout: the invoke's answer (or the function's timeout error) arrives
#: after the function stops, never before the read gives up.
READ_MARGIN_S = 30.0


def invoke_config(bootstrap_timeout_s: float) -> Any:
    """The Lambda client settings for a synchronous bootstrap step.

    boto3 reads for 60 s by default and then retries: a step that waits for its region's copy of the
    secret (up to 180 s) would be cut off and run again while the first run still works. The read
    outlasts the function's own timeout instead, nothing is retried (Secrets Manager retries the
    whole rotation step), and TCP keepalives hold the idle connection open for that long.
    """
    from botocore.config import Config

    return Config(read_timeout=bootstrap_timeout_s + READ_MARGIN_S, connect_timeout=10, tcp_keepalive=True,
                  retries={"mode": "standard", "total_max_attempts": 1})


def rotate(event: Mapping[str, Any], sm: Any, invoke: Invoke, regions: list[str]) -> dict[str, Any]:
    """One rotation step. ``invoke(region, step, version)`` runs that region's bootstrap step."""
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    meta = sm.describe_secret(SecretId=arn)
    if not meta.get("RotationEnabled"):
        raise ValueError(f"rotation is not enabled on {arn}")
    stages = meta.get("VersionIdsToStages", {})
    if token not in stages:
        raise ValueError(f"version {token} is not a version of {arn}")
    if "AWSCURRENT" in stages[token]:
        return {"step": step, "done": "already current"}
    if "AWSPENDING" not in stages[token]:
        raise ValueError(f"version {token} of {arn} is not pending rotation")
    if step == "createSecret":
        try:
            sm.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
        except sm.exceptions.ResourceNotFoundException:
            sm.put_secret_value(SecretId=arn, ClientRequestToken=token, VersionStages=["AWSPENDING"],
                                SecretString=json.dumps({"password": secrets.token_urlsafe(32)}))
    elif step == "setSecret":
        for sub_step in ("set_password", "resubscribe"):  # every publisher first, then every subscriber
            for region in regions:
                invoke(region, sub_step, token)
    elif step == "testSecret":
        try:
            sm.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
        except sm.exceptions.ResourceNotFoundException:
            # RotateSecret with RotateImmediately=false (how the stack enables rotation) only tests
            # that the function answers: there is no new password to try yet.
            return {"step": step, "done": "configuration test: no pending value"}
        for region in regions:
            invoke(region, "test_password", token)
    elif step == "finishSecret":
        current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
        sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                       **({"RemoveFromVersionId": current} if current else {}))
    else:
        raise ValueError(f"unknown rotation step {step!r}")
    return {"step": step, "regions": regions}


def lambda_invoker(functions: Mapping[str, str], client: Callable[..., Any], box: SecretBox,
                   bootstrap_timeout_s: float = DEFAULT_BOOTSTRAP_TIMEOUT_S) -> Invoke:
    """Run a bootstrap step through Lambda in the function's own region; fail on a function error."""
    config = invoke_config(bootstrap_timeout_s)

    def invoke(region: str, step: str, version: str) -> Mapping[str, Any]:
        resp = client("lambda", region_name=region, config=config).invoke(
            FunctionName=functions[region], Payload=json.dumps({"step": step, "version_id": version}).encode())
        body = resp["Payload"].read().decode() if hasattr(resp.get("Payload"), "read") else str(resp.get("Payload"))
        if resp.get("FunctionError"):
            raise RuntimeError(f"{step} in {region} failed: {redact(body, box.values)[:500]}")
        return json.loads(body or "{}")

    return invoke


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry: Secrets Manager calls it with ``SecretId``, ``ClientRequestToken``, ``Step``.

    ``FRAISEQL_BOOTSTRAP_FUNCTIONS``: region -> that region's bootstrap function ARN, in bootstrap order;
    ``FRAISEQL_BOOTSTRAP_TIMEOUT_SECONDS``: those functions' timeout.
    """
    import boto3

    functions: dict[str, str] = json.loads(os.environ["FRAISEQL_BOOTSTRAP_FUNCTIONS"])
    timeout = float(os.environ.get("FRAISEQL_BOOTSTRAP_TIMEOUT_SECONDS") or DEFAULT_BOOTSTRAP_TIMEOUT_S)
    box = SecretBox()

    @guarded(box)
    def run() -> dict[str, Any]:
        sm = boto3.client("secretsmanager")
        return rotate(event, sm, lambda_invoker(functions, boto3.client, box, timeout), list(functions))

    return run()
