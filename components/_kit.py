"""The component kit: what every FraiseQL component shares (not a component itself).

- `Labels`: which stack and phase the resources belong to, and the user's own tags (`fraiseql:tags`).
  The program builds it once and hands it to each component.
- `Component`: the base of every component. `n(role, region)` names a child `{name}-{role}[-{region}]`
  (`core.naming.logical_name`), `child` is a direct child's options, and a transformation tags every
  taggable AWS child with the user's tags and the reserved ones (`core.naming.merge_tags`): `Name` (the
  child's logical name, or for a child `renamed` the name it was created under), `project`, `phase`,
  `stack` and `component` (the last part of the component's type). No child builds tags; one passes
  `tags=` only for a tag of its own (a subnet's tier), which the kit keeps.

A transformation (`ResourceOptions.transformations`), not a `transforms` callback: it runs inside the
program, so the offline plan under the mocks (which run no engine-side transforms) tags exactly what
`pulumi up` tags. Transformations reach every child of a component, not the children of packaged
(multi-language) components, which the program has none of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
from pulumi import ResourceOptions

from core.naming import logical_name, merge_tags

#: Taggable AWS types the program has never tagged. Tagging them would update every running stack (and
#: for the ARC types CloudFormation marks tags create-only), so it is a change of its own, not the kit's.
UNTAGGED_TYPES = frozenset({
    "aws:appautoscaling/target:Target",
    "aws:lb/listener:Listener",
    "aws:route53recoverycontrol/cluster:Cluster",
    "aws:route53recoverycontrol/controlPanel:ControlPanel",
    "aws:route53recoverycontrol/safetyRule:SafetyRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
})


@dataclass(frozen=True, kw_only=True)
class Labels:
    """The stack a component's resources belong to: its name, its phase, and `fraiseql:tags`."""

    stack: str
    phase: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ChildTags:
    """The transformation that tags a component's taggable AWS children (see the module docstring)."""

    labels: Labels
    component: str

    def tags(self, name: str, own: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        """A child's tags: the user's, the reserved ones for `name`, then the child's own."""
        reserved = merge_tags(self.labels.tags, name=name, phase=self.labels.phase, stack=self.labels.stack,
                              component=self.component)
        return {**reserved, **(own or {})}

    def __call__(self, args: pulumi.ResourceTransformationArgs) -> Optional[pulumi.ResourceTransformationResult]:
        if not (isinstance(args.resource, pulumi.CustomResource) and args.type_.startswith("aws:")
                and "tags" in args.props and args.type_ not in UNTAGGED_TYPES):
            return None
        return pulumi.ResourceTransformationResult({**args.props, "tags": self.tags(args.name, _own_tags(args))}, args.opts)


def _own_tags(args: pulumi.ResourceTransformationArgs) -> dict[str, str]:
    """The tags a child passed itself (`tags=`): a plain mapping, or none."""
    own = args.props.get("tags")
    if own is None:
        return {}
    if not isinstance(own, Mapping):
        raise TypeError(f"{args.name}: a child's own tags must be a plain mapping, not {type(own).__name__}")
    return dict(own)


class Component(pulumi.ComponentResource):
    """Base of every FraiseQL component: child names, child options and child tags from one place."""

    labels: Labels
    base_name: str

    def __init__(self, type_token: str, name: str, *, labels: Labels, opts: Optional[ResourceOptions] = None) -> None:
        self.labels = labels
        self.base_name = name
        self.child_tags = ChildTags(labels, type_token.rsplit(":", 1)[-1])
        super().__init__(type_token, name, None, ResourceOptions.merge(opts, ResourceOptions(transformations=[self.child_tags])))

    def n(self, role: str, region: Optional[str] = None) -> str:
        """A child's logical name: `{name}-{role}`, or `{name}-{role}-{region}`."""
        return logical_name(self.base_name, role, region)

    @property
    def child(self) -> ResourceOptions:
        """Options of a direct child with nothing else set."""
        return ResourceOptions(parent=self)

    def renamed(self, old_role: str) -> ResourceOptions:
        """Options of a direct child whose logical name used to be `n(old_role)`: the alias keeps its URN
        (and the resource), and its Name tag stays the name it was created under."""
        old = self.n(old_role)

        def keep_name(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
            return pulumi.ResourceTransformationResult({**args.props, "tags": {**_own_tags(args), "Name": old}}, args.opts)

        return ResourceOptions(parent=self, aliases=[pulumi.Alias(name=old)], transformations=[keep_name])

