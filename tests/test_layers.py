"""The import graph points one way: core <- components <- infra, core <- policies, core and replication <- ops.

Every import counts, lazy ones inside functions too. `replication` ships alone in the Lambda package,
so it imports nothing of ours; `core` may use only its pure quorum arithmetic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infra.paths import REPO

PROJECT = {"core", "components", "infra", "ops", "policies", "replication", "drills", "tests", "bench"}
# What each layer may import from the project (itself included), and third-party roots it must not.
ALLOWED: dict[str, set[str]] = {
    "replication": {"replication"},
    "core": {"core", "replication.quorum"},
    "components": {"components", "core", "replication"},
    "policies": {"policies", "core"},
    "ops": {"ops", "core", "replication"},
    "drills": {"drills", "core", "replication"},
    "infra": {"infra", "core", "components", "policies", "replication"},
}
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "core": {"pulumi", "pulumi_aws", "pulumi_cloudflare", "pulumi_policy", "boto3", "botocore"},
    "policies": {"pulumi", "pulumi_aws", "pulumi_cloudflare"},
    "ops": {"pulumi", "pulumi_aws", "pulumi_cloudflare", "pulumi_policy"},
}


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = path.relative_to(REPO).with_suffix("").parts[: -node.level]
                base = ".".join(parts)
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in rules)


def violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for line, name in imports(path, layer):
            root = name.split(".")[0]
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if root in PROJECT and not allowed(name, ALLOWED[layer]):
                bad.append(where)
            if root in FORBIDDEN_THIRD_PARTY.get(layer, set()):
                bad.append(where)
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_is_below_it(layer):
    assert violations(layer) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "core"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from infra.program import run\n    import pulumi_aws\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert violations("core") == ["core/bad.py:2 imports infra.program.run", "core/bad.py:3 imports pulumi_aws"]

