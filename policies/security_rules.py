"""Security rules of the pack: classes of misconfiguration, as awsguard-style rules catch them.

Each rule matches a class (any IAM statement, any listener, any environment variable, ...), never
a list of this project's resource names. Each is one policy object in `POLICIES` (name, level,
validator), registered by `policies/pack.py`. Validators receive every resource of the stack.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, Callable, Iterable, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.rules import Finding, StackFacts, known, of_type, plain

MANDATORY = EnforcementLevel.MANDATORY

IAM_DOCUMENT_TYPES = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
    "aws:iam/role:Role": "inlinePolicies",
}
LISTENER = "aws:lb/listener:Listener"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
LAMBDA = "aws:lambda/function:Function"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SAFETY_RULE = "aws:route53recoverycontrol/safetyRule:SafetyRule"
RECORD = "aws:route53/record:Record"
CF_POOL = "cloudflare:index/loadBalancerPool:LoadBalancerPool"

# --- IAM -----------------------------------------------------------------------------------------


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [] if v is None else [v]


def _documents(r: PolicyResource) -> list[dict[str, Any]]:
    prop = IAM_DOCUMENT_TYPES.get(r.resource_type)
    raw = plain(r.props.get(prop)) if prop else None
    docs = []
    for item in _as_list(raw) if prop == "inlinePolicies" else [raw]:
        item = plain(item.get("policy") if isinstance(item, dict) and "policy" in item else item)
        if isinstance(item, str) and known(item):
            try:
                item = json.loads(item)
            except ValueError:
                continue
        if isinstance(item, dict):
            docs.append(item)
    return docs


def _arn_fields(arn: str) -> Optional[list[str]]:
    parts = arn.split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" else None


def check_iam_wildcards(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    """Allow statements: no wildcard in an action; `Resource: "*"` only under a Condition (for
    actions without resource-level permissions); no wildcard standing for a region or an account."""
    out: list[Finding] = []
    for r in resources:
        for doc in _documents(r):
            for i, st in enumerate(_as_list(doc.get("Statement"))):
                if not isinstance(st, dict) or st.get("Effect") != "Allow":
                    continue
                where = f"{r.name} statement {st.get('Sid') or i}"
                if "NotAction" in st or "NotResource" in st:
                    out.append((f"{where} allows NotAction/NotResource: everything else is allowed; list what is needed", r.urn))
                for action in _as_list(st.get("Action")):
                    if "*" in str(action) or "?" in str(action):
                        out.append((f"{where} allows the action wildcard {action!r}; name each action the code calls", r.urn))
                for res in _as_list(st.get("Resource")):
                    res = str(res)
                    if res == "*":
                        if not st.get("Condition"):
                            out.append((f"{where} allows Resource \"*\" without a Condition; name the ARNs, or scope an "
                                        "action that has no resource-level permissions with a condition key", r.urn))
                        continue
                    fields = _arn_fields(res)
                    if fields and ("*" in fields[3] or "*" in fields[4] or "?" in fields[3] or "?" in fields[4]):
                        out.append((f"{where} resource {res} has a wildcard where the region or the account goes; "
                                    "one region's role names its own region and account", r.urn))
    return out


# --- listeners -----------------------------------------------------------------------------------

_TLS_MIN = re.compile(r"(?:TLS13|TLS|FS)-1-([0-3])")


def tls_policy_minimum(name: Optional[str]) -> Optional[float]:
    """The lowest TLS version an ELB security policy accepts, read from its name (AWS encodes it:
    `...-TLS13-1-2-...` = TLS 1.2 and 1.3). Names without the version (`ELBSecurityPolicy-2016-08`,
    the default, `-FS-2018-06`) accept TLS 1.0."""
    if not name:
        return 1.0
    m = _TLS_MIN.search(name)
    return 1.0 + int(m.group(1)) / 10 if m else 1.0


def _forwards(actions: Optional[Iterable[Any]]) -> bool:
    return any(isinstance(a, dict) and a.get("type") == "forward" for a in actions or [])


def _rules_of(resources: list[PolicyResource], listener: PolicyResource) -> list[PolicyResource]:
    """The listener rules attached to `listener`: by the engine's dependency (a preview) or by its ARN
    (an `up`, where the listener's outputs are known, or a rule given the ARN as a plain string)."""
    arn = plain(listener.props.get("arn"))
    return [r for r in of_type(resources, LISTENER_RULE)
            if any(d.urn == listener.urn for d in (r.property_dependencies or {}).get("listenerArn", []))
            or (known(arn) and plain(r.props.get("listenerArn")) == arn)]


def check_listeners(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    out: list[Finding] = []
    listeners = of_type(resources, LISTENER)
    for lst in listeners:
        p = lst.props
        proto = str(p.get("protocol") or "HTTP").upper()
        if proto == "HTTP":
            rules = _rules_of(resources, lst)
            if _forwards(p.get("defaultActions")) or any(_forwards(r.props.get("actions")) for r in rules):
                out.append((f"listener {lst.name} forwards plain HTTP on port {p.get('port')}; serve HTTPS and make "
                            "port 80 redirect to it", lst.urn))
        elif proto == "HTTPS":
            policy = p.get("sslPolicy")
            if known(policy) and (tls_policy_minimum(policy) or 0) < 1.2:
                out.append((f"listener {lst.name} uses TLS policy {policy or 'the default ELBSecurityPolicy-2016-08'}, "
                            "which accepts TLS below 1.2; use ELBSecurityPolicy-TLS13-1-2-2021-06", lst.urn))
    return out


# --- phase C: the origin takes TLS from the edge only -------------------------------------------

ZONE_SETTING = "cloudflare:index/zoneSetting:ZoneSetting"


def _plaintext(actions: Optional[Iterable[Any]]) -> Optional[str]:
    """How an HTTP listener's actions hand out plain HTTP: forwarding it, or redirecting to HTTP
    (`#{protocol}`, the default, keeps the request's HTTP)."""
    for a in actions or []:
        if not isinstance(a, dict):
            continue
        if a.get("type") == "forward":
            return "forwards it to the targets"
        if a.get("type") == "redirect":
            proto = str((a.get("redirect") or {}).get("protocol") or "#{protocol}").upper()
            if proto in ("HTTP", "#{PROTOCOL}"):
                return "redirects it to plain HTTP"
    return None


def check_edge_origin_tls(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    """Phase c: Cloudflare reaches the origins over verified TLS only. No ALB listener serves plain
    HTTP (by its default action or any rule attached to it), and the zone's SSL mode is pinned to
    strict: with Flexible Cloudflare would speak HTTP to port 80, whose redirect to 443 loops."""
    if (facts.manifest or {}).get("phase") != "c":
        return []
    out: list[Finding] = []
    for lst in of_type(resources, LISTENER):
        if str(lst.props.get("protocol") or "HTTP").upper() != "HTTP":
            continue
        how = _plaintext(lst.props.get("defaultActions"))
        for rule in _rules_of(resources, lst):
            how = how or _plaintext(rule.props.get("actions"))
        if how:
            out.append((f"phase c: listener {lst.name} takes plain HTTP on port {lst.props.get('port')} and {how}; the origin "
                        "takes TLS from Cloudflare only (zone SSL mode strict): make port 80 redirect to HTTPS or answer "
                        "a fixed response", lst.urn))
    ssl = [z for z in of_type(resources, ZONE_SETTING) if plain(z.props.get("settingId")) == "ssl"]
    if not ssl:
        out.append(("phase c: no Cloudflare zone setting pins the SSL mode; declare ZoneSetting(setting_id=\"ssl\", "
                    "value=\"strict\") for the edge's zone (Flexible would loop on the ALB's redirect)", None))
    for z in ssl:
        value = plain(z.props.get("value"))
        if known(value) and value != "strict":
            out.append((f"phase c: zone setting {z.name} sets the SSL mode to {value!r}; the edge must verify the origins' "
                        "certificates: value \"strict\" (Full (strict))", z.urn))
    return out


# --- secrets in environment variables ----------------------------------------------------------

SECRET_NAME = re.compile(r"(PASS(WORD|WD)?|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)", re.I)
_REFERENCE = re.compile(r"^(arn:|https?://|/|[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?$)|^[\[{]", re.I)


def entropy_bits(value: str) -> float:
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values()) if value else 0.0


def looks_secret(name: str, value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value or not known(value) or _REFERENCE.match(value):
        return None
    if SECRET_NAME.search(name):
        return "its name says it holds a secret"
    # Random tokens: long, with close to 4+ bits of entropy per character; words and ids fall below.
    if len(value) >= 20 and " " not in value and entropy_bits(value) >= 4.0:
        return f"its value looks random ({entropy_bits(value):.1f} bits per character)"
    return None


def _environments(r: PolicyResource) -> list[tuple[str, dict[str, Any]]]:
    if r.resource_type == LAMBDA:
        env = plain(r.props.get("environment")) or {}
        return [("environment", plain(env.get("variables")) or {})] if isinstance(env, dict) else []
    if r.resource_type == TASK:
        raw = plain(r.props.get("containerDefinitions"))
        try:
            defs = json.loads(raw) if isinstance(raw, str) and known(raw) else []
        except ValueError:
            defs = []
        return [(f"container {c.get('name')}", {e.get("name"): e.get("value") for e in c.get("environment") or []})
                for c in defs if isinstance(c, dict)]
    return []


def check_env_secrets(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    out: list[Finding] = []
    for r in resources:
        for where, env in _environments(r):
            for name, value in sorted((env or {}).items()):
                why = looks_secret(str(name), plain(value))
                if why:
                    out.append((f"{r.name} {where} variable {name} looks like a plaintext secret ({why}); pass a Secrets "
                                "Manager ARN and read it at run time (ECS `secrets`, or GetSecretValue in the function)", r.urn))
    return out


# --- routing safety ----------------------------------------------------------------------------


def check_safety_rules(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    m = facts.manifest or {}
    if m.get("phase") not in ("b", "c"):
        return []
    # During a membership change the rule is stricter than either list's quorum (core.membership.routing_rule).
    quorum = m.get("routing_threshold") or m.get("quorum")
    writers = m.get("routing_controls") or m.get("write_regions", [])
    rules = of_type(resources, SAFETY_RULE)
    if not rules:
        return [("active-active has no ARC safety rule: any script could turn every region off", None)]
    out: list[Finding] = []
    for rule in rules:
        cfg = rule.props.get("ruleConfig") or {}
        asserted = rule.props.get("assertedControls") or []
        if cfg.get("type") != "ATLEAST" or cfg.get("inverted") or not known(cfg.get("threshold")) \
                or int(cfg.get("threshold") or 0) < int(quorum or 0):
            out.append((f"safety rule {rule.name} ({cfg.get('type')} {cfg.get('threshold')}, inverted={cfg.get('inverted')}) "
                        f"is weaker than the quorum: it must assert ATLEAST {quorum} controls on", rule.urn))
        if known(asserted) and len(asserted) < len(writers):
            out.append((f"safety rule {rule.name} asserts {len(asserted)} controls for {len(writers)} quorum regions", rule.urn))
    return out


#: Every Route 53 routing policy a record can carry (pulumi-aws 7 property names): a routed record
#: answers with one of several targets, and only a health check takes a dead one out.
ROUTING_POLICIES = ("failoverRoutingPolicies", "latencyRoutingPolicies", "weightedRoutingPolicies",
                    "geolocationRoutingPolicies", "geoproximityRoutingPolicy", "cidrRoutingPolicy",
                    "multivalueAnswerRoutingPolicy")
HEALTH_CHECK = "aws:route53/healthCheck:HealthCheck"


def _routing(rec: PolicyResource) -> list[str]:
    return [k for k in ROUTING_POLICIES if rec.props.get(k)]


def _policy_word(key: str) -> str:
    return re.sub(r"RoutingPolic(y|ies)$", "", key)


def check_routing_records(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    out: list[Finding] = []
    for rec in of_type(resources, RECORD):
        p = rec.props
        routed = _routing(rec)
        has_check = bool(p.get("healthCheckId")) or bool((rec.property_dependencies or {}).get("healthCheckId"))
        if routed and not has_check:
            out.append((f"record {rec.name} ({p.get('name')}) uses {_policy_word(routed[0])} routing "
                        "without a health check: Route 53 keeps answering with a dead region", rec.urn))
    return out


def _never_fails(check: PolicyResource) -> Optional[str]:
    """Why Route 53 would always count this health check healthy, or None."""
    p = check.props
    if p.get("disabled") is True:
        return "is disabled (Route 53 counts a disabled check as always healthy)"
    if p.get("invertHealthcheck") is True:
        return "is inverted (it reports healthy when the endpoint fails)"
    if p.get("type") == "CALCULATED":
        threshold = p.get("childHealthThreshold")
        children = p.get("childHealthchecks")
        if known(threshold) and int(threshold or 0) < 1:
            return "is CALCULATED with child_health_threshold 0 (healthy whatever its children say)"
        if known(threshold) and known(children) and isinstance(children, list) and int(threshold or 0) > len(children):
            return f"is CALCULATED needing {threshold} of {len(children)} children (never healthy)"
    return None


def check_routing_health_checks(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    """A routed record's health check must be able to fail: a disabled, inverted or always-healthy
    calculated check is as good as none, and Route 53 keeps sending clients to a dead region."""
    out: list[Finding] = []
    for rec in of_type(resources, RECORD):
        if not _routing(rec):
            continue
        for check in (rec.property_dependencies or {}).get("healthCheckId") or []:
            why = _never_fails(check) if check.resource_type == HEALTH_CHECK else None
            if why:
                out.append((f"record {rec.name} ({rec.props.get('name')}) routes by {_policy_word(_routing(rec)[0])} on "
                            f"health check {check.name}, which {why}", rec.urn))
    return out


def check_pool_monitors(resources: list[PolicyResource], facts: StackFacts) -> list[Finding]:
    return [(f"edge pool {p.name} has no monitor: the load balancer cannot see the origin fail", p.urn)
            for p in of_type(resources, CF_POOL)
            if not (p.props.get("monitor") or (p.property_dependencies or {}).get("monitor"))]


def _stack(check: Callable[[list[PolicyResource], StackFacts], list[Finding]]) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = list(args.resources)
        facts = StackFacts.read(resources, dict(args.get_config() or {}))
        for message, urn in check(resources, facts):
            report(message, urn)

    return validate


def _policy(name: str, description: str,
            check: Callable[[list[PolicyResource], StackFacts], list[Finding]]) -> StackValidationPolicy:
    return StackValidationPolicy(name=name, description=description, validate=_stack(check), enforcement_level=MANDATORY)


POLICIES = [
    _policy("iam-no-wildcards", "IAM allows no wildcard actions, no unconditioned Resource \"*\", no region or account wildcard.",
            check_iam_wildcards),
    _policy("no-plaintext-forwarding", "No HTTP listener forwards traffic; HTTPS listeners refuse TLS below 1.2.",
            check_listeners),
    _policy("no-secrets-in-environment", "No function or task carries a secret in its environment (by name or entropy).",
            check_env_secrets),
    _policy("safety-rule-holds-quorum", "The ARC safety rule keeps at least a quorum of routing controls on.",
            check_safety_rules),
    _policy("routing-records-health-checked",
            "Every routed record (failover, latency, weighted, geolocation, geoproximity, CIDR, multivalue) has a health check.",
            check_routing_records),
    _policy("routing-health-checks-can-fail",
            "A routed record's health check can fail: not disabled, not inverted, not a calculated check that is always healthy.",
            check_routing_health_checks),
    _policy("edge-pools-monitored", "Every edge load-balancer pool has a monitor.", check_pool_monitors),
    _policy("edge-origin-tls-only", "Phase c: no ALB listener serves plain HTTP, and the Cloudflare zone's SSL mode is strict.",
            check_edge_origin_tls),
]
