"""FraiseqlService: the FraiseQL container on ECS Fargate behind a RegionStack's ALB, with autoscaling."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels

CONTAINER = "fraiseql"


@dataclass(frozen=True, kw_only=True)
class FraiseqlServiceArgs:
    region: str
    role: str
    image: str
    cpu: int
    memory: int
    arch: str
    port: int
    health_path: str
    desired_count: int
    max_count: int
    cpu_target_percent: int
    cluster_arn: Input[str]
    cluster_name: Input[str]
    subnet_ids: Sequence[Input[str]]
    security_group_id: Input[str]
    target_group_arn: Input[str]
    listener_arn: Input[str]
    log_group_name: Input[str]
    execution_role_arn: Input[str]
    execution_role_name: Input[str]
    task_role_arn: Input[str]
    # Stable private DNS names: writes go to the current writer (across regions on a standby),
    # reads to this region's copy.
    writer_host: Input[str]
    reader_host: Input[str]
    db_port: int
    db_name: str
    db_secret_arn: Input[str]               # the app role's secret, in this region
    #: What gives that secret its value (the bootstrap run): a task whose secret has no value fails to
    #: start (ResourceInitializationError), so the service is created after it. None: nothing fills
    #: it in this update (a region still seeding from another's writer): the service runs no task
    #: until its region's bootstrap exists, and `pulumi up` does not wait for it.
    secret_filled_by: Optional[pulumi.Resource]
    db_secret_kms_key_arn: Input[str]       # this region's key
    # verify-full where the hosts are instance endpoints (the RDS certificate names them); verify-ca
    # where they are the private CNAMEs a phase A failover moves (no RDS certificate names those).
    db_sslmode: str = "verify-ca"
    # The image must carry the RDS CA bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem).
    db_sslrootcert: str = "/etc/ssl/certs/rds-global-bundle.pem"
    # Phase A standby: where mutations go while the writer is in another region (no private path there).
    write_forward_url: Optional[str] = None


class FraiseqlService(Component):
    service_name: pulumi.Output[str]

    def __init__(self, name: str, args: FraiseqlServiceArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:app:FraiseqlService", name, labels=labels, opts=opts)
        r = args.region

        # The execution role fetches the database credentials at task start, from this region only;
        # nothing else can read them. ECS reads them at task start only: after a password change the
        # tasks are restarted (README, Security model).
        aws.iam.RolePolicy(
            self.n("read-db-secret"),
            role=args.execution_role_name,
            policy=pulumi.Output.all(args.db_secret_arn, args.db_secret_kms_key_arn).apply(
                lambda a: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": a[0]},
                            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": a[1],
                             "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{r}.amazonaws.com"}}},
                        ],
                    }
                )
            ),
            opts=self.child,
        )

        container = pulumi.Output.all(
            args.writer_host, args.reader_host, args.db_secret_arn, args.log_group_name
        ).apply(
            lambda a: json.dumps(
                [
                    {
                        "name": CONTAINER,
                        "image": args.image,
                        "essential": True,
                        "portMappings": [{"containerPort": args.port, "protocol": "tcp"}],
                        "environment": [
                            {"name": "FRAISEQL_REGION", "value": r},
                            {"name": "FRAISEQL_REGION_ROLE", "value": args.role},
                            {"name": "FRAISEQL_DB_WRITER_HOST", "value": a[0]},
                            {"name": "FRAISEQL_DB_READER_HOST", "value": a[1]},
                            {"name": "FRAISEQL_DB_PORT", "value": str(args.db_port)},
                            {"name": "FRAISEQL_DB_NAME", "value": args.db_name},
                            {"name": "FRAISEQL_DB_SSLMODE", "value": args.db_sslmode},
                            {"name": "FRAISEQL_DB_SSLROOTCERT", "value": args.db_sslrootcert},
                            {"name": "FRAISEQL_HEALTH_PATH", "value": args.health_path},
                            *([{"name": "FRAISEQL_WRITE_FORWARD_URL", "value": args.write_forward_url}]
                              if args.write_forward_url else []),
                        ],
                        "secrets": [
                            {"name": "FRAISEQL_DB_USER", "valueFrom": f"{a[2]}:username::"},
                            {"name": "FRAISEQL_DB_PASSWORD", "valueFrom": f"{a[2]}:password::"},
                        ],
                        # The health endpoint checks the database too: a task whose database is
                        # unreachable is replaced, and the ALB/Route 53 checks see the same answer.
                        "healthCheck": {
                            "command": ["CMD-SHELL", f"curl -fsS http://127.0.0.1:{args.port}{args.health_path} || exit 1"],
                            "interval": 15,
                            "timeout": 5,
                            "retries": 3,
                            "startPeriod": 30,
                        },
                        "logConfiguration": {
                            "logDriver": "awslogs",
                            "options": {"awslogs-group": a[3], "awslogs-region": r, "awslogs-stream-prefix": "fraiseql"},
                        },
                        "readonlyRootFilesystem": True,
                    }
                ]
            )
        )
        task = aws.ecs.TaskDefinition(
            self.n("task"),
            region=r,
            family=f"fraiseql-{labels.stack}-{r}",
            cpu=str(args.cpu),
            memory=str(args.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture="ARM64" if args.arch == "arm64" else "X86_64"
            ),
            execution_role_arn=args.execution_role_arn,
            task_role_arn=args.task_role_arn,
            container_definitions=container,
            opts=self.child,
        )
        serving = args.secret_filled_by is not None
        desired = args.desired_count if serving else 0
        service = aws.ecs.Service(
            self.n("service"),
            region=r,
            cluster=args.cluster_arn,
            task_definition=task.arn,
            desired_count=desired,
            launch_type="FARGATE",
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.subnet_ids, security_groups=[args.security_group_id], assign_public_ip=False
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(target_group_arn=args.target_group_arn, container_name=CONTAINER, container_port=args.port)
            ],
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            health_check_grace_period_seconds=60,
            # `pulumi up` waits until the tasks run and pass their health checks, so a deployment the
            # circuit breaker stops (a task that cannot start) fails the update instead of reporting
            # success with no task running.
            wait_for_steady_state=serving,
            propagate_tags="SERVICE",
            # Autoscaling owns the running count after creation.
            opts=ResourceOptions(parent=self, ignore_changes=["desiredCount"],
                                 depends_on=[args.secret_filled_by] if args.secret_filled_by is not None else []),
        )
        target = aws.appautoscaling.Target(
            self.n("scaling-target"),
            region=r,
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", service.name),
            min_capacity=desired,
            max_capacity=args.max_count,
            opts=self.child,
        )
        aws.appautoscaling.Policy(
            self.n("scaling-cpu"),
            region=r,
            policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace,
            scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                target_value=args.cpu_target_percent,
                predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                    predefined_metric_type="ECSServiceAverageCPUUtilization"
                ),
                scale_in_cooldown=120,
                scale_out_cooldown=60,
            ),
            opts=self.child,
        )
        self.service_name = service.name
        self.register_outputs({"serviceName": self.service_name, "taskDefinitionArn": task.arn})
