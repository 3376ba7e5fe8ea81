"""`python -m ops preflight --stack S`: what an account must have before the first `pulumi up`.

It reads `Pulumi.<stack>.yaml` (or `--config-file`) and validates it as the program does (exit 2 on a
bad file or config), then checks, read only (describe, get and list calls, and DNS-over-HTTPS
lookups), one line per item: `ok`, or `problem` with its fix.

| step | what |
| --- | --- |
| engine | each region offers the configured PostgreSQL version (DescribeDBEngineVersions) |
| parameters | phases b/c: each region's parameter group family lets the stack set every parameter the write guard and the replication need, to the value it sets (DescribeEngineDefaultParameters) |
| lambda | each region's concurrency quota still leaves Lambda's unreserved minimum after what the stack reserves |
| arc | phases b/c: the ARC control plane answers in us-west-2 |
| zone | the Route 53 zone `dns.zone_id` exists, is public, and is the zone the config names |
| delegation | public resolvers see that zone delegated to its name servers (ACM validates there); phase c: the Cloudflare zone, and while Route 53 answers phase b's zone, hold the NS records of the origin subzone |
| cloudflare | phase c: `edge.zone_id` is `edge.zone_name`, on `edge.plan` |
| authority | phase c: who answers for the public name is what `edge.dns_authority` says |
| rulesets | phase c: each phase's existing entry-point ruleset, against `edge.owns_entry_points` |
| ssl | phase c: the zone's SSL mode is already Full (strict) |
| edge-cert | phase c: an active edge certificate covers the public hostname |

Exit 0 when every item is ok, 3 when any is a problem (nothing was changed), 2 for a bad stack file.
Cloudflare is read with env CLOUDFLARE_API_TOKEN (the value of `cloudflare:apiToken`); DNS is asked
through `https://cloudflare-dns.com/dns-query` unless env FRAISEQL_DOH_URL names another resolver.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import yaml
from botocore.exceptions import BotoCoreError, ClientError

from core.config import (
    ENTRY_POINT_PHASES,
    NAMESPACE,
    SECRET_KEYS,
    ConfigError,
    EdgeConfig,
    StackConfig,
    load_config,
    plaintext_secret_problems,
    within,
)
from core.engine import parameter_group_family
from core.naming import entry_point_ruleset_name
from ops import log
from ops.aws import Runtime
from ops.cloudflare import TOKEN_ENV, CloudflareError, CloudflareReader, api_base
from ops.errors import Refused, UsageError
from ops.retry import error_code
from replication.sql import RDS_PARAMETERS

#: The ARC control-plane API (route53-recovery-control-config) is served from this region only.
ARC_CONTROL_PLANE_REGION = "us-west-2"
#: Lambda keeps this much concurrency unreserved (or the whole quota, where the quota is smaller).
MIN_UNRESERVED = 100
DOH_URL, DOH_ENV = "https://cloudflare-dns.com/dns-query", "FRAISEQL_DOH_URL"
NS_TYPE = 2


@dataclass(frozen=True)
class PreflightOptions:
    stack: str
    config_file: Optional[str] = None


@dataclass(frozen=True)
class Check:
    step: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def ok(step: str, detail: str, **data: Any) -> Check:
    return Check(step, True, detail, data)


def problem(step: str, detail: str, **data: Any) -> Check:
    return Check(step, False, detail, data)


class DnsLookupError(Exception):
    pass


# --- the stack file ------------------------------------------------------------------------------


#: The key preflight helps choose (it lists the zone's entry points): missing, the checks run as if
#: the stack owned every entry point it can.
UNDECIDED_KEY = f"{NAMESPACE}:edge.owns_entry_points"
#: Keys preflight needs no value of: missing, each is a problem line, and the other checks still run.
RUNS_WITHOUT = (UNDECIDED_KEY, *(f"{NAMESPACE}:{k}" for k in SECRET_KEYS))


def load_stack_config(stack: str, config_file: Optional[str] = None
                      ) -> tuple[Path, StackConfig, list[tuple[str, str]]]:
    """The stack file's `fraiseql:` config, validated as the program validates it, and the problems of
    the keys it runs without (`RUNS_WITHOUT`, when missing). `secure:` values are present but
    unreadable here: they count as set, and as secrets."""
    path = Path(config_file or f"Pulumi.{stack}.yaml")
    if not path.is_file():
        raise UsageError(f"no stack file {path}: run from the project folder, or pass --config-file", step="config")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML ({e})", step="config") from None
    raw = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: no `config:` mapping of key: value", step="config")
    present: dict[str, Any] = {}
    secrets: set[str] = set()
    for key, value in raw.items():
        full = key if ":" in key else f"{NAMESPACE}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = "(secret)"
            secrets.add(full)
        present[full] = value
    prefix = NAMESPACE + ":"
    values = {k[len(prefix):]: v for k, v in present.items() if k.startswith(prefix)}
    plaintext = plaintext_secret_problems(present, secrets.__contains__)
    try:
        return path, load_config(values, stack, plaintext_secrets=plaintext), []
    except ConfigError as e:
        error = e
    pending = error.problems
    if all(k in RUNS_WITHOUT and m.startswith("missing") for k, m in pending):
        filled = {**values, **{k[len(prefix):]: "(secret)" for k, _ in pending if k != UNDECIDED_KEY}}
        undecided = UNDECIDED_KEY in dict(pending) and isinstance(values.get("edge"), dict)
        for owned in (list(ENTRY_POINT_PHASES), []) if undecided else ([],):
            if undecided:
                filled["edge"] = {**values["edge"], "owns_entry_points": owned}
            try:
                return path, load_config(filled, stack, plaintext_secrets=plaintext), pending
            except ConfigError:
                continue
    raise UsageError(f"{path}: {error}", step="config")


# --- helpers -------------------------------------------------------------------------------------


def _host(name: str) -> str:
    return name.rstrip(".").lower()


def _same(a: Iterable[str], b: Iterable[str]) -> bool:
    return {_host(x) for x in a} == {_host(x) for x in b}


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(_host(n) for n in names)) or "nothing"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _guarded(step: str, what: str, service: str, body: Callable[[], Iterable[Check]]) -> list[Check]:
    """Run one check; an API or lookup failure is a problem line with its fix, never a crash."""
    try:
        return list(body())
    except ClientError as e:
        op, code = getattr(e, "operation_name", "?"), error_code(e)
        message = e.response.get("Error", {}).get("Message", "")
        fix = (f"grant {service}:{op} to the credentials preflight and `pulumi up` use"
               if "AccessDenied" in (code or "") or code == "UnauthorizedOperation"
               else "check the account and region, then run preflight again")
        return [problem(step, f"{what}: {op} failed: {code}: {message}; {fix}", operation=op, error=code)]
    except CloudflareError as e:
        return [problem(step, f"{what}: {e}; check that {TOKEN_ENV} can read this zone (zone, DNS, settings, SSL "
                              "certificates and rulesets)")]
    except DnsLookupError as e:
        return [problem(step, f"{what}: {e}; set {DOH_ENV} to a DNS-over-HTTPS resolver you can reach")]
    except (BotoCoreError, OSError) as e:
        return [problem(step, f"{what}: cannot reach {service}: {type(e).__name__}: {e}; check the network, the "
                              "credentials, and that your organization allows this region")]


def resolve_ns(rt: Runtime, name: str) -> list[str]:
    """The NS records public resolvers return for `name` (DNS over HTTPS, JSON): [] when none."""
    base = rt.environ.get(DOH_ENV, DOH_URL)
    url = f"{base}?{urllib.parse.urlencode({'name': name, 'type': 'NS'})}"
    req = urllib.request.Request(url, headers={"accept": "application/dns-json"})
    try:
        with rt.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DnsLookupError(f"cannot ask public DNS for the NS of {name} ({base}): {e}") from None
    return sorted({_host(a["data"]) for a in doc.get("Answer") or []
                   if a.get("type") == NS_TYPE and _host(a.get("name", "")) == _host(name)})


# --- AWS -----------------------------------------------------------------------------------------


def check_engine(cfg: StackConfig, rt: Runtime) -> Iterator[Check]:
    # The config accepts one major only, the one the test suite runs (core/engine.py): RDS picks the minor.
    major = cfg.database.major_version
    family = parameter_group_family(major)
    for region in cfg.region_names:
        def one(region: str = region) -> Iterator[Check]:
            rds = rt.client("rds", region)
            kwargs: dict[str, Any] = {"Engine": "postgres", "DBParameterGroupFamily": family}
            offered: list[str] = []
            while True:
                resp = rds.describe_db_engine_versions(**kwargs)
                offered += [v["EngineVersion"] for v in resp.get("DBEngineVersions", [])
                            if v.get("Status", "available") == "available"]
                if not resp.get("Marker"):
                    break
                kwargs["Marker"] = resp["Marker"]
            offered.sort(key=_version_key)
            if not offered:
                yield problem("engine", f"{region}: RDS offers no PostgreSQL {major} here "
                                        f"(`aws rds describe-db-engine-versions --engine postgres --region {region}`); the "
                                        f"stack deploys only the major its tests run (core/engine.py): drop the region",
                              region=region)
            else:
                yield ok("engine", f"{region}: PostgreSQL {major} is offered (newest {offered[-1]})", region=region)
        yield from _guarded("engine", region, "rds", one)


def _allows(allowed: str, value: str) -> bool:
    """Whether RDS's ``AllowedValues`` (``"64-2147483647"``, ``"-1-2147483647"``, ``"0,1"``; empty:
    anything) admits ``value``."""
    if not allowed:
        return True
    for part in (p.strip() for p in allowed.split(",")):
        bounds = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
        if part == value or (bounds and re.fullmatch(r"-?\d+", value)
                             and int(bounds[1]) <= int(value) <= int(bounds[2])):
            return True
    return False


def check_parameters(cfg: StackConfig, rt: Runtime) -> Iterator[Check]:
    # Phases b/c set RDS_PARAMETERS in their parameter group. Some are part of the write guard (the
    # lease check refuses every write where max_prepared_transactions or max_notify_queue_pages is not
    # what it needs): a family that does not let the stack set one would leave every writer fenced.
    if cfg.phase == "a":
        return
    family = parameter_group_family(cfg.database.major_version)
    for region in cfg.region_names:
        def one(region: str = region) -> Iterator[Check]:
            rds = rt.client("rds", region)
            kwargs: dict[str, Any] = {"DBParameterGroupFamily": family}
            defaults: dict[str, dict[str, Any]] = {}
            while True:
                page = rds.describe_engine_default_parameters(**kwargs)["EngineDefaults"]
                defaults.update({p["ParameterName"]: p for p in page.get("Parameters", [])})
                if not page.get("Marker"):
                    break
                kwargs["Marker"] = page["Marker"]
            wrong = []
            for name, (value, _) in RDS_PARAMETERS.items():
                have = defaults.get(name)
                if have is None:
                    wrong.append(f"{name} does not exist in {family}")
                elif not have.get("IsModifiable", False):
                    wrong.append(f"{name} cannot be modified in {family}")
                elif not _allows(str(have.get("AllowedValues", "")), value):
                    wrong.append(f"{name} = {value} is outside {family}'s allowed values {have.get('AllowedValues')}")
            if wrong:
                yield problem("parameters", f"{region}: {'; '.join(wrong)}: the stack cannot deploy phase {cfg.phase} "
                                            "writers here (the write guard refuses every write without these values); "
                                            "drop the region, or ask AWS support", region=region, parameters=wrong)
            else:
                yield ok("parameters", f"{region}: {family} lets the stack set all {len(RDS_PARAMETERS)} replication "
                                       "parameters", region=region)
        yield from _guarded("parameters", region, "rds", one)


def check_lambda(cfg: StackConfig, rt: Runtime) -> Iterator[Check]:
    for region, need in cfg.reserved_concurrency.items():
        def one(region: str = region, need: int = need) -> Iterator[Check]:
            limits = rt.client("lambda", region).get_account_settings()["AccountLimit"]
            quota, unreserved = int(limits["ConcurrentExecutions"]), int(limits["UnreservedConcurrentExecutions"])
            floor = min(MIN_UNRESERVED, quota)
            left = unreserved - need
            data = {"region": region, "quota": quota, "unreserved": unreserved, "reserves": need}
            if left >= floor:
                yield ok("lambda", f"{region}: {unreserved} of {quota} concurrent executions unreserved; the stack reserves "
                                   f"{need}, leaving {left} (Lambda keeps {floor})", **data)
            else:
                yield problem("lambda", f"{region}: the stack reserves {need} (the fence agent) but {unreserved} of {quota} are "
                                        f"unreserved and Lambda keeps {floor}: request a higher quota (Service Quotas, AWS "
                                        f"Lambda, Concurrent executions, e.g. 1000) in {region}", **data)
        yield from _guarded("lambda", region, "lambda", one)


def check_arc(cfg: StackConfig, rt: Runtime) -> Iterator[Check]:
    if cfg.phase == "a":
        return

    def one() -> Iterator[Check]:
        resp = rt.client("route53-recovery-control-config", ARC_CONTROL_PLANE_REGION).list_clusters(MaxResults=5)
        yield ok("arc", f"the ARC control plane answers in {ARC_CONTROL_PLANE_REGION} "
                        f"({len(resp.get('Clusters', []))} cluster(s) listed)")

    yield from _guarded("arc", f"ARC control plane ({ARC_CONTROL_PLANE_REGION})", "route53-recovery-control-config", one)


@dataclass
class Zone:
    zone_id: str
    name: str
    name_servers: list[str]


def _hosted_zone(rt: Runtime, zone_id: str) -> Optional[Zone]:
    try:
        resp = rt.route53().get_hosted_zone(Id=zone_id)
    except ClientError as e:
        if error_code(e) == "NoSuchHostedZone":
            return None
        raise
    hz = resp["HostedZone"]
    if (hz.get("Config") or {}).get("PrivateZone"):
        return Zone(zone_id, _host(hz["Name"]), [])
    return Zone(zone_id, _host(hz["Name"]), [_host(n) for n in (resp.get("DelegationSet") or {}).get("NameServers", [])])


def check_zone(cfg: StackConfig, rt: Runtime, cf: Optional["CloudflareView"]) -> Iterator[Check]:
    dns = cfg.dns
    zone: Optional[Zone] = None

    def exists() -> Iterator[Check]:
        nonlocal zone
        expected = dns.zone_name or f"the zone of {dns.record_name}"
        found = _hosted_zone(rt, dns.zone_id)
        if found is None:
            yield problem("zone", f"dns.zone_id {dns.zone_id} does not exist in this account: create a public hosted zone for "
                                  f"{expected} (`aws route53 create-hosted-zone --name {dns.zone_name or '<zone>'} "
                                  "--caller-reference $(date +%s)`) and set dns.zone_id to its id")
        elif not found.name_servers:
            yield problem("zone", f"{dns.zone_id} ({found.name}) is a private zone: ACM and the public API need a public one")
        elif dns.zone_name is not None and found.name != dns.zone_name:
            yield problem("zone", f"{dns.zone_id} is the zone {found.name}, not dns.zone_name {dns.zone_name}; fix one of them")
        elif not within(dns.record_name, found.name):
            yield problem("zone", f"{dns.zone_id} is the zone {found.name}, which cannot hold {dns.record_name}; "
                                  "set dns.zone_id to the zone of that name")
        else:
            zone = found
            yield ok("zone", f"{dns.zone_id} is the public zone {found.name} (name servers {_list(found.name_servers)})")

    yield from _guarded("zone", f"Route 53 zone {dns.zone_id}", "route53", exists)
    if zone is None:
        return
    z = zone

    def resolvers() -> Iterator[Check]:
        seen = resolve_ns(rt, z.name)
        if _same(seen, z.name_servers):
            yield ok("delegation", f"public resolvers see {z.name} delegated to its Route 53 name servers: ACM can validate "
                                   "certificates there")
            return
        if cfg.phase == "c" and cfg.edge is not None:
            parent = f"the Cloudflare zone {cfg.edge.zone_name}"
            if cfg.edge.dns_authority == "route53":
                parent += f" and phase b's Route 53 zone {cfg.edge.route53_public_zone_id}"
            fix = f"add NS records for {z.name} to {parent} with the values {_list(z.name_servers)}"
        else:
            fix = f"point the registrar (or the parent zone) of {z.name} at {_list(z.name_servers)}"
        saw = f"{_list(seen)}" if seen else "no NS records"
        yield problem("delegation", f"public resolvers see {saw} for {z.name}, not this zone's name servers: ACM validation "
                                    f"would time out; {fix}", seen=seen, expected=z.name_servers)

    yield from _guarded("delegation", z.name, "dns", resolvers)
    if cfg.phase != "c" or cfg.edge is None:
        return
    edge = cfg.edge
    if cf is not None:
        def in_cloudflare(view: CloudflareView = cf) -> Iterator[Check]:
            records = view.reader.get(f"/zones/{edge.zone_id}/dns_records", type="NS", name=z.name) or []
            values = [r.get("content", "") for r in records]
            if _same(values, z.name_servers):
                yield ok("delegation", f"the Cloudflare zone {edge.zone_name} delegates {z.name} to Route 53")
            else:
                yield problem("delegation", f"the Cloudflare zone {edge.zone_name} delegates {z.name} to {_list(values)}: "
                                            f"add NS records {z.name} -> {_list(z.name_servers)} (DNS only), removing any other")
        yield from _guarded("delegation", f"Cloudflare zone {edge.zone_name}", "cloudflare", in_cloudflare)
    public_zone_id = edge.route53_public_zone_id
    if edge.dns_authority == "route53" and public_zone_id is not None:
        def in_route53(public: str = public_zone_id) -> Iterator[Check]:
            resp = rt.route53().list_resource_record_sets(HostedZoneId=public, StartRecordName=z.name,
                                                           StartRecordType="NS", MaxItems="1")
            values = [r["Value"] for s in resp.get("ResourceRecordSets", [])
                      if _host(s["Name"]) == z.name and s["Type"] == "NS" for r in s.get("ResourceRecords", [])]
            if _same(values, z.name_servers):
                yield ok("delegation", f"phase b's zone {public} delegates {z.name} to Route 53 (until Cloudflare answers)")
            else:
                yield problem("delegation", f"phase b's zone {public}, which still answers for {edge.zone_name}, delegates "
                                            f"{z.name} to {_list(values)}: add an NS record set {z.name} -> "
                                            f"{_list(z.name_servers)} there")
        yield from _guarded("delegation", f"Route 53 zone {public_zone_id}", "route53", in_route53)


# --- Cloudflare ------------------------------------------------------------------------------------


@dataclass
class CloudflareView:
    reader: CloudflareReader
    zone: dict[str, Any] = field(default_factory=dict)


def _covers(host: str, pattern: str) -> bool:
    pattern = _host(pattern)
    return pattern == host or (pattern.startswith("*.") and host.split(".", 1)[-1] == pattern[2:])


def check_cloudflare(cfg: StackConfig, rt: Runtime, stack: str, view: CloudflareView) -> Iterator[Check]:
    edge = cfg.edge
    assert edge is not None
    zone_path = f"/zones/{edge.zone_id}"

    def the_zone() -> Iterator[Check]:
        view.zone = view.reader.get(zone_path) or {}
        name, plan = _host(view.zone.get("name", "")), (view.zone.get("plan") or {}).get("legacy_id")
        if name != edge.zone_name:
            yield problem("cloudflare", f"edge.zone_id {edge.zone_id} is the zone {name or '?'}, not edge.zone_name "
                                        f"{edge.zone_name}; fix one of them")
        elif plan != edge.plan:
            yield problem("cloudflare", f"{name} is on the {plan} plan but edge.plan says {edge.plan} (it sets the purge "
                                        f"pacing and what the WAF may do): set plan: {plan}, or change the zone's plan")
        else:
            yield ok("cloudflare", f"{edge.zone_id} is {name}, {view.zone.get('status')}, on the {plan} plan")

    yield from _guarded("cloudflare", f"Cloudflare zone {edge.zone_id}", "cloudflare", the_zone)
    if not view.zone:
        return
    yield from _guarded("authority", edge.zone_name, "dns", lambda: _authority(cfg, edge, rt, view))
    yield from _guarded("rulesets", "rulesets", "cloudflare", lambda: _entry_points(edge, stack, view))

    def ssl() -> Iterator[Check]:
        mode = (view.reader.get(f"{zone_path}/settings/ssl") or {}).get("value")
        if mode == "strict":
            yield ok("ssl", f"{edge.zone_name} is on SSL mode Full (strict), which the stack pins")
        else:
            yield problem("ssl", f"{edge.zone_name} is on SSL mode {mode!r}; the stack pins Full (strict) for the whole zone, "
                                 "so every other proxied hostname's origin must then serve a valid certificate: check them, "
                                 "switch the zone to Full (strict) yourself, and run preflight again", mode=mode)

    yield from _guarded("ssl", edge.zone_name, "cloudflare", ssl)

    def certificate() -> Iterator[Check]:
        packs = view.reader.get(f"{zone_path}/ssl/certificate_packs", status="all") or []
        active = [p for p in packs if p.get("status") == "active" and any(_covers(edge.hostname, h) for h in p.get("hosts", []))]
        if active:
            yield ok("edge-cert", f"an active {active[0].get('type', 'edge')} certificate covers {edge.hostname}")
        else:
            yield problem("edge-cert", f"no active edge certificate covers {edge.hostname}: Universal SSL is issued only "
                                         "once the zone is active, so the first clients Cloudflare answers would fail TLS; "
                                         f"order an advanced certificate for {edge.hostname} (or upload one) and wait until "
                                         "it is active")

    yield from _guarded("edge-cert", edge.hostname, "cloudflare", certificate)


def _authority(cfg: StackConfig, edge: EdgeConfig, rt: Runtime, view: CloudflareView) -> Iterator[Check]:
    seen = resolve_ns(rt, edge.zone_name)
    cloudflare_ns = [_host(n) for n in view.zone.get("name_servers", [])]
    active = view.zone.get("status") == "active"
    if edge.dns_authority == "cloudflare":
        if active and _same(seen, cloudflare_ns):
            yield ok("authority", f"Cloudflare answers for {edge.zone_name} (zone active, delegated to {_list(cloudflare_ns)})")
        else:
            yield problem("authority", f"edge.dns_authority is cloudflare, but {edge.zone_name} is delegated to {_list(seen)} "
                                       f"(Cloudflare zone {view.zone.get('status')}): this up would delete the Route 53 "
                                       f"records that still answer for {edge.hostname}. Set dns_authority: route53 with "
                                       "route53_public_zone_id: <phase b's dns.zone_id> until the registrar points at "
                                       f"{_list(cloudflare_ns)} and the zone is active", seen=seen)
        return
    public_id = edge.route53_public_zone_id
    assert public_id is not None  # validated
    public = _hosted_zone(rt, public_id)
    if public is None or not public.name_servers:
        yield problem("authority", f"edge.route53_public_zone_id {public_id} is not a public zone of this account: it must "
                                   "be phase b's dns.zone_id")
        return
    resp = rt.route53().list_resource_record_sets(HostedZoneId=public_id, StartRecordName=edge.hostname, MaxItems="10")
    records = [s for s in resp.get("ResourceRecordSets", []) if _host(s["Name"]) == edge.hostname]
    if _same(seen, cloudflare_ns) and active:
        yield ok("authority", f"Cloudflare already answers for {edge.zone_name}: set dns_authority: cloudflare (and remove "
                              "route53_public_zone_id) to drop phase b's records and lock the origins to the edge")
    elif not records:
        yield problem("authority", f"{public_id} ({public.name}) holds no record for {edge.hostname}: "
                                   "route53_public_zone_id must be phase b's dns.zone_id, which answers for it")
    elif _same(seen, public.name_servers):
        yield ok("authority", f"Route 53 ({public_id}) answers for {edge.hostname} with {len(records)} record(s), which this "
                              f"up keeps. Next: point the registrar at {_list(cloudflare_ns)}, wait until the zone is active "
                              "and the old NS records have expired (their TTL, up to 48 h), run preflight, then "
                              "dns_authority: cloudflare")
    else:
        yield problem("authority", f"{edge.zone_name} is delegated to {_list(seen)}, neither phase b's zone "
                                   f"({_list(public.name_servers)}) nor Cloudflare ({_list(cloudflare_ns)}): fix the "
                                   "registrar first", seen=seen)


def _entry_points(edge: EdgeConfig, stack: str, view: CloudflareView) -> Iterator[Check]:
    zone_path = f"/zones/{edge.zone_id}"
    rulesets = view.reader.get(f"{zone_path}/rulesets") or []
    owned = set(edge.owns_entry_points or ())
    for key, phase in ENTRY_POINT_PHASES.items():
        entry = next((r for r in rulesets if r.get("kind") == "zone" and r.get("phase") == phase), None)
        ours = entry_point_ruleset_name(stack, key)
        if entry is None:
            yield ok("rulesets", f"{phase}: none yet; " + ("the stack creates it" if key in owned
                                                               else f"none is created ({key} is not in owns_entry_points)"))
            continue
        if entry.get("name") == ours:
            yield ok("rulesets", f"{phase}: {ours!r} ({entry.get('id')}) is this stack's own")
            continue
        rules = len((view.reader.get(f"{zone_path}/rulesets/{entry.get('id')}") or {}).get("rules") or [])
        what = f"{entry.get('name')!r} ({entry.get('id')}, {rules} rule(s))"
        if key in owned:
            yield problem("rulesets", f"{phase}: the zone already has the entry point {what}, which applies to every "
                                         "hostname; creating the stack's fails (\"A similar configuration with rules already "
                                         "exists\"), and taking it over would drop rules other hostnames rely on. Remove "
                                         f"{key} from edge.owns_entry_points and add the rules for {edge.hostname} to that "
                                         "ruleset yourself, or move its rules elsewhere and delete it", phase=phase,
                          ruleset=entry.get("id"), rules=rules)
        else:
            yield ok("rulesets", f"{phase}: {what} stays with the zone's owner; this stack adds nothing to it")


# --- the command -----------------------------------------------------------------------------------


def run_preflight(rt: Runtime, opts: PreflightOptions) -> int:
    assert rt.reporter is not None
    rep = rt.reporter
    path, cfg, pending = load_stack_config(opts.stack, opts.config_file)
    rep.emit("config", log.OK, f"{path}: phase {cfg.phase}, regions {', '.join(cfg.region_names)}: valid"
             + (f" but for {', '.join(k for k, _ in pending)}" if pending else ""))
    view: Optional[CloudflareView] = None
    checks: list[Iterable[Check]] = [check_engine(cfg, rt), check_parameters(cfg, rt), check_lambda(cfg, rt),
                                     check_arc(cfg, rt)]
    token_missing = False
    if cfg.phase == "c":
        token = rt.environ.get(TOKEN_ENV, "")
        if token:
            view = CloudflareView(CloudflareReader(rt, token, api_base(rt, "preflight")))
        else:
            token_missing = True
    checks.append(check_zone(cfg, rt, view))
    if view is not None:
        checks.append(check_cloudflare(cfg, rt, opts.stack, view))
    results: list[Check] = []

    def record(check: Check) -> None:
        results.append(check)
        rep.emit(check.step, log.OK if check.ok else log.PROBLEM, check.detail, **check.data)

    for key, message in pending:
        if key == UNDECIDED_KEY:
            owned = ", ".join(cfg.edge.owns_entry_points or ()) if cfg.edge else ""
            record(problem("config", f"{key} is not set: the rulesets lines below check the zone as if the stack "
                                     f"owned [{owned}]; list the entry points it may own (or []), then run preflight again"))
        else:
            record(problem("config", f"{key}: {message}"))
    if token_missing:
        record(problem("cloudflare", f"set {TOKEN_ENV} to the token of cloudflare:apiToken (read access to the zone, its "
                                     "DNS, settings, SSL certificates and rulesets); the Cloudflare checks did not run"))
    for group in checks:
        for check in group:
            record(check)
    problems = [c for c in results if not c.ok]
    if problems:
        raise Refused(f"{len(problems)} of {len(results)} checks found a problem: fix each as its line says, then run "
                      f"`python -m ops preflight --stack {opts.stack}` again (nothing was changed)", step="preflight")
    rep.emit("preflight", log.DONE, f"all {len(results)} checks ok: the account is ready for `pulumi up --stack {opts.stack}`")
    return 0
