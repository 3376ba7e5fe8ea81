"""The stack manifest: what a stack declares about itself, for the policy pack and the runbooks.

The program stores it as an SSM parameter (`/fraiseql/<stack>/manifest`). The policy pack finds that
resource among the stack's own resources, so budgets and SLO targets are written once, in stack
config, and reach preview-time policies without a second copy in policy config.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from core.membership import majority, routing_rule

if TYPE_CHECKING:
    from core.config import StackConfig

MANIFEST_TYPE = "aws:ssm/parameter:Parameter"
MANIFEST_NAME = "fraiseql-manifest"
VERSION = 1


def build_manifest(cfg: "StackConfig", stack: str) -> dict[str, Any]:
    multi = cfg.phase != "a"
    members, nxt = (cfg.quorum_members, cfg.quorum_next_members) if multi else ([], None)
    asserted, threshold = routing_rule(cfg.region_names, members, nxt) if members else ([], None)
    return {
        "version": VERSION,
        "stack": stack,
        "phase": cfg.phase,
        "regions": [{"name": r.name, "role": r.role, "cidr": r.cidr} for r in cfg.regions],
        # Regions whose database takes writes: a region still seeding is a read replica.
        "write_regions": cfg.writers,
        "seeding": cfg.seeding,
        "quorum": majority(len(members)) if members else None,
        "quorum_members": members if multi else None,
        "quorum_next_members": nxt,
        "routing_controls": asserted if multi else None,
        "routing_threshold": threshold,
        "topology": cfg.network.topology,
        "edge": cfg.phase == "c",
        "edge_plan": cfg.edge.plan if cfg.edge else None,
        "dns": {
            "interval_s": cfg.dns.health_check_interval,
            "threshold": cfg.dns.failure_threshold,
            "ttl_s": cfg.dns.ttl,
        },
        "db_port": cfg.database.port,
        "slo": cfg.slo.model_dump(),
        "budget": {"monthly_usd": cfg.budget.monthly_usd, "advisory_fraction": cfg.budget.advisory_fraction},
        "usage": cfg.usage.model_dump(),
    }


def parse_manifest(value: Optional[str]) -> Optional[dict[str, Any]]:
    if not value:
        return None
    doc = json.loads(value)
    if doc.get("version") != VERSION:
        raise ValueError(f"stack manifest version {doc.get('version')} is not {VERSION}; re-run with this release")
    return doc
