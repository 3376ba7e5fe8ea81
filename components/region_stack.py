"""RegionStack: one region's network, security-group chain, ALB, ECS cluster and alert topic.

The FraiseQL service itself is `components.fraiseql_service.FraiseqlService`: it needs the database
endpoints, and the database needs this stack's subnets, so the program builds
RegionStack -> StreamingReplication | MultiMasterReplication -> FraiseqlService.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._iam import assume_role_policy
from components._kit import Component, Labels
from core.naming import short_logical_name
from core.planning import plan_subnets

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# ALB http-header condition values: at most 128 characters, and `*`/`?` are wildcards there.
_TOKEN = re.compile(r"^[A-Za-z0-9+/=_.~-]{32,128}$")


@dataclass(frozen=True, kw_only=True)
class OriginLock:
    """Phase C: only the edge reaches the origin. Two independent checks, so either one alone holds:
    the ALB's security group admits Cloudflare's published ranges only, and the listener answers
    403 unless the request carries the secret header the worker and the edge monitor send."""

    ipv4_cidrs: tuple[str, ...]
    header_name: str
    token: Input[str]


def check_origin_token(token: str) -> str:
    if not _TOKEN.match(token or ""):
        # Never echo the value: it is a secret.
        raise ValueError("fraiseql:origin_auth_token must be 32 to 128 characters of A-Z a-z 0-9 + / = _ . ~ - "
                         "(no * or ?: the ALB reads them as wildcards); e.g. `openssl rand -base64 32`")
    return token


def _validation_option(domain: str, options: Sequence[aws.acm.outputs.CertificateDomainValidationOption],
                       ) -> aws.acm.outputs.CertificateDomainValidationOption:
    return next(o for o in options if o.domain_name == domain)


@dataclass(frozen=True, kw_only=True)
class RegionStackArgs:
    region: str
    role: str
    vpc_cidr: str
    az_count: int
    nat_per_az: bool
    app_port: int
    health_path: str
    db_port: int
    # Hostnames the ALB certificate covers; empty means plain HTTP on port 80.
    certificate_names: tuple[str, ...] = ()
    zone_id: Optional[str] = None
    # Names whose validation records go to another zone than `zone_id` (name -> zone id).
    certificate_zone_ids: Mapping[str, str] = field(default_factory=dict)
    log_retention_days: int = 30
    alert_emails: tuple[str, ...] = ()
    # Phase C: the edge is the only way in (None: the internet, phases A and B).
    origin_lock: Optional[OriginLock] = None


#: The region's security groups: what each one is for. `fence` has no rule at all: the failover
#: runbook swaps it onto an old primary, so no client can reach it while RDS stays up for inspection.
SECURITY_GROUPS = {
    "alb": "FraiseQL ALB: HTTPS from the internet",
    "app": "FraiseQL tasks: traffic from the ALB only",
    "db": "PostgreSQL: from FraiseQL tasks only",
    "fence": "PostgreSQL fence: no traffic (used by the failover runbook)",
}
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class SecurityRule:
    """One rule of the chain. `peer` is another group of `SECURITY_GROUPS`, a CIDR, or `internet`:
    anywhere, or in phase C only Cloudflare's ranges. `port` `app` and `db` are the ports of
    `RegionStackArgs`; a `listen` rule repeats for each port the ALB listens on (443 and 80, or 80)."""

    role: str           # logical name `{name}-sgr-{role}`
    group: str
    direction: Literal["in", "out"]
    port: Literal["listen", "app", "db", "https"]
    peer: str
    description: str


#: The chain internet (or the edge) -> ALB -> tasks -> PostgreSQL, one rule a row.
SECURITY_CHAIN = (
    SecurityRule("alb-in-{port}", "alb", "in", "listen", "internet", "public API"),
    SecurityRule("alb-out-app", "alb", "out", "app", "app", "to FraiseQL tasks"),
    SecurityRule("app-in-alb", "app", "in", "app", "alb", "from the ALB"),
    SecurityRule("app-out-db", "app", "out", "db", "db", "to PostgreSQL in this region"),
    # Tasks pull images, fetch secrets and reach a cross-region writer over TLS endpoints.
    SecurityRule("app-out-https", "app", "out", "https", ANYWHERE, "AWS APIs and image registry"),
    SecurityRule("db-in-app", "db", "in", "db", "app", "from FraiseQL tasks"),
)
EDGE_ONLY = "Cloudflare edge only (infra/cloudflare-ips.json)"


@dataclass(frozen=True)
class _Network:
    subnets: dict[str, list[aws.ec2.Subnet]]
    private_route_tables: list[aws.ec2.RouteTable]
    database_route_table: aws.ec2.RouteTable


@dataclass(frozen=True)
class _LoadBalancer:
    alb: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    listener: aws.lb.Listener


class RegionStack(Component):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    database_subnet_ids: list[pulumi.Output[str]]
    database_route_table_id: pulumi.Output[str]
    private_route_table_ids: list[pulumi.Output[str]]
    alb_security_group_id: pulumi.Output[str]
    app_security_group_id: pulumi.Output[str]
    db_security_group_id: pulumi.Output[str]
    fence_security_group_id: pulumi.Output[str]
    db_subnet_group_name: pulumi.Output[str]
    alb_arn: pulumi.Output[str]
    alb_arn_suffix: pulumi.Output[str]
    alb_dns_name: pulumi.Output[str]
    alb_zone_id: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    target_group_arn_suffix: pulumi.Output[str]
    listener_arn: pulumi.Output[str]
    cluster_arn: pulumi.Output[str]
    cluster_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    execution_role_name: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    alerts_topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: RegionStackArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:region:RegionStack", name, labels=labels, opts=opts)
        self.args = args
        net = self._network()
        groups = self._security_groups()
        lb = self._load_balancer(net.subnets["public"], groups["alb"])
        self._service_platform()
        topic = self._alerts()

        self.private_subnet_ids = [s.id for s in net.subnets["private"]]
        self.database_subnet_ids = [s.id for s in net.subnets["database"]]
        self.database_route_table_id = net.database_route_table.id
        self.private_route_table_ids = [rt.id for rt in net.private_route_tables]
        self.alb_security_group_id = groups["alb"].id
        self.app_security_group_id = groups["app"].id
        self.db_security_group_id = groups["db"].id
        self.fence_security_group_id = groups["fence"].id
        self.db_subnet_group_name = aws.rds.SubnetGroup(
            self.n("db-subnets"),
            region=args.region,
            subnet_ids=self.database_subnet_ids,
            description=f"FraiseQL database subnets in {args.region}",
            opts=self.child,
        ).name
        self.alb_arn = lb.alb.arn
        self.alb_arn_suffix = lb.alb.arn_suffix
        self.alb_dns_name = lb.alb.dns_name
        self.alb_zone_id = lb.alb.zone_id
        self.target_group_arn = lb.target_group.arn
        self.target_group_arn_suffix = lb.target_group.arn_suffix
        self.listener_arn = lb.listener.arn
        self.alerts_topic_arn = topic.arn
        self.uses_https = bool(args.certificate_names)
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "albDnsName": self.alb_dns_name,
                "albZoneId": self.alb_zone_id,
                "clusterArn": self.cluster_arn,
                "alertsTopicArn": self.alerts_topic_arn,
            }
        )

    def _network(self) -> _Network:
        """The VPC: public, private and database subnets per AZ, NAT for the private tier, nothing out
        of the database tier (the network component adds inter-region routes when configured)."""
        args, r = self.args, self.args.region
        self.vpc = aws.ec2.Vpc(self.n("vpc"), region=r, cidr_block=args.vpc_cidr, enable_dns_hostnames=True,
                               enable_dns_support=True, opts=self.child)
        self.vpc_id = self.vpc.id
        igw = aws.ec2.InternetGateway(self.n("igw"), region=r, vpc_id=self.vpc.id, opts=self.child)
        azs = aws.get_availability_zones_output(region=r, state="available")
        # tier -> subnet role (`{tier}-{az index}`) -> subnet
        subnets: dict[str, dict[str, aws.ec2.Subnet]] = {"public": {}, "private": {}, "database": {}}
        for plan in plan_subnets(args.vpc_cidr, args.az_count):
            role = f"{plan.tier}-{plan.az_index}"
            subnets[plan.tier][role] = aws.ec2.Subnet(
                self.n(role), region=r, vpc_id=self.vpc.id, cidr_block=plan.cidr,
                availability_zone=azs.names[plan.az_index], map_public_ip_on_launch=False,
                tags={"tier": plan.tier}, opts=self.child,
            )
        public_rt = self._route_table("public", subnets["public"])
        aws.ec2.Route(self.n("route-public-internet"), region=r, route_table_id=public_rt.id,
                      destination_cidr_block=ANYWHERE, gateway_id=igw.id, opts=self.child)
        nats = []
        for i in range(args.az_count if args.nat_per_az else 1):
            eip = aws.ec2.Eip(self.n(f"nat-eip-{i}"), region=r, domain="vpc", opts=self.child)
            nats.append(aws.ec2.NatGateway(self.n(f"nat-{i}"), region=r, allocation_id=eip.id,
                                           subnet_id=subnets["public"][f"public-{i}"].id,
                                           opts=ResourceOptions(parent=self, depends_on=[igw])))
        private_rts = []
        for i, (role, subnet) in enumerate(subnets["private"].items()):
            rt = self._route_table(role, {role: subnet})
            aws.ec2.Route(self.n(f"route-private-{i}-nat"), region=r, route_table_id=rt.id, destination_cidr_block=ANYWHERE,
                          nat_gateway_id=nats[i if args.nat_per_az else 0].id, opts=self.child)
            private_rts.append(rt)
        # The database tier has no route to the internet at all; inter-region routes are added by
        # the network component when a topology is configured.
        return _Network({tier: list(of_tier.values()) for tier, of_tier in subnets.items()}, private_rts,
                        self._route_table("database", subnets["database"]))

    def _route_table(self, role: str, subnets: dict[str, aws.ec2.Subnet]) -> aws.ec2.RouteTable:
        """Route table `rt-{role}`, associated with each of `subnets` (by role) as `rta-{subnet role}`."""
        r = self.args.region
        rt = aws.ec2.RouteTable(self.n(f"rt-{role}"), region=r, vpc_id=self.vpc.id, opts=self.child)
        for subnet_role, subnet in subnets.items():
            aws.ec2.RouteTableAssociation(self.n(f"rta-{subnet_role}"), region=r, subnet_id=subnet.id,
                                          route_table_id=rt.id, opts=self.child)
        return rt

    def _security_groups(self) -> dict[str, aws.ec2.SecurityGroup]:
        """`SECURITY_GROUPS` and the rules of `SECURITY_CHAIN`. Phase C (an origin lock) admits only
        Cloudflare's published ranges, through a managed prefix list."""
        args, r, lock = self.args, self.args.region, self.args.origin_lock
        groups = {
            role: aws.ec2.SecurityGroup(self.n(f"sg-{role}"), region=r, vpc_id=self.vpc.id, description=text, opts=self.child)
            for role, text in SECURITY_GROUPS.items()
        }
        edge = None
        if lock is not None:
            edge = aws.ec2.ManagedPrefixList(
                self.n("edge-ranges"),
                region=r,
                name=f"fraiseql-{self.labels.stack}-cloudflare-ipv4",
                address_family="IPv4",
                # Room for Cloudflare to add ranges without a replacement; SG rules count max_entries.
                max_entries=len(lock.ipv4_cidrs) + 5,
                entries=[aws.ec2.ManagedPrefixListEntryArgs(cidr=c, description="Cloudflare edge") for c in lock.ipv4_cidrs],
                opts=self.child,
            )
        ports = {"app": args.app_port, "db": args.db_port, "https": 443}
        listen = (443, 80) if args.certificate_names else (80,)
        for rule in SECURITY_CHAIN:
            for port in listen if rule.port == "listen" else (ports[rule.port],):
                # The peer is one of the groups, the edge's prefix list, or a CIDR (`internet`: anywhere).
                from_edge = rule.peer == "internet" and edge is not None
                cidr = None
                if rule.peer not in groups and not from_edge:
                    cidr = ANYWHERE if rule.peer == "internet" else rule.peer
                make = aws.vpc.SecurityGroupIngressRule if rule.direction == "in" else aws.vpc.SecurityGroupEgressRule
                make(
                    self.n(f"sgr-{rule.role.format(port=port)}"),
                    region=r,
                    security_group_id=groups[rule.group].id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    referenced_security_group_id=groups[rule.peer].id if rule.peer in groups else None,
                    prefix_list_id=edge.id if from_edge and edge is not None else None,
                    cidr_ipv4=cidr,
                    description=EDGE_ONLY if from_edge else rule.description,
                    opts=self.child,
                )
        return groups

    def _load_balancer(self, public: list[aws.ec2.Subnet], alb_sg: aws.ec2.SecurityGroup) -> _LoadBalancer:
        """The public ALB, its target group and listener: HTTPS with a redirect from HTTP when the stack
        has certificate names, else plain HTTP. Phase C forwards only requests carrying the origin token."""
        args, r, lock = self.args, self.args.region, self.args.origin_lock
        # The ALB and target group autoname to their logical name + "-" + 7 hex characters, at most 32:
        # `fraiseql-ap-northeast-1-alb` would not fit, so both use the region's short code; `renamed`
        # keeps the resources (and their generated names) of a stack created under the long names.
        assert self.base_name.endswith("-" + r), "RegionStack is named {base}-{region}"
        base = self.base_name[: -len(r) - 1]
        alb = aws.lb.LoadBalancer(
            short_logical_name(base, "alb", r), region=r, load_balancer_type="application", internal=False,
            security_groups=[alb_sg.id], subnets=[s.id for s in public], drop_invalid_header_fields=True,
            opts=self.renamed("alb"),
        )
        tg = aws.lb.TargetGroup(
            short_logical_name(base, "tg", r), region=r, port=args.app_port, protocol="HTTP", target_type="ip",
            vpc_id=self.vpc.id, deregistration_delay=30,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=args.health_path, matcher="200", interval=10, timeout=5, healthy_threshold=2, unhealthy_threshold=2,
            ),
            opts=self.renamed("tg"),
        )
        forward = [aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=tg.arn)]
        if lock is not None:
            # Forwarding happens only in the origin-auth rule below; anything else is refused.
            forward = [aws.lb.ListenerDefaultActionArgs(
                type="fixed-response",
                fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                    content_type="application/json", status_code="403",
                    message_body='{"errors":[{"message":"use the public API hostname","extensions":{"code":"FORBIDDEN"}}]}',
                ),
            )]
        listener = self._listeners(alb, forward)
        if lock is not None:
            self._origin_auth(listener, tg, lock)
        return _LoadBalancer(alb, tg, listener)

    def _listeners(self, alb: aws.lb.LoadBalancer, forward: list[aws.lb.ListenerDefaultActionArgs]) -> aws.lb.Listener:
        """The listener the service is reached through (HTTPS, or HTTP without certificate names)."""
        r = self.args.region
        if not self.args.certificate_names:
            return aws.lb.Listener(self.n("http"), region=r, load_balancer_arn=alb.arn, port=80, protocol="HTTP",
                                   default_actions=forward, opts=self.child)
        cert = self._certificate()
        listener = aws.lb.Listener(
            self.n("https"), region=r, load_balancer_arn=alb.arn, port=443, protocol="HTTPS", ssl_policy=TLS_POLICY,
            certificate_arn=cert.certificate_arn, default_actions=forward, opts=self.child,
        )
        aws.lb.Listener(
            self.n("http-redirect"), region=r, load_balancer_arn=alb.arn, port=80, protocol="HTTP",
            default_actions=[aws.lb.ListenerDefaultActionArgs(
                type="redirect",
                redirect=aws.lb.ListenerDefaultActionRedirectArgs(port="443", protocol="HTTPS", status_code="HTTP_301"),
            )],
            opts=self.child,
        )
        return listener

    def _origin_auth(self, listener: aws.lb.Listener, tg: aws.lb.TargetGroup, lock: OriginLock) -> None:
        """Phase C: forward only requests that carry the origin token in `lock.header_name`."""
        aws.lb.ListenerRule(
            self.n("origin-auth"),
            region=self.args.region,
            listener_arn=listener.arn,
            # After the fence rule (priority 1), which must still answer a fenced region's health path.
            priority=10,
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=tg.arn)],
            conditions=[aws.lb.ListenerRuleConditionArgs(
                http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(
                    http_header_name=lock.header_name,
                    # The one place the token is a resource input: an ALB can only compare a header
                    # with a value it holds. It stays a secret in Pulumi state.
                    values=[pulumi.Output.secret(lock.token).apply(check_origin_token)],
                ),
            )],
            opts=ResourceOptions(parent=self, additional_secret_outputs=["conditions"]),
        )

    def _service_platform(self) -> None:
        """What the region's FraiseQL service runs on: the ECS cluster, its log group and task roles."""
        args, r = self.args, self.args.region
        cluster = aws.ecs.Cluster(
            self.n("cluster"), region=r, settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            opts=self.child,
        )
        log_group = aws.cloudwatch.LogGroup(
            self.n("logs"), region=r, name=f"/fraiseql/{self.labels.stack}/{r}", retention_in_days=args.log_retention_days,
            opts=self.child,
        )
        assume = assume_role_policy("ecs-tasks.amazonaws.com")
        execution_role = aws.iam.Role(self.n("task-exec-role"), assume_role_policy=assume, opts=self.child)
        aws.iam.RolePolicyAttachment(
            self.n("task-exec-policy"), role=execution_role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy", opts=self.child,
        )
        task_role = aws.iam.Role(self.n("task-role"), assume_role_policy=assume, opts=self.child)
        self.cluster_arn, self.cluster_name = cluster.arn, cluster.name
        self.log_group_name = log_group.name
        self.execution_role_arn, self.execution_role_name = execution_role.arn, execution_role.name
        self.task_role_arn = task_role.arn

    def _alerts(self) -> aws.sns.Topic:
        """The region's alert topic, with each of `alert_emails` subscribed."""
        r = self.args.region
        topic = aws.sns.Topic(self.n("alerts"), region=r, opts=self.child)
        for email in self.args.alert_emails:
            aws.sns.TopicSubscription(self.n(f"alerts-{email}"), region=r, topic=topic.arn, protocol="email", endpoint=email,
                                      opts=self.child)
        return topic

    def _certificate(self) -> aws.acm.CertificateValidation:
        """A certificate in this region for the API hostnames, DNS-validated in the hosted zone."""
        args = self.args
        primary, *alternates = args.certificate_names
        cert = aws.acm.Certificate(
            self.n("cert"),
            region=args.region,
            domain_name=primary,
            subject_alternative_names=alternates,
            validation_method="DNS",
            opts=ResourceOptions(parent=self, delete_before_replace=False),
        )
        records = []
        for domain in args.certificate_names:
            option = cert.domain_validation_options.apply(partial(_validation_option, domain))
            # ACM issues the same validation CNAME for a name in every region of an account, so each
            # region's stack writes the one record all of them share. Removing a region must not
            # delete it: the other regions' certificates renew through it. The record stays in the
            # zone when its last region (or the stack) goes; it validates nothing else.
            records.append(
                aws.route53.Record(
                    self.n(f"cert-validation-{domain}"),
                    zone_id=args.certificate_zone_ids.get(domain, args.zone_id),
                    name=option.resource_record_name,
                    type=option.resource_record_type,
                    records=[option.resource_record_value],
                    ttl=300,
                    allow_overwrite=True,
                    opts=ResourceOptions(parent=self, retain_on_delete=True),
                )
            )
        return aws.acm.CertificateValidation(
            self.n("cert-validation"),
            region=args.region,
            certificate_arn=cert.arn,
            validation_record_fqdns=[rec.fqdn for rec in records],
            opts=self.child,
        )
