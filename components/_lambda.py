"""The in-VPC Lambda recipe every component's functions follow (not a component itself).

The replication bootstrap (both database roles) and the fence agent are functions in a region's
private subnets that reach that region's writer and AWS APIs over HTTPS: `in_vpc_function` declares
one, with its role, security group and log group, the same way each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._iam import assume_role_policy
from components._kit import Component

#: The Lambda runtime of every function; CI tests `replication/` on this Python (.python-version).
LAMBDA_RUNTIME = "python3.12"
VPC_ACCESS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


def writer_client_group(owner: Component, who: str, *, region: str, vpc_id: Input[str], db_security_group_id: Input[str],
                        db_port: int, description: str, db_rule_description: str,
                        https_description: str) -> aws.ec2.SecurityGroup:
    """A security group for a Lambda that reaches its own region's writer and AWS APIs over HTTPS.

    The writer's group gains one ingress rule from this group on the database port; nothing else
    changes on the database side. Logical names are `{base}-{who}-sg-{region}` and so on.
    """
    sg = aws.ec2.SecurityGroup(owner.n(f"{who}-sg", region), region=region, vpc_id=vpc_id, description=description,
                               opts=owner.child)
    aws.vpc.SecurityGroupEgressRule(
        owner.n(f"{who}-out-db", region), region=region, security_group_id=sg.id, ip_protocol="tcp",
        from_port=db_port, to_port=db_port, referenced_security_group_id=db_security_group_id, opts=owner.child,
    )
    aws.vpc.SecurityGroupEgressRule(
        owner.n(f"{who}-out-https", region), region=region, security_group_id=sg.id, ip_protocol="tcp",
        from_port=443, to_port=443, cidr_ipv4="0.0.0.0/0", description=https_description, opts=owner.child,
    )
    aws.vpc.SecurityGroupIngressRule(
        owner.n(f"db-in-{who}", region), region=region, security_group_id=db_security_group_id, ip_protocol="tcp",
        from_port=db_port, to_port=db_port, referenced_security_group_id=sg.id, description=db_rule_description,
        opts=owner.child,
    )
    return sg


def function_logs(owner: Component, role: str, region: str, function: str, retention_days: int) -> aws.cloudwatch.LogGroup:
    """A function's log group `/aws/lambda/fraiseql-{stack}-{function}`, declared so that it has a
    retention (the one Lambda creates on its own never expires)."""
    return aws.cloudwatch.LogGroup(
        owner.n(role), region=region, name=f"/aws/lambda/fraiseql-{owner.labels.stack}-{function}",
        retention_in_days=retention_days, opts=owner.child,
    )


@dataclass(frozen=True, kw_only=True)
class NetworkPlace:
    """Where an in-VPC function runs and which writer it reaches."""

    region: str
    vpc_id: Input[str]
    subnet_ids: Sequence[Input[str]]        # private subnets: they reach AWS APIs through the NAT
    db_security_group_id: Input[str]
    db_port: int


@dataclass(frozen=True, kw_only=True)
class FunctionSpec:
    """What the function is: its code, handler and limits, its permissions and environment."""

    function: str                            # logical role of the function, e.g. `bootstrap` or `fence-agent`
    handler: str
    code: pulumi.Archive
    layers: Sequence[Input[str]]
    timeout: int
    memory_size: int
    policy: Input[str]                       # the role's inline policy document (JSON)
    environment: Input[Mapping[str, Input[str]]]
    log_retention_days: int
    reserved_concurrency: Optional[int] = None
    depends_on: Sequence[pulumi.Resource] = ()


@dataclass(frozen=True, kw_only=True)
class SecurityText:
    """The descriptions of the function's security group and of the rules it adds."""

    group: str
    db_rule: str
    https: str


def in_vpc_function(owner: Component, who: str, place: NetworkPlace, spec: FunctionSpec,
                    text: SecurityText) -> aws.lambda_.Function:
    """A function in a region's private subnets: a role Lambda assumes (VPC access plus `spec.policy`),
    a security group that reaches the region's writer and AWS APIs (`writer_client_group`), a log group
    with a retention, and the function itself.

    Logical names, each ending in `-{region}`: `{who}-role`, `{who}-vpc-access`, `{who}-policy`,
    `{who}-sg` (and its rules), `{who}-logs`, and `{spec.function}` for the function, whose log group is
    `/aws/lambda/fraiseql-{stack}-{spec.function}-{region}`.
    """
    r = place.region
    role = aws.iam.Role(owner.n(f"{who}-role", r), assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
                        opts=owner.child)
    aws.iam.RolePolicyAttachment(owner.n(f"{who}-vpc-access", r), role=role.name, policy_arn=VPC_ACCESS_POLICY,
                                 opts=owner.child)
    aws.iam.RolePolicy(owner.n(f"{who}-policy", r), role=role.name, policy=spec.policy, opts=owner.child)
    sg = writer_client_group(owner, who, region=r, vpc_id=place.vpc_id, db_security_group_id=place.db_security_group_id,
                             db_port=place.db_port, description=text.group, db_rule_description=text.db_rule,
                             https_description=text.https)
    logs = function_logs(owner, f"{who}-logs-{r}", r, f"{spec.function}-{r}", spec.log_retention_days)
    return aws.lambda_.Function(
        owner.n(spec.function, r),
        region=r,
        runtime=LAMBDA_RUNTIME,
        handler=spec.handler,
        role=role.arn,
        code=spec.code,
        layers=list(spec.layers),
        timeout=spec.timeout,
        memory_size=spec.memory_size,
        reserved_concurrent_executions=spec.reserved_concurrency,
        vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=list(place.subnet_ids), security_group_ids=[sg.id]),
        environment=aws.lambda_.FunctionEnvironmentArgs(variables=spec.environment),
        logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
        opts=ResourceOptions(parent=owner, depends_on=list(spec.depends_on)),
    )
