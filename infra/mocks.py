"""Pulumi mocks that stand in for the engine and the providers, for the offline plan and the tests.

Outputs are derived from the inputs the way AWS derives them (ARNs from region and name, ALB DNS
names, RDS endpoints); nothing here decides what the program declares. Invokes the program does not
make on purpose fail loudly, so a new data-source call cannot slip through with a made-up answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.settings import get_project, get_stack

from core.regions import REGIONS

ACCOUNT = "123456789012"
# Canonical hosted-zone ids of ALBs (AWS publishes these per region).
ALB_ZONE_IDS = {"us-east-1": "Z35SXDOTRQ7X7K", "us-west-2": "Z1H1FL5HABSF5", "eu-west-1": "Z32O12XQLNTSW2"}


#: Properties pulumi-aws autonames when the program gives none: the logical name, "-", then 7 random
#: hex characters, within the limit of each type (pulumi-aws `provider/resources.go`; the RDS
#: identifier's 63 is AWS's own: the bridge would generate up to 255 and CreateDBInstance refuses it).
#: A name over the limit fails the real `preview` (the RDS identifier: the create); the mocks refuse it.
AUTONAMED: dict[str, tuple[str, int]] = {
    "aws:lb/loadBalancer:LoadBalancer": ("name", 32),
    "aws:lb/targetGroup:TargetGroup": ("name", 32),
    "aws:iam/role:Role": ("name", 64),
    "aws:lambda/function:Function": ("name", 64),
    "aws:cloudwatch/eventRule:EventRule": ("name", 64),
    "aws:sns/topic:Topic": ("name", 80),
    "aws:lambda/permission:Permission": ("statementId", 100),
    "aws:rds/instance:Instance": ("identifier", 63),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("name", 255),
}
#: "-" and the 7 random hex characters the provider appends.
AUTONAME_SUFFIX = 8


class UnknownInvoke(Exception):
    pass


class AutonameTooLong(Exception):
    pass


def check_autoname(typ: str, name: str, inputs: dict[str, Any]) -> None:
    """Refuse what pulumi-aws refuses: an autoname (logical name + 8) longer than the type allows."""
    if typ not in AUTONAMED:
        return
    prop, limit = AUTONAMED[typ]
    if inputs.get(prop) is None and len(name) + AUTONAME_SUFFIX > limit:
        raise AutonameTooLong(
            f"{typ} '{name}': its autoname '{name}-xxxxxxx' has {len(name) + AUTONAME_SUFFIX} characters, over the "
            f"{limit} that {prop} allows; shorten the logical name to {limit - AUTONAME_SUFFIX} characters or fewer")


def _service(typ: str) -> str:
    # "aws:rds/instance:Instance" -> "rds"
    return typ.split(":")[1].split("/")[0]


class PlanMocks(Mocks):
    def new_resource(self, args: MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        typ, name, inputs = args.typ, args.name, dict(args.inputs)
        check_autoname(typ, name, inputs)
        region = inputs.get("region", "us-east-1")
        out: dict[str, Any] = dict(inputs)
        rid = f"{name}-id"
        if typ.startswith("aws:"):
            svc = _service(typ)
            out.setdefault("arn", f"arn:aws:{svc}:{region}:{ACCOUNT}:{typ.split(':')[-1].lower()}/{name}")
        if typ == "aws:rds/instance:Instance":
            ident = inputs.get("identifier") or name
            out.update(
                identifier=ident,
                arn=f"arn:aws:rds:{region}:{ACCOUNT}:db:{ident}",
                address=f"{ident}.c0ffee.{region}.rds.amazonaws.com",
                endpoint=f"{ident}.c0ffee.{region}.rds.amazonaws.com:{inputs.get('port', 5432)}",
                resourceId=f"db-{ident.upper()}",
            )
            if inputs.get("manageMasterUserPassword"):
                out["masterUserSecrets"] = [
                    {
                        "secretArn": f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:rds!db-{ident}",
                        "kmsKeyId": inputs.get("masterUserSecretKmsKeyId"),
                        "secretStatus": "active",
                    }
                ]
        elif typ == "aws:lb/loadBalancer:LoadBalancer":
            # The ARN suffix is what CloudWatch's LoadBalancer dimension takes (app/<name>/<id>).
            suffix = f"app/{inputs.get('name') or name}/0123456789abcdef"
            out.update(dnsName=f"{name}-1234567890.{region}.elb.amazonaws.com", zoneId=ALB_ZONE_IDS.get(region, "ZALB"),
                       arnSuffix=suffix, arn=f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT}:loadbalancer/{suffix}")
        elif typ == "aws:lb/targetGroup:TargetGroup":
            suffix = f"targetgroup/{inputs.get('name') or name}/0123456789abcdef"
            out.update(arnSuffix=suffix, arn=f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT}:{suffix}")
        elif typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            out.update(arn=f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{inputs.get('name') or name}")
        elif typ == "aws:cloudwatch/dashboard:Dashboard":
            out.update(dashboardArn=f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{inputs['dashboardName']}")
        elif typ == "aws:acm/certificate:Certificate":
            names = [inputs["domainName"], *inputs.get("subjectAlternativeNames", [])]
            out["domainValidationOptions"] = [
                {
                    "domainName": d,
                    "resourceRecordName": f"_x1.{d}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": f"_x2.{d}.acm-validations.aws.",
                }
                for d in names
            ]
        elif typ == "aws:route53/record:Record":
            out["fqdn"] = inputs.get("name")
        elif typ == "aws:kms/key:Key":
            # A key id is a UUID, different for every key ever created (deterministic here per stack and name).
            key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{get_stack()}/{name}"))
            out.update(keyId=key_id, arn=f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}")
        elif typ == "aws:iam/role:Role":
            out.update(name=name, arn=f"arn:aws:iam::{ACCOUNT}:role/{name}")
        elif typ in (
            "aws:ecs/cluster:Cluster",
            "aws:ecs/service:Service",
            "aws:rds/subnetGroup:SubnetGroup",
            "aws:rds/parameterGroup:ParameterGroup",
            "aws:cloudwatch/logGroup:LogGroup",
            "aws:cloudwatch/eventRule:EventRule",
            "aws:lambda/function:Function",
            "aws:secretsmanager/secret:Secret",
        ):
            out.setdefault("name", name)
        elif typ == "aws:route53recoverycontrol/cluster:Cluster":
            # ARC clusters always expose five regional data-plane endpoints.
            out["clusterEndpoints"] = [
                {"region": r, "endpoint": f"https://{name}.route53-recovery-cluster.{r}.amazonaws.com/v1"}
                for r in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "ap-southeast-2")
            ]
        elif typ == "aws:route53/zone:Zone":
            out["zoneId"] = "Z" + "".join(c for c in name.upper() if c.isalnum())[:20]
        elif typ == "aws:route53/healthCheck:HealthCheck":
            rid = f"hc-{name}"
        elif typ == "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter":
            # The accepter manages the same connection from the peer region: its id is the pcx id.
            if isinstance(inputs.get("vpcPeeringConnectionId"), str):
                rid = inputs["vpcPeeringConnectionId"]
            out["acceptStatus"] = "active"
        elif typ == "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter":
            # A TGW peering attachment has one id on both sides; the accepter's id is that id.
            if isinstance(inputs.get("transitGatewayAttachmentId"), str):
                rid = inputs["transitGatewayAttachmentId"]
        return rid, out

    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override]  # the SDK also takes a bare dict
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            region = args.args.get("region", "us-east-1")
            # As many zones as the region really offers, so an az_count above that fails here as in AWS.
            letters = "abcdefgh"[: REGIONS[region].az_count]
            return {
                "names": [f"{region}{c}" for c in letters],
                "zoneIds": [f"{region[:3]}{region.split('-')[-1]}-az{i + 1}" for i in range(len(letters))],
                "id": region,
            }
        raise UnknownInvoke(f"the mocks do not know invoke {args.token}; add it to infra/mocks.py on purpose")


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    protect: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    #: Removing it from the program drops it from the state and leaves it in the cloud.
    retain_on_delete: bool = False

    @property
    def region(self) -> str:
        return self.inputs.get("region") or "global"


class RecordingMonitor(MockMonitor):
    """A mock monitor that also remembers parents, protect flags and property dependencies."""

    def __init__(self, mocks: Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self._aliases: dict[str, list[str]] = {}

    def _resolve_aliases(self, request) -> list[str]:
        """Old URNs this registration answers to, resolved the way the engine resolves alias specs:
        the resource's own aliases, plus one per alias of its parent (children follow a moved parent)."""
        stack, project = get_stack(), get_project()
        own: list[str] = list(request.aliasURNs)
        for alias in request.aliases:
            if alias.urn:
                own.append(alias.urn)
                continue
            spec = alias.spec
            parent = "" if spec.noParent else (spec.parentUrn or request.parent)
            own.append(_urn(spec.stack or stack, spec.project or project, parent,
                            spec.type or request.type, spec.name or request.name))
        inherited: list[str] = []
        parent_name = request.parent.rsplit("::", 1)[-1] if request.parent else ""
        for parent_alias in self._aliases.get(request.parent, []):
            for old in [_urn(stack, project, "", request.type, request.name), *own]:
                old_type, old_name = old.split("::")[2].split("$")[-1], old.rsplit("::", 1)[-1]
                if parent_name and old_name.startswith(parent_name):
                    old_name = parent_alias.rsplit("::", 1)[-1] + old_name[len(parent_name):]
                inherited.append(_urn(stack, project, parent_alias, old_type, old_name))
        return sorted(set(own + inherited))

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # The engine qualifies a type with its parent's whole type chain (SDK's create_urn does the same);
        # MockMonitor keeps only the nearest parent's type, which differs once components nest.
        return _urn(get_stack(), get_project(), parent, type_, name)

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        reg = self.resources.get(response.urn)
        self._aliases[response.urn] = self._resolve_aliases(request)
        inputs = rpc.deserialize_properties(request.object) if request.custom else {}
        self.registrations.append(
            Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=bool(request.custom),
                protect=bool(request.protect),
                inputs=inputs,
                outputs=dict(reg.state) if reg else {},
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                ignore_changes=list(request.ignoreChanges),
                dependencies=list(request.dependencies),
                aliases=self._aliases[response.urn],
                retain_on_delete=bool(request.retainOnDelete),
            )
        )
        return response


def _urn(stack: str, project: str, parent: str, type_: str, name: str) -> str:
    if parent and parent.split("::")[2] != "pulumi:pulumi:Stack":
        type_ = parent.split("::")[2] + "$" + type_
    return "urn:pulumi:" + "::".join([stack, project, type_, name])


def install(project: str, stack: str, preview: bool = False) -> RecordingMonitor:
    """Point the Pulumi runtime at fresh mocks; returns the monitor that records registrations."""
    pulumi.runtime.settings.ROOT.set(None)
    monitor = RecordingMonitor(PlanMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=preview, monitor=monitor)
    return monitor
