"""Issue 20, item 1: `Pulumi.yaml` and every stack file load in the real Pulumi CLI.

The CLI refuses a project before any command runs (`stack init`, `config set`, `preview`, `up`):
`loaders.go` checks `Pulumi.yaml` against the JSON schema it embeds, rewrites shorthand config
values, then applies `Project.Validate()`; `preview` and `up` then check each stack's config against
the declared types and refuse a stack that lacks a declared key without a default
(`pkg/workspace/config.go`). The schema is kept verbatim in tests/fixtures/pulumi/ (source, commit and
version in SOURCE.md); the rules below are ports of `Validate()`, `ValidateConfigValue()` and
`mergeConfig()` from the same commit, each shown refusing what the CLI refuses.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Optional

import jsonschema
import pytest
import yaml

from core.config import KEYS, NAMESPACE
from infra.synth import REPO

FIXTURE = Path(__file__).parent / "fixtures" / "pulumi"
SCHEMA = json.loads((FIXTURE / "project.json").read_text())
# The stack files of the repo, and those of the journey (examples/: the same stack at each step).
STACK_FILES = sorted(REPO.glob("Pulumi.*.yaml")) + sorted((REPO / "examples").glob("*.yaml"))
#: Keys only some stacks may carry, so no declaration (a required key or a default) can describe them.
PHASE_SPECIFIC = {"replication", "edge"}


# --- ports of the CLI's rules --------------------------------------------------------------------

def schema_errors(raw: dict[str, Any]) -> list[str]:
    """Every schema error with its causes (the CLI prints the whole tree of a `oneOf` too)."""
    def flat(errors: Any) -> list[str]:
        out = []
        for e in errors:
            out.append(f"#/{'/'.join(map(str, e.absolute_path))}: {e.message}")
            out += flat(e.context or [])
        return out

    return sorted(flat(jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw)))


def namespaced_by_project(project: str, key: str) -> bool:
    return ":" not in key or key.startswith(project + ":")


def rewrite_shorthand(raw: dict[str, Any]) -> dict[str, Any]:
    """RewriteShorthandConfigValues: a bare value is a default (project keys) or a value (others)."""
    out = copy.deepcopy(raw)
    for key, value in (out.get("config") or {}).items():
        if not isinstance(value, dict):
            out["config"][key] = {"default" if namespaced_by_project(out["name"], key) else "value": value}
    return out


def valid_value(type_name: str, items: Optional[dict[str, Any]], value: Any) -> bool:
    """ValidateConfigValue (project.go)."""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value == math.trunc(value)):
            return True
        if isinstance(value, str):
            try:
                int(value)
            except ValueError:
                return False
            return True
        return False
    if type_name == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_name == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(valid_value(items.get("type", ""), items.get("items"), v) for v in value)


def validate_project(raw: dict[str, Any]) -> list[str]:
    """What loading `Pulumi.yaml` refuses: the schema on the raw file, then Project.Validate()."""
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        return ["project is missing a non-empty string 'name' attribute"]
    errors = schema_errors(raw)
    if errors:
        return errors
    project = rewrite_shorthand(raw)
    name = project["name"]
    for key, decl in (project.get("config") or {}).items():
        typ, default, value = decl.get("type"), decl.get("default"), decl.get("value")
        if default is not None and value is not None:
            errors.append(f"project config '{key}' cannot have both a 'default' and 'value' attribute")
        if namespaced_by_project(name, key):
            if typ == "array" and decl.get("items") is None:
                errors.append(f"The configuration key '{key}' declares an array but does not specify the "
                              "underlying type via the 'items' attribute")
            if typ is not None and default is not None and not valid_value(typ, decl.get("items"), default):
                errors.append(f"The default value specified for configuration key '{key}' is not of the expected type")
        else:
            if typ is not None:
                errors.append(f"Configuration key '{key}' is not namespaced by the project and should not define a type")
            if default is not None:
                errors.append(f"Configuration key '{key}' is not namespaced by the project and should not define a default value")
            if value is None:
                errors.append(f"Configuration key '{key}' is namespaced and must provide an attribute 'value'")
    return errors


def stack_value(raw: Any) -> Any:
    """How the CLI hands a stack value to ValidateConfigValue: structured values as JSON, scalars as text."""
    if isinstance(raw, (dict, list)):
        return json.loads(json.dumps(raw))
    return raw if isinstance(raw, str) else json.dumps(raw) if not isinstance(raw, bool) else str(raw).lower()


def validate_stack(project_raw: dict[str, Any], stack_name: str, stack_raw: dict[str, Any]) -> list[str]:
    """mergeConfig + validateStackConfigValues: missing required keys, then each value against its type."""
    project = rewrite_shorthand(project_raw)
    name = project["name"]
    config = {(k if ":" in k else f"{name}:{k}"): v for k, v in (stack_raw.get("config") or {}).items()}
    errors: list[str] = []
    missing = sorted(k for k, d in (project.get("config") or {}).items()
                     if (k if ":" in k else f"{name}:{k}") not in config
                     and d.get("default") is None and d.get("value") is None and namespaced_by_project(name, k))
    if missing:
        errors.append(f"Stack '{stack_name}' is missing configuration value(s) {missing}")
    for key, decl in sorted((project.get("config") or {}).items()):
        full = key if ":" in key else f"{name}:{key}"
        if full not in config:
            continue
        raw = config[full]
        if decl.get("secret") and not (isinstance(raw, dict) and set(raw) == {"secure"}):
            errors.append(f"Stack '{stack_name}' with configuration key '{key}' must be encrypted as it's secret")
        if decl.get("type") is not None and not valid_value(decl["type"], decl.get("items"), stack_value(raw)):
            errors.append(f"Stack '{stack_name}' with configuration key '{key}' must be of type '{decl['type']}'")
    return errors


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


PROJECT = load(REPO / "Pulumi.yaml")


# --- the project and its stacks --------------------------------------------------------------------

def test_pulumi_yaml_passes_the_cli_schema_and_validate():
    assert validate_project(PROJECT) == []


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_file_loads_against_the_declarations(path):
    stack = path.name[len("Pulumi."):-len(".yaml")]
    assert validate_stack(PROJECT, stack, load(path)) == []


def test_every_program_key_is_declared_with_a_type():
    declared = {k.split(":", 1)[1]: d for k, d in PROJECT["config"].items() if k.startswith(NAMESPACE + ":")}
    assert set(declared) == set(KEYS) - PHASE_SPECIFIC
    untyped = sorted(k for k, d in declared.items() if "type" not in d)
    assert untyped == [], f"declared without a type (the CLI then checks nothing): {untyped}"


def test_optional_keys_have_a_default_the_program_reads_as_absent():
    """A declared key without a default is required by the CLI in every stack: only the program's
    required keys may be declared so; an optional key's default must mean the same as leaving it out."""
    from core.config import StackConfig

    for key, decl in PROJECT["config"].items():
        field = StackConfig.model_fields[key.split(":", 1)[1]]
        if field.is_required():
            assert "default" not in decl, key
        else:
            assert "default" in decl, f"{key} is optional in core/config.py, so the CLI must not require it"
            model = field.annotation
            assert model(**decl["default"]) == field.get_default(call_default_factory=True), key


# --- the checker refuses what the CLI refuses ----------------------------------------------------

def _project(**config: Any) -> dict[str, Any]:
    return {"name": "fraiseql", "runtime": "python", "config": config}


@pytest.mark.parametrize("decl, refusal", [
    ({"fraiseql:regions": {"type": "array"}}, "declares an array but does not specify"),
    ({"fraiseql:regions": {"type": "array", "items": {"type": "array"}}}, "'items' is a required property"),
    ({"fraiseql:ttl": {"type": "number"}}, "is not one of"),
    ({"fraiseql:ttl": {"type": "integer", "default": "soon"}}, "default value specified"),
    ({"fraiseql:ttl": {"default": 1, "value": 2}}, "cannot have both"),
    ({"aws:region": {"type": "string", "value": "us-east-1"}}, "should not define a type"),
    ({"aws:region": {"description": "where"}}, "must provide an attribute 'value'"),
    ({"fraiseql:ttl": {"typo": "integer"}}, "Additional properties are not allowed"),
])
def test_the_checker_refuses_what_the_cli_refuses(decl, refusal):
    errors = validate_project(_project(**decl))
    assert any(refusal in e for e in errors), errors


def test_the_shipped_project_before_issue_20_is_refused():
    before = _project(**{"fraiseql:regions": {"type": "array", "description": "regions"}})
    assert any("declares an array" in e for e in validate_project(before))


@pytest.mark.parametrize("stack_config, refusal", [
    ({}, "is missing configuration value"),
    ({"fraiseql:phase": {"nested": True}}, "must be of type 'string'"),
    ({"fraiseql:phase": "a", "fraiseql:regions": {"name": "us-east-1"}}, "must be of type 'array'"),
    ({"fraiseql:phase": "a", "fraiseql:regions": ["us-east-1"]}, "must be of type 'array'"),
])
def test_stack_values_are_checked_against_the_declared_types(stack_config, refusal):
    project = _project(**{"fraiseql:phase": {"type": "string"},
                          "fraiseql:regions": {"type": "array", "items": {"type": "object"}, "default": []}})
    errors = validate_stack(project, "s", {"config": stack_config})
    assert any(refusal in e for e in errors), errors
