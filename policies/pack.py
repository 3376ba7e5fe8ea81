"""The policy objects of the `fraiseql-guardrails` pack. `__main__.py` only hands them to PolicyPack."""

from __future__ import annotations

from typing import Callable, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies import rules, security_rules

PACK_NAME = "fraiseql-guardrails"
MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY

BUDGET_CONFIG = PolicyConfigSchema(
    properties={
        "budgetUsd": {"type": "number", "exclusiveMinimum": 0,
                      "description": "overrides the budget the stack declares (aws.budgets.Budget limit)"},
        "advisoryFraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                             "description": "warn above this share of the budget (default: the stack's, else 0.9)"},
        "priceBook": {"type": "string", "description": "path of an alternative prices.json"},
    }
)


Check = Callable[..., list[rules.Finding]]


def _stack(check: Check, **kwargs: bool) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = list(args.resources)
        facts = rules.StackFacts.read(resources, dict(args.get_config() or {}))
        for message, urn in check(resources, facts, **kwargs):
            report(message, urn)

    return validate


def _database(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != rules.RDS:
        return
    protect = bool(args.opts and args.opts.protect)
    for message in rules.check_database(args, protect):
        report(message, None)  # None: the resource being validated


def _policy(name: str, description: str, check: Check, level: EnforcementLevel = MANDATORY,
            config: Optional[PolicyConfigSchema] = None, **kwargs: bool) -> StackValidationPolicy:
    return StackValidationPolicy(name=name, description=description, validate=_stack(check, **kwargs),
                                 enforcement_level=level, config_schema=config)


POLICIES = [
    _policy("monthly-budget", "Estimated monthly cost must not exceed the stack's budget.",
            rules.check_budget, MANDATORY, BUDGET_CONFIG, advisory=False),
    _policy("monthly-budget-warning", "Warn when the estimate passes the advisory share of the budget.",
            rules.check_budget, ADVISORY, BUDGET_CONFIG, advisory=True),
    _policy("unpriced-resources", "List resources the cost model cannot price (never counted as $0).",
            rules.check_unpriced, ADVISORY, BUDGET_CONFIG),
    _policy("known-unique-regions", "Regions are known AWS regions, each declared once.", rules.check_regions),
    _policy("disjoint-vpc-cidrs", "VPC CIDRs never overlap.", rules.check_vpc_cidrs),
    ResourceValidationPolicy(
        name="database-protection",
        description="Databases are encrypted, private, deletion-protected, backed up >= 7 days and Pulumi-protected.",
        validate=_database,
        enforcement_level=MANDATORY,
    ),
    _policy("replica-lag-alarm", "Every replica, and every multi-master pair, has a lag alarm at or below min(30 s, RPO/2).",
            rules.check_replica_lag_alarms),
    _policy("endpoint-health-check", "Every public regional endpoint has a health check.", rules.check_endpoint_health),
    _policy("database-port-private", "No security group opens the database port beyond the stack's VPCs.",
            rules.check_db_port_exposure),
    _policy("active-active-quorum", "Active-active runs an odd number (>= 3) of writers with a majority quorum.",
            rules.check_quorum),
    _policy("mesh-complete", "A mesh peers every pair of regions exactly once, with routes both ways.", rules.check_mesh),
    _policy("edge-never-caches-mutations", "The edge never caches mutations.", rules.check_edge_mutations),
    _policy("edge-pool-per-region", "Phase C: every region's origin is in a monitored pool of the load balancer.",
            rules.check_edge_pools),
    _policy("slo-feasible", "Declared RTO, RPO and latency targets are not below what the topology can reach.",
            rules.check_slo),
    *security_rules.POLICIES,
]
