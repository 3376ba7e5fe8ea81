"""RegionStack: one region's network, security-group chain, ALB, ECS cluster and alert topic.

The FraiseQL service itself is `components.fraiseql_service.FraiseqlService`: it needs the database
endpoints, and the database needs this stack's subnets, so the program builds
RegionStack -> StreamingReplication | MultiMasterReplication -> FraiseqlService.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._iam import assume_role_policy
from core.naming import logical_name, merge_tags, short_logical_name
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
    phase: str
    stack: str
    # Hostnames the ALB certificate covers; empty means plain HTTP on port 80.
    certificate_names: tuple[str, ...] = ()
    zone_id: Optional[str] = None
    # Names whose validation records go to another zone than `zone_id` (name -> zone id).
    certificate_zone_ids: Mapping[str, str] = field(default_factory=dict)
    log_retention_days: int = 30
    alert_emails: tuple[str, ...] = ()
    # Phase C: the edge is the only way in (None: the internet, phases A and B).
    origin_lock: Optional[OriginLock] = None
    tags: dict[str, str] = field(default_factory=dict)


class RegionStack(pulumi.ComponentResource):
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
    task_role_arn: pulumi.Output[str]
    alerts_topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: RegionStackArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:region:RegionStack", name, None, opts)
        self.args = args
        r = args.region
        child = ResourceOptions(parent=self)

        def n(role: str) -> str:
            return logical_name(name, role)

        def tags(role: str) -> dict[str, str]:
            return merge_tags(
                args.tags, name=n(role), phase=args.phase, stack=args.stack, component="RegionStack"
            )

        self.vpc = aws.ec2.Vpc(
            n("vpc"),
            region=r,
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags("vpc"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(n("igw"), region=r, vpc_id=self.vpc.id, tags=tags("igw"), opts=child)
        azs = aws.get_availability_zones_output(region=r, state="available")

        subnets: dict[str, list[aws.ec2.Subnet]] = {"public": [], "private": [], "database": []}
        for plan in plan_subnets(args.vpc_cidr, args.az_count):
            role = f"{plan.tier}-{plan.az_index}"
            subnets[plan.tier].append(
                aws.ec2.Subnet(
                    n(role),
                    region=r,
                    vpc_id=self.vpc.id,
                    cidr_block=plan.cidr,
                    availability_zone=azs.names[plan.az_index],
                    map_public_ip_on_launch=False,
                    tags={**tags(role), "tier": plan.tier},
                    opts=child,
                )
            )

        public_rt = aws.ec2.RouteTable(n("rt-public"), region=r, vpc_id=self.vpc.id, tags=tags("rt-public"), opts=child)
        aws.ec2.Route(
            n("route-public-internet"),
            region=r,
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        for i, s in enumerate(subnets["public"]):
            aws.ec2.RouteTableAssociation(n(f"rta-public-{i}"), region=r, subnet_id=s.id, route_table_id=public_rt.id, opts=child)

        nat_count = args.az_count if args.nat_per_az else 1
        nats = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(n(f"nat-eip-{i}"), region=r, domain="vpc", tags=tags(f"nat-eip-{i}"), opts=child)
            nats.append(
                aws.ec2.NatGateway(
                    n(f"nat-{i}"),
                    region=r,
                    allocation_id=eip.id,
                    subnet_id=subnets["public"][i].id,
                    tags=tags(f"nat-{i}"),
                    opts=ResourceOptions(parent=self, depends_on=[igw]),
                )
            )

        private_rts = []
        for i, s in enumerate(subnets["private"]):
            rt = aws.ec2.RouteTable(n(f"rt-private-{i}"), region=r, vpc_id=self.vpc.id, tags=tags(f"rt-private-{i}"), opts=child)
            aws.ec2.Route(
                n(f"route-private-{i}-nat"),
                region=r,
                route_table_id=rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nats[i if args.nat_per_az else 0].id,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(n(f"rta-private-{i}"), region=r, subnet_id=s.id, route_table_id=rt.id, opts=child)
            private_rts.append(rt)

        # The database tier has no route to the internet at all; inter-region routes are added by
        # the network component when a topology is configured.
        db_rt = aws.ec2.RouteTable(n("rt-database"), region=r, vpc_id=self.vpc.id, tags=tags("rt-database"), opts=child)
        for i, s in enumerate(subnets["database"]):
            aws.ec2.RouteTableAssociation(n(f"rta-database-{i}"), region=r, subnet_id=s.id, route_table_id=db_rt.id, opts=child)

        alb_sg, app_sg, db_sg = (
            aws.ec2.SecurityGroup(
                n(f"sg-{role}"),
                region=r,
                vpc_id=self.vpc.id,
                description=desc,
                tags=tags(f"sg-{role}"),
                opts=child,
            )
            for role, desc in (
                ("alb", "FraiseQL ALB: HTTPS from the internet"),
                ("app", "FraiseQL tasks: traffic from the ALB only"),
                ("db", "PostgreSQL: from FraiseQL tasks only"),
            )
        )
        # An empty group the failover runbook swaps onto an old primary to fence it: no rule at all
        # means no client can reach it, while RDS itself stays up for later inspection.
        fence_sg = aws.ec2.SecurityGroup(
            n("sg-fence"),
            region=r,
            vpc_id=self.vpc.id,
            description="PostgreSQL fence: no traffic (used by the failover runbook)",
            tags=tags("sg-fence"),
            opts=child,
        )
        listen_ports = (443, 80) if args.certificate_names else (80,)
        lock = args.origin_lock
        edge_ranges = None
        if lock is not None:
            edge_ranges = aws.ec2.ManagedPrefixList(
                n("edge-ranges"),
                region=r,
                name=f"fraiseql-{args.stack}-cloudflare-ipv4",
                address_family="IPv4",
                # Room for Cloudflare to add ranges without a replacement; SG rules count max_entries.
                max_entries=len(lock.ipv4_cidrs) + 5,
                entries=[aws.ec2.ManagedPrefixListEntryArgs(cidr=c, description="Cloudflare edge") for c in lock.ipv4_cidrs],
                tags=tags("edge-ranges"),
                opts=child,
            )
        for port in listen_ports:
            aws.vpc.SecurityGroupIngressRule(
                n(f"sgr-alb-in-{port}"),
                region=r,
                security_group_id=alb_sg.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=None if edge_ranges is not None else "0.0.0.0/0",
                prefix_list_id=edge_ranges.id if edge_ranges is not None else None,
                description="Cloudflare edge only (infra/cloudflare-ips.json)" if edge_ranges is not None else "public API",
                opts=child,
            )
        aws.vpc.SecurityGroupEgressRule(
            n("sgr-alb-out-app"),
            region=r,
            security_group_id=alb_sg.id,
            ip_protocol="tcp",
            from_port=args.app_port,
            to_port=args.app_port,
            referenced_security_group_id=app_sg.id,
            description="to FraiseQL tasks",
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            n("sgr-app-in-alb"),
            region=r,
            security_group_id=app_sg.id,
            ip_protocol="tcp",
            from_port=args.app_port,
            to_port=args.app_port,
            referenced_security_group_id=alb_sg.id,
            description="from the ALB",
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            n("sgr-app-out-db"),
            region=r,
            security_group_id=app_sg.id,
            ip_protocol="tcp",
            from_port=args.db_port,
            to_port=args.db_port,
            referenced_security_group_id=db_sg.id,
            description="to PostgreSQL in this region",
            opts=child,
        )
        # Tasks pull images, fetch secrets and reach a cross-region writer over TLS endpoints.
        aws.vpc.SecurityGroupEgressRule(
            n("sgr-app-out-https"),
            region=r,
            security_group_id=app_sg.id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4="0.0.0.0/0",
            description="AWS APIs and image registry",
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            n("sgr-db-in-app"),
            region=r,
            security_group_id=db_sg.id,
            ip_protocol="tcp",
            from_port=args.db_port,
            to_port=args.db_port,
            referenced_security_group_id=app_sg.id,
            description="from FraiseQL tasks",
            opts=child,
        )

        db_subnet_group = aws.rds.SubnetGroup(
            n("db-subnets"),
            region=r,
            subnet_ids=[s.id for s in subnets["database"]],
            description=f"FraiseQL database subnets in {r}",
            tags=tags("db-subnets"),
            opts=child,
        )

        # The ALB and target group autoname to their logical name + "-" + 7 hex characters, at most 32:
        # `fraiseql-ap-northeast-1-alb` would not fit, so both use the region's short code; the alias
        # keeps the resources (and their generated names) of a stack created under the long names.
        assert name.endswith("-" + r), "RegionStack is named {base}-{region}"
        base = name[: -len(r) - 1]

        def lb_opts(role: str) -> ResourceOptions:
            return ResourceOptions(parent=self, aliases=[pulumi.Alias(name=n(role))])

        alb = aws.lb.LoadBalancer(
            short_logical_name(base, "alb", r),
            region=r,
            load_balancer_type="application",
            internal=False,
            security_groups=[alb_sg.id],
            subnets=[s.id for s in subnets["public"]],
            drop_invalid_header_fields=True,
            tags=tags("alb"),
            opts=lb_opts("alb"),
        )
        tg = aws.lb.TargetGroup(
            short_logical_name(base, "tg", r),
            region=r,
            port=args.app_port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=self.vpc.id,
            deregistration_delay=30,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=args.health_path,
                matcher="200",
                interval=10,
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=2,
            ),
            tags=tags("tg"),
            opts=lb_opts("tg"),
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
        if args.certificate_names:
            cert = self._certificate(name, args, tags)
            listener = aws.lb.Listener(
                n("https"),
                region=r,
                load_balancer_arn=alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=TLS_POLICY,
                certificate_arn=cert.certificate_arn,
                default_actions=forward,
                opts=child,
            )
            aws.lb.Listener(
                n("http-redirect"),
                region=r,
                load_balancer_arn=alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="redirect",
                        redirect=aws.lb.ListenerDefaultActionRedirectArgs(port="443", protocol="HTTPS", status_code="HTTP_301"),
                    )
                ],
                opts=child,
            )
        else:
            listener = aws.lb.Listener(
                n("http"), region=r, load_balancer_arn=alb.arn, port=80, protocol="HTTP", default_actions=forward, opts=child
            )

        if lock is not None:
            aws.lb.ListenerRule(
                n("origin-auth"),
                region=r,
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
                tags=tags("origin-auth"),
                opts=ResourceOptions(parent=self, additional_secret_outputs=["conditions"]),
            )

        cluster = aws.ecs.Cluster(
            n("cluster"),
            region=r,
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            tags=tags("cluster"),
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            n("logs"),
            region=r,
            name=f"/fraiseql/{args.stack}/{r}",
            retention_in_days=args.log_retention_days,
            tags=tags("logs"),
            opts=child,
        )
        assume = assume_role_policy("ecs-tasks.amazonaws.com")
        execution_role = aws.iam.Role(n("task-exec-role"), assume_role_policy=assume, tags=tags("task-exec-role"), opts=child)
        aws.iam.RolePolicyAttachment(
            n("task-exec-policy"),
            role=execution_role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
            opts=child,
        )
        task_role = aws.iam.Role(n("task-role"), assume_role_policy=assume, tags=tags("task-role"), opts=child)

        topic = aws.sns.Topic(n("alerts"), region=r, tags=tags("alerts"), opts=child)
        for email in args.alert_emails:
            aws.sns.TopicSubscription(
                n(f"alerts-{email}"), region=r, topic=topic.arn, protocol="email", endpoint=email, opts=child
            )

        self.vpc_id = self.vpc.id
        self.private_subnet_ids = [s.id for s in subnets["private"]]
        self.database_subnet_ids = [s.id for s in subnets["database"]]
        self.database_route_table_id = db_rt.id
        self.private_route_table_ids = [rt.id for rt in private_rts]
        self.alb_security_group_id = alb_sg.id
        self.app_security_group_id = app_sg.id
        self.db_security_group_id = db_sg.id
        self.fence_security_group_id = fence_sg.id
        self.db_subnet_group_name = db_subnet_group.name
        self.alb_arn = alb.arn
        self.alb_arn_suffix = alb.arn_suffix
        self.target_group_arn_suffix = tg.arn_suffix
        self.alb_dns_name = alb.dns_name
        self.alb_zone_id = alb.zone_id
        self.target_group_arn = tg.arn
        self.listener_arn = listener.arn
        self.cluster_arn = cluster.arn
        self.cluster_name = cluster.name
        self.log_group_name = log_group.name
        self.execution_role_arn = execution_role.arn
        self.execution_role_name = execution_role.name
        self.task_role_arn = task_role.arn
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

    def _certificate(self, name: str, args: RegionStackArgs, tags) -> aws.acm.CertificateValidation:
        """A certificate in this region for the API hostnames, DNS-validated in the hosted zone."""
        child = ResourceOptions(parent=self)
        primary, *alternates = args.certificate_names
        cert = aws.acm.Certificate(
            logical_name(name, "cert"),
            region=args.region,
            domain_name=primary,
            subject_alternative_names=alternates,
            validation_method="DNS",
            tags=tags("cert"),
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
                    logical_name(name, f"cert-validation-{domain}"),
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
            logical_name(name, "cert-validation"),
            region=args.region,
            certificate_arn=cert.arn,
            validation_record_fqdns=[rec.fqdn for rec in records],
            opts=child,
        )
