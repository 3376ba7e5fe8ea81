"""`python -m infra diff --from A --to B`: what a `pulumi up` from stack file A to stack file B would do.

Both files are planned under one stack name, as the same stack at two moments: the program runs under
mocks with each file's config, then the registrations of B are matched to those of A the way the engine
matches them (a resource's own URN first, then its aliases, parents' included). From that:

- created: a URN of B that takes over nothing of A;
- deleted: a URN of A that nothing of B takes over (a `retain_on_delete` resource is left in the cloud);
- replaced: taken over, but an input that the provider can only set at creation changed
  (`REPLACE_ON_CHANGE`, from the provider's schema), or the type changed;
- updated: taken over, with other inputs changed (`ignore_changes` honoured).

A protected resource (`protect`: the databases and their keys) that would be replaced or deleted, or
that would lose `protect`, is refused: the command exits 1. `pulumi up` would stop at it halfway, or
worse, a removed `protect` would let the next one destroy data.

The monthly cost change is shown line by line: the same cost model as `plan`, on both stacks, each line
matched through the same takeover.

Limits: replacement is read from `REPLACE_ON_CHANGE`, which lists the create-only inputs of the types
this program declares (terraform-provider-aws `ForceNew` attributes, which pulumi-aws bridges as
replacements); an input change of a type missing from it shows as an update. Outputs that only the
cloud knows (an instance's endpoint, a key's id) are derived by the mocks; `pulumi preview` against the
real stack remains the authority.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from infra.mocks import Registration
from infra.pack import PackResult, run_pack
from infra.synth import Synthesis, read_stack_file, synthesize
from policies.cost import CostLine, CostReport

CREATE, UPDATE, REPLACE, DELETE = "create", "update", "replace", "delete"

#: Inputs (engine names) that the provider can only set when it creates the resource: a change is a
#: replacement. From terraform-provider-aws's schemas (`ForceNew: true`), which pulumi-aws bridges.
REPLACE_ON_CHANGE: dict[str, frozenset[str]] = {
    "aws:rds/instance:Instance": frozenset({
        "availabilityZone", "characterSetName", "customIamInstanceProfile", "dbName", "engine", "identifier",
        "identifierPrefix", "kmsKeyId", "ncharCharacterSetName", "restoreToPointInTime", "s3Import",
        "snapshotIdentifier", "storageEncrypted", "timezone", "username",
    }),
    "aws:kms/key:Key": frozenset({"customerMasterKeySpec", "customKeyStoreId", "keyUsage", "multiRegion", "xksKeyId"}),
    "aws:rds/parameterGroup:ParameterGroup": frozenset({"name", "namePrefix", "family", "description"}),
    "aws:rds/subnetGroup:SubnetGroup": frozenset({"name", "namePrefix"}),
    "aws:ec2/vpc:Vpc": frozenset({"cidrBlock", "instanceTenancy"}),
    "aws:ec2/subnet:Subnet": frozenset({"vpcId", "cidrBlock", "availabilityZone", "availabilityZoneId"}),
    "aws:ec2/securityGroup:SecurityGroup": frozenset({"name", "namePrefix", "description", "vpcId"}),
    "aws:ec2/natGateway:NatGateway": frozenset({"subnetId", "allocationId", "connectivityType"}),
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": frozenset({"vpcId", "peerVpcId", "peerRegion", "peerOwnerId"}),
    "aws:lb/loadBalancer:LoadBalancer": frozenset({"name", "namePrefix", "internal", "loadBalancerType"}),
    "aws:lb/targetGroup:TargetGroup": frozenset({"name", "namePrefix", "port", "protocol", "vpcId", "targetType"}),
    "aws:ecs/cluster:Cluster": frozenset({"name"}),
    "aws:ecs/service:Service": frozenset({"name", "cluster", "launchType", "iamRole"}),
    "aws:ecs/taskDefinition:TaskDefinition": frozenset({
        "family", "containerDefinitions", "cpu", "memory", "networkMode", "executionRoleArn", "taskRoleArn",
        "requiresCompatibilities", "runtimePlatform", "volumes",
    }),
    "aws:route53/zone:Zone": frozenset({"name", "delegationSetId"}),
    "aws:route53/record:Record": frozenset({"zoneId", "name"}),
    "aws:route53/healthCheck:HealthCheck": frozenset({"type", "referenceName", "requestInterval", "measureLatency"}),
    "aws:secretsmanager/secret:Secret": frozenset({"name", "namePrefix"}),
    "aws:kms/alias:Alias": frozenset({"name", "namePrefix"}),
    "aws:sns/topic:Topic": frozenset({"name", "namePrefix", "fifoTopic"}),
    "aws:iam/role:Role": frozenset({"name", "namePrefix", "path"}),
    "aws:lambda/function:Function": frozenset({"name", "packageType"}),
    "aws:cloudwatch/logGroup:LogGroup": frozenset({"name", "namePrefix"}),
    "aws:cloudwatch/metricAlarm:MetricAlarm": frozenset({"name"}),
    "aws:cloudwatch/dashboard:Dashboard": frozenset({"dashboardName"}),
    "aws:budgets/budget:Budget": frozenset({"name", "namePrefix", "accountId"}),
    "aws:ssm/parameter:Parameter": frozenset({"name"}),
    "aws:acm/certificate:Certificate": frozenset({"domainName", "subjectAlternativeNames", "validationMethod", "keyAlgorithm"}),
    "aws:route53recoverycontrol/cluster:Cluster": frozenset({"name"}),
    "aws:route53recoverycontrol/controlPanel:ControlPanel": frozenset({"clusterArn"}),
    "aws:route53recoverycontrol/routingControl:RoutingControl": frozenset({"clusterArn", "controlPanelArn", "name"}),
}
#: Every resource is regional in pulumi-aws 7: moving one is creating it elsewhere.
REPLACE_EVERYWHERE = frozenset({"region"})
#: Inputs that change with every phase (the `phase` tag): an update of these alone is listed as a count.
TAGS = frozenset({"tags", "tagsAll"})


class DiffError(ValueError):
    """The two stacks cannot be matched the way the engine would (it would refuse the update too)."""


@dataclass(frozen=True)
class Change:
    kind: str                  # create | update | replace | delete
    type: str
    name: str
    region: str
    urn: str                   # in B (in A for a deletion)
    old_urn: Optional[str]     # in A (None for a creation)
    protected: bool            # A's protect (B's for a creation)
    keeps_protect: bool = True
    properties: tuple[str, ...] = ()   # the inputs that differ
    forcing: tuple[str, ...] = ()      # those that force the replacement
    retained: bool = False             # deleted from the state, left in the cloud

    @property
    def refused(self) -> Optional[str]:
        """Why `diff` refuses this change, or None."""
        if not self.protected:
            return None
        if self.kind == REPLACE:
            return f"a protected {self.type.split(':')[-1]} would be replaced ({', '.join(self.forcing) or 'type changed'} changed)"
        if self.kind == DELETE and not self.retained:
            return ("a protected resource would be deleted: give its successor an alias to this URN, or `pulumi state "
                    "unprotect` it first if deleting it is the intent")
        if not self.keeps_protect:
            return "its successor is not protected: the next `pulumi up` could destroy it"
        return None


@dataclass(frozen=True)
class CostDelta:
    region: str
    item: str
    what: str
    before: float
    after: float
    before_basis: str
    after_basis: str

    @property
    def delta(self) -> float:
        return round(self.after - self.before, 2)


@dataclass
class StackDiff:
    stack: str
    before: Synthesis
    after: Synthesis
    changes: list[Change]
    cost_before: Optional[CostReport]
    cost_after: Optional[CostReport]
    taken: dict[str, str] = field(default_factory=dict)
    pack_after: Optional[PackResult] = None

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if c.refused]

    def cost_deltas(self) -> list[CostDelta]:
        """Each cost line that changes, matched across the two stacks through the takeover."""
        before = {l.key: l for l in (self.cost_before.lines if self.cost_before else [])}
        after = {l.key: l for l in (self.cost_after.lines if self.cost_after else [])}
        renamed = {self.taken.get(k, k): k for k in before}  # B's key -> A's key
        out: list[CostDelta] = []
        for key, new in after.items():
            old = before.get(renamed.get(key, key))
            out.append(_delta(old, new))
        claimed = {renamed.get(k, k) for k in after}
        out += [_delta(old, None) for k, old in before.items() if k not in claimed]
        return sorted((d for d in out if d.delta), key=lambda d: (-abs(d.delta), d.region, d.item))

    def render(self) -> str:
        lines = [f"stack {self.stack}: {len(self.before.resources)} resources -> {len(self.after.resources)}"]
        lines.append("(* marks an input the provider sets only at creation: its change replaces the resource)")
        for kind, sign in ((CREATE, "+"), (UPDATE, "~"), (REPLACE, "+-"), (DELETE, "-")):
            found = self.of_kind(kind)
            tags_only = [c for c in found if kind == UPDATE and set(c.properties) <= TAGS and not c.protected]
            shown = [c for c in found if c not in tags_only]
            lines.append(f"\n{kind}d: {len(found)}" if kind != UPDATE else f"\nupdated: {len(found)}")
            if tags_only:
                by_type: dict[str, int] = {}
                for c in tags_only:
                    by_type[c.type.split(":")[-1]] = by_type.get(c.type.split(":")[-1], 0) + 1
                lines.append(f"  ~  {len(tags_only)} only retagged: " + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items())))
            for c in sorted(shown, key=lambda c: (c.region, c.type, c.name)):
                what = f"  {sign:<2} {c.region:<10} {c.type.split(':')[-1]:<28} {c.name}"
                if c.old_urn and c.old_urn.rsplit("::", 1)[-1] != c.name:
                    what += f" (was {c.old_urn.rsplit('::', 1)[-1]})"
                if c.kind in (UPDATE, REPLACE) and c.properties:
                    marked = [p + ("*" if p in c.forcing else "") for p in c.properties]
                    what += f": {', '.join(marked)}"
                if c.retained:
                    what += " [retained in the cloud]"
                if c.protected:
                    what += " [protected]"
                lines.append(what)
        lines.append("")
        lines += self.render_cost()
        if self.pack_after is not None and self.pack_after.mandatory:
            lines.append(f"\nthe policy pack refuses the target ({len(self.pack_after.mandatory)} mandatory violation(s)); "
                         "`python -m infra plan` shows them:")
            lines += [f"  {v.policy}: {v.message.splitlines()[0]}" for v in self.pack_after.mandatory]
        refused = self.refused
        if refused:
            lines.append(f"\nREFUSED: {len(refused)} protected resource(s) would not survive this step:")
            lines += [f"  {c.old_urn or c.urn}: {c.refused}" for c in refused]
        else:
            lines.append("\nno protected resource is replaced or deleted")
        return "\n".join(lines)

    def render_cost(self) -> list[str]:
        if self.cost_before is None or self.cost_after is None:
            return ["monthly cost: cannot be estimated (see `python -m infra plan`)"]
        b, a = self.cost_before, self.cost_after
        out = [f"monthly cost: {b.total:,.2f} -> {a.total:,.2f} ({a.total - b.total:+,.2f} USD/month); "
               f"budget {b.budget_usd or 0:,.2f} -> {a.budget_usd or 0:,.2f}; {a.budget_line()}"]
        for d in self.cost_deltas():
            if d.before and d.after:
                why = d.after_basis if d.before_basis == d.after_basis else f"{d.before_basis} -> {d.after_basis}"
            else:
                why = d.after_basis or f"(gone) {d.before_basis}"
            out.append(f"  {d.delta:>+10,.2f}  {d.region:<10} {d.item}: {d.what}: {why}")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "changes": [vars(c) | {"refused": c.refused} for c in self.changes],
            "counts": {k: len(self.of_kind(k)) for k in (CREATE, UPDATE, REPLACE, DELETE)},
            "cost": None if self.cost_before is None or self.cost_after is None else {
                "before_usd": self.cost_before.total, "after_usd": self.cost_after.total,
                "budget_before_usd": self.cost_before.budget_usd, "budget_after_usd": self.cost_after.budget_usd,
                "lines": [vars(d) | {"delta": d.delta} for d in self.cost_deltas()],
            },
            "mandatory_violations": [] if self.pack_after is None else [vars(v) for v in self.pack_after.mandatory],
            "refused": [c.old_urn or c.urn for c in self.refused],
        }


def _delta(old: Optional[CostLine], new: Optional[CostLine]) -> CostDelta:
    some = new or old
    assert some is not None
    return CostDelta(region=some.region, item=some.item, what=some.what,
                     before=(old.monthly_usd or 0.0) if old else 0.0, after=(new.monthly_usd or 0.0) if new else 0.0,
                     before_basis=old.basis if old else "", after_basis=new.basis if new else "")


def claims(before: Synthesis, after: Synthesis) -> dict[str, str]:
    """Old URN -> the new URN that takes it over, refusing what the engine refuses: one old resource
    claimed twice, or an alias that is another new resource's own URN."""
    old = {r.urn for r in before.registrations}
    new = {r.urn for r in after.registrations}
    taken: dict[str, str] = {}
    for reg in after.registrations:
        clash = (set(reg.aliases) - {reg.urn}) & new
        if clash:
            raise DiffError(f"{reg.urn} aliases {sorted(clash)}, which another resource has as its own URN")
        match = reg.urn if reg.urn in old else next((a for a in reg.aliases if a in old), None)
        if match is not None:
            if match in taken:
                raise DiffError(f"{match} is claimed by {taken[match]} and {reg.urn}")
            taken[match] = reg.urn
    return taken


def replaced_protected(before: Synthesis, after: Synthesis) -> list[str]:
    """URNs of A's protected resources that nothing in B takes over (the engine would delete them)."""
    taken = claims(before, after)
    return [r.urn for r in before.registrations if r.protect and r.urn not in taken]


def _plain(value: Any) -> Any:
    """An input as the engine would compare it: assets and archives by what they hold, not by object."""
    import pulumi

    if isinstance(value, pulumi.AssetArchive):
        return {"archive": {k: _plain(v) for k, v in sorted(value.assets.items())}}
    if isinstance(value, (pulumi.FileAsset, pulumi.FileArchive)):
        return {"file": str(value.path)}
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}
    if isinstance(value, (pulumi.RemoteAsset, pulumi.RemoteArchive)):
        return {"uri": value.uri}
    return str(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_plain)


def _changed(old: Registration, new: Registration) -> list[str]:
    ignored = set(new.ignore_changes)
    keys = set(old.inputs) | set(new.inputs)
    return sorted(k for k in keys if k not in ignored and _canonical(old.inputs.get(k)) != _canonical(new.inputs.get(k)))


def _forcing(old: Registration, new: Registration, props: list[str]) -> list[str]:
    """The changed inputs that force a replacement. Only a value declared on both sides counts: one the
    program did not declare before was computed by the cloud (a read replica's database name is its
    source's), and the engine compares the new value with that, which the mocks cannot know; one the
    program stops declaring keeps the cloud's value (the provider marks these inputs computed)."""
    create_only = REPLACE_ON_CHANGE.get(new.type, frozenset()) | REPLACE_EVERYWHERE
    return [p for p in props if p in create_only and old.inputs.get(p) is not None and new.inputs.get(p) is not None]


def compare(before: Synthesis, after: Synthesis) -> tuple[list[Change], dict[str, str]]:
    taken = claims(before, after)
    old_by_urn = {r.urn: r for r in before.resources}
    successor = {new: old for old, new in taken.items()}
    changes: list[Change] = []
    for reg in after.resources:
        old = old_by_urn.get(successor.get(reg.urn, ""))
        if old is None:
            changes.append(Change(CREATE, reg.type, reg.name, reg.region, reg.urn, None, reg.protect))
            continue
        props = _changed(old, reg)
        forcing = _forcing(old, reg, props)
        kind = REPLACE if forcing or old.type != reg.type else UPDATE if props or old.protect != reg.protect else ""
        if kind:
            changes.append(Change(kind, reg.type, reg.name, reg.region, reg.urn, old.urn, old.protect,
                                  keeps_protect=reg.protect or not old.protect, properties=tuple(props), forcing=tuple(forcing)))
    for reg in before.resources:
        if reg.urn not in taken:
            changes.append(Change(DELETE, reg.type, reg.name, reg.region, reg.urn, reg.urn, reg.protect,
                                  retained=reg.retain_on_delete))
    return changes, taken


def _load(spec: str) -> tuple[dict[str, str], list[str], Path]:
    """A stack file path, or a stack name (Pulumi.<name>.yaml in the current folder, then the repo's)."""
    from infra.paths import REPO

    path = Path(spec)
    if not path.suffix:
        path = next((p for p in (Path.cwd() / f"Pulumi.{spec}.yaml", REPO / f"Pulumi.{spec}.yaml") if p.exists()),
                    Path(f"Pulumi.{spec}.yaml"))
    values, secrets = read_stack_file(path)
    return values, secrets, path


def diff_files(before: str, after: str, *, stack: str = "prod", with_pack: bool = True) -> StackDiff:
    """Plan both stack files under `stack` and compare them (what `python -m infra diff` prints)."""
    b_values, b_secrets, _ = _load(before)
    a_values, a_secrets, _ = _load(after)
    syn_b = synthesize(stack, config=b_values, secret_keys=b_secrets)
    pack_b = run_pack(syn_b.registrations)
    syn_a = synthesize(stack, config=a_values, secret_keys=a_secrets)
    pack_a = run_pack(syn_a.registrations)
    return diff_syntheses(syn_b, syn_a, cost_before=pack_b.cost, cost_after=pack_a.cost,
                          pack_after=pack_a if with_pack else None)


def diff_syntheses(before: Synthesis, after: Synthesis, *, cost_before: Optional[CostReport] = None,
                   cost_after: Optional[CostReport] = None, pack_after: Optional[PackResult] = None) -> StackDiff:
    changes, taken = compare(before, after)
    return StackDiff(after.stack, before, after, changes, cost_before, cost_after, taken, pack_after)
