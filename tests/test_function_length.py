"""No Python function over 100 lines (issue 23), outside the Pulumi component constructors.

A function's length is its `def` line to its last line (`end_lineno - lineno + 1`), nested functions
included in their parent's. Every `.py` file of the repository is read except those under virtualenvs
(`.venv*`), `node_modules` and `.git`. Exempt: `__init__` of a class that subclasses `pulumi.ComponentResource`,
directly or through the kit's `Component` (components/_kit.py) or any other class of the repository
that does; a component declares its resources in its constructor.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.paths import REPO

LIMIT = 100
SKIPPED_DIRS = ("node_modules", ".git")


@dataclass(frozen=True)
class Long:
    path: str  # relative to the root, with forward slashes
    name: str  # qualified: Class.method, outer.inner
    line: int
    lines: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name} ({self.lines} lines)"


def python_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (d.startswith(".venv") or d in SKIPPED_DIRS)]  # not walked at all
        found += [Path(folder, f) for f in files if f.endswith(".py")]
    return sorted(found)


def _base_name(base: ast.expr) -> str:
    """`ComponentResource`, `pulumi.ComponentResource` and `Generic[...]`-style bases, by their last name."""
    if isinstance(base, ast.Subscript):
        base = base.value
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else ""


def component_classes(trees: list[ast.Module]) -> set[str]:
    """Names of the classes that subclass ComponentResource, directly or through other such classes."""
    bases = {
        node.name: {_base_name(b) for b in node.bases}
        for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
    }
    found = {"ComponentResource"}
    while True:
        more = {name for name, of in bases.items() if of & found} - found
        if not more:
            return found - {"ComponentResource"}
        found |= more


def long_functions(root: Path, limit: int = LIMIT) -> list[Long]:
    files = python_files(root)
    trees = [ast.parse(p.read_text(), str(p)) for p in files]
    components = component_classes(trees)
    found: list[Long] = []

    def visit(node: ast.AST, path: str, scope: list[ast.AST]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [*scope, child]
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                owner = scope[-1] if scope else None
                constructor = (child.name == "__init__" and isinstance(owner, ast.ClassDef) and owner.name in components)
                if lines > limit and not constructor:
                    name = ".".join(s.name for s in inner)  # type: ignore[attr-defined]
                    found.append(Long(path, name, child.lineno, lines))
            visit(child, path, inner)

    for p, tree in zip(files, trees):
        visit(tree, p.relative_to(root).as_posix(), [])
    return found


def test_no_function_is_over_100_lines() -> None:
    long = long_functions(REPO)
    assert not long, (f"functions over {LIMIT} lines: cut them at their seams (named steps, a table):\n"
                      + "\n".join(map(str, long)))


def _function(name: str, lines: int, indent: str = "") -> str:
    """A function of exactly `lines` lines."""
    return f"{indent}def {name}(self=None):\n" + f"{indent}    x = 1\n" * (lines - 1)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "_kit.py").write_text(
        "import pulumi\n\n\nclass Component(pulumi.ComponentResource):\n" + _function("__init__", 101, "    ")
        + _function("register", 101, "    ")
    )
    (tmp_path / "components" / "db.py").write_text(
        "from components._kit import Component\n\n\nclass Tier(Component):\n    pass\n\n\n"
        "class Db(Tier):\n" + _function("__init__", 150, "    ")
    )
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "cli.py").write_text(
        _function("at_the_limit", 100) + "\n\n" + _function("one_too_many", 101) + "\n\n"
        + "class Options:\n" + _function("__init__", 101, "    ") + "\n\n"
        + "def outer():\n" + _function("inner", 101, "    ")
    )
    for ignored in (".venv", ".venv-3.12/lib", "worker/node_modules/x"):
        (tmp_path / ignored).mkdir(parents=True)
        (tmp_path / ignored / "big.py").write_text(_function("vendored", 500))
    return tmp_path


def test_the_check_names_every_function_over_the_limit(repo: Path):
    assert sorted((f.path, f.name, f.lines) for f in long_functions(repo)) == [
        ("components/_kit.py", "Component.register", 101),  # a component's other methods count
        ("ops/cli.py", "Options.__init__", 101),  # not a component: its constructor counts
        ("ops/cli.py", "one_too_many", 101),
        ("ops/cli.py", "outer", 102),
        ("ops/cli.py", "outer.inner", 101),
    ]


def test_only_component_constructors_are_exempt(repo: Path):
    assert component_classes([ast.parse(p.read_text()) for p in python_files(repo)]) == {"Component", "Tier", "Db"}
