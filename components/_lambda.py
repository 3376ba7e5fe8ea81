"""Network plumbing shared by the components' in-VPC Lambdas (not a component itself)."""

from __future__ import annotations

from typing import Callable

import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from core.naming import logical_name


def writer_client_group(
    base: str,
    who: str,
    *,
    region: str,
    vpc_id: Input[str],
    db_security_group_id: Input[str],
    db_port: int,
    description: str,
    db_rule_description: str,
    https_description: str,
    tags: Callable[[str], dict[str, str]],
    opts: ResourceOptions,
) -> aws.ec2.SecurityGroup:
    """A security group for a Lambda that reaches its own region's writer and AWS APIs over HTTPS.

    The writer's group gains one ingress rule from this group on the database port; nothing else
    changes on the database side. Logical names are `{base}-{who}-sg-{region}` and so on.
    """
    sg = aws.ec2.SecurityGroup(
        logical_name(base, f"{who}-sg", region),
        region=region,
        vpc_id=vpc_id,
        description=description,
        tags=tags(f"{who}-sg-{region}"),
        opts=opts,
    )
    aws.vpc.SecurityGroupEgressRule(
        logical_name(base, f"{who}-out-db", region),
        region=region,
        security_group_id=sg.id,
        ip_protocol="tcp",
        from_port=db_port,
        to_port=db_port,
        referenced_security_group_id=db_security_group_id,
        opts=opts,
    )
    aws.vpc.SecurityGroupEgressRule(
        logical_name(base, f"{who}-out-https", region),
        region=region,
        security_group_id=sg.id,
        ip_protocol="tcp",
        from_port=443,
        to_port=443,
        cidr_ipv4="0.0.0.0/0",
        description=https_description,
        opts=opts,
    )
    aws.vpc.SecurityGroupIngressRule(
        logical_name(base, f"db-in-{who}", region),
        region=region,
        security_group_id=db_security_group_id,
        ip_protocol="tcp",
        from_port=db_port,
        to_port=db_port,
        referenced_security_group_id=sg.id,
        description=db_rule_description,
        opts=opts,
    )
    return sg
