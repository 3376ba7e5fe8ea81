"""Check AWS calls that real code made against IAM policies, with a maintained evaluator.

Calls are recorded with a botocore ``before-call`` hook on boto3's default session, each under the
principal whose code made it (``Recorder.acting_as``). ``requests_for`` turns each call into the
IAM request AWS would authorize: its action, the resource ARN, the condition keys, and the implied
KMS request when Secrets Manager decrypts or encrypts a secret under a customer key (``kms:Decrypt``
or ``kms:GenerateDataKey`` with ``kms:ViaService``). ``evaluate`` runs them through
@cloud-copilot/iam-simulate (tests/iam/simulate.mjs), which implements every condition operator
and validates ARNs against each action's resource types. moto's own IAM enforcement was not
enough: it evaluates only ``StringEquals``, ignores other operators, and checks every call
against resource ``*``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import boto3

HERE = Path(__file__).resolve().parent
ACCOUNT = "123456789012"
#: Pulumi's aws.kms.Key without a policy gets this default key policy: IAM policies decide.
DEFAULT_KEY_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"}]}
#: IAM's service prefix where it differs from the API's signing name, and actions named unlike the API.
PREFIX = {"monitoring": "cloudwatch"}
ACTION = {("lambda", "Invoke"): "InvokeFunction"}
#: Used by the Lambda runtime on the function's behalf, never by its code.
RUNTIME_ACTIONS = frozenset({"logs:CreateLogStream", "logs:PutLogEvents"})


@dataclass
class Call:
    principal: str
    service: str       # signing name
    operation: str
    region: str
    params: dict[str, Any]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    principal: Optional[str] = None
    #: (service, operation) -> function(params, region) returning a parsed response instead of calling AWS
    intercept: dict[tuple[str, str], Callable[[dict[str, Any], str], dict[str, Any]]] = field(default_factory=dict)

    def record(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """before-parameter-build: the API parameters as the code passed them."""
        if self.principal is None:
            raise AssertionError(f"{model.service_model.signing_name}.{model.name} called outside any principal")
        self.calls.append(Call(self.principal, model.service_model.signing_name, model.name,
                               context.get("client_region") or "us-east-1", json.loads(json.dumps(params, default=_plain))))

    def answer(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        """before-call: serve intercepted operations in-process (a response short-circuits the call)."""
        handler = self.intercept.get((model.service_model.signing_name, model.name))
        if handler is None:
            return None
        return (_Http(), handler(self.calls[-1].params, context.get("client_region") or "us-east-1"))

    @contextlib.contextmanager
    def acting_as(self, principal: str) -> Iterator[None]:
        outer, self.principal = self.principal, principal
        try:
            yield
        finally:
            self.principal = outer


def _plain(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Http:
    status_code = 200
    headers: dict[str, str] = {}


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Record every boto3 call made through the default session (clients created inside)."""
    rec = Recorder()
    boto3.setup_default_session()
    session = boto3.DEFAULT_SESSION
    assert session is not None
    session.events.register("before-parameter-build", rec.record)
    session.events.register("before-call", rec.answer)
    try:
        yield rec
    finally:
        session.events.unregister("before-parameter-build", rec.record)
        session.events.unregister("before-call", rec.answer)
        boto3.DEFAULT_SESSION = None


@dataclass(frozen=True)
class Request:
    principal: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    via: str = ""   # the call that implied it

    def describe(self) -> str:
        ctx = ", ".join(f"{k}={v}" for k, v in self.context)
        return f"{self.principal}: {self.action} on {self.resource}" + (f" [{ctx}]" if ctx else "") + (f" (for {self.via})" if self.via else "")


def _secret(client: Callable[[str, str], Any], secret_id: str, region: str,
            replica_keys: dict[tuple[str, str], str]) -> tuple[str, Optional[str]]:
    """A secret's ARN in `region` and the KMS key it is encrypted with there.

    moto keeps no replica's own key (it reports the primary's, or alias/aws/secretsmanager), where
    AWS uses the key given for that replica: `replica_keys[(name, region)]` supplies it.
    """
    d = client("secretsmanager", region).describe_secret(SecretId=secret_id)
    key = d.get("KmsKeyId")
    if d.get("PrimaryRegion") and d["PrimaryRegion"] != region:
        key = replica_keys[(d["Name"], region)]
    return d["ARN"], key


def requests_for(calls: list[Call], client: Callable[[str, str], Any],
                 replica_keys: Optional[dict[tuple[str, str], str]] = None) -> list[Request]:
    out: list[Request] = []
    for c in calls:
        action = f"{PREFIX.get(c.service, c.service)}:{ACTION.get((c.service, c.operation), c.operation)}"
        p = c.params
        if c.service == "secretsmanager":
            arn, key = _secret(client, p["SecretId"], c.region, replica_keys or {})
            out.append(Request(c.principal, action, arn))
            implied = {"GetSecretValue": "kms:Decrypt", "PutSecretValue": "kms:GenerateDataKey"}.get(c.operation)
            if implied and key:
                out.append(Request(c.principal, implied, key,
                                   (("kms:ViaService", f"secretsmanager.{c.region}.amazonaws.com"),), via=action))
        elif action == "cloudwatch:PutMetricData":
            out.append(Request(c.principal, action, "*", (("cloudwatch:namespace", p["Namespace"]),)))
        elif action == "elasticloadbalancing:ModifyRule":
            out.append(Request(c.principal, action, p["RuleArn"]))
        elif action == "route53-recovery-cluster:GetRoutingControlState":
            out.append(Request(c.principal, action, p["RoutingControlArn"]))
        elif action == "lambda:InvokeFunction":
            out.append(Request(c.principal, action, p["FunctionName"]))
        else:
            raise AssertionError(f"no IAM mapping for {c.service}.{c.operation}: add one to tests/iam/evaluator.py")
    return out


def node_available() -> bool:
    return shutil.which("node") is not None and (HERE / "node_modules" / "@cloud-copilot" / "iam-simulate").exists()


def evaluate(requests: list[Request], policies: dict[str, list[dict[str, Any]]]) -> list[tuple[Request, str]]:
    """Each request with the simulator's verdict (Allowed, ImplicitlyDenied, ExplicitlyDenied, Error)."""
    payload = [
        {"principal": f"arn:aws:sts::{ACCOUNT}:assumed-role/{r.principal}/session", "account": ACCOUNT,
         "action": r.action, "resource": r.resource, "context": dict(r.context), "policies": policies[r.principal],
         "resourcePolicy": DEFAULT_KEY_POLICY if r.action.startswith("kms:") else None}
        for r in requests
    ]
    res = subprocess.run(["node", str(HERE / "simulate.mjs")], input=json.dumps(payload), capture_output=True,
                         text=True, timeout=120, check=True)
    results = json.loads(res.stdout)
    return [(r, v["result"] + (f" {json.dumps(v.get('errors'))[:300]}" if v.get("errors") else ""))
            for r, v in zip(requests, results)]


def unused_statements(requests: list[Request], policies: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Allowed actions no recorded request needed: permissions broader than the code."""
    used = {(r.principal, r.action) for r in requests}
    out = []
    for principal, docs in policies.items():
        for doc in docs:
            for st in doc["Statement"]:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                out += [f"{principal}: {a} ({st.get('Sid', '')})" for a in actions
                        if (principal, a) not in used and a not in RUNTIME_ACTIONS]
    return out
