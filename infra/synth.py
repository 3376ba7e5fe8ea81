"""Run the real program under Pulumi mocks with a stack file's config, and summarize what it declares."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from core.config import PHASE_SECRETS
from infra import program
from infra.mocks import Registration, install
from infra.paths import REPO

# Long enough to pass the checks real secrets get (e.g. the 32-character origin token).
SECRET_PLACEHOLDER = "offline-placeholder-secret-0123456789abcdef"


class StackFileError(ValueError):
    pass


def stack_file(stack: str, root: Path = REPO) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def read_stack_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """Flatten a stack file's `config:` block the way the engine hands it to a program.

    Structured values become JSON strings; `secure:` values cannot be decrypted offline, so they
    become a placeholder and are marked secret, as does each secret the stack's phase needs that the
    file leaves to `pulumi config set --secret`.
    """
    if not path.exists():
        stacks = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in path.parent.glob("Pulumi.*.yaml"))
        raise StackFileError(f"no stack file {path.name}; known stacks: {', '.join(stacks) or 'none'}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(p for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p) or str(e)
        raise StackFileError(
            f"{where}: not valid YAML ({what}); check the indentation and quoting there; a valid entry looks like `  fraiseql:phase: a`"
        ) from None
    raw = doc.get("config") or {}
    if not isinstance(raw, dict):
        raise StackFileError(f"{path.name}: `config:` must be a mapping of key: value")
    values: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in raw.items():
        if ":" not in key:
            key = f"{program.PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[key] = SECRET_PLACEHOLDER
            secrets.append(key)
        elif isinstance(value, str):
            values[key] = value
        else:
            values[key] = json.dumps(value)
    # The secrets the phase needs are set on the real stack with `pulumi config set --secret` and
    # committed nowhere: offline, a stand-in takes the place of each one the file does not carry.
    for name in PHASE_SECRETS.get(values.get(f"{program.PROJECT}:phase", ""), ()):
        key = f"{program.PROJECT}:{name}"
        if key not in values:
            values[key] = SECRET_PLACEHOLDER
            secrets.append(key)
    return values, secrets


@dataclass
class Synthesis:
    stack: str
    registrations: list[Registration]
    outputs: dict[str, Any]

    @property
    def resources(self) -> list[Registration]:
        return [r for r in self.registrations if r.custom]

    @property
    def components(self) -> list[Registration]:
        return [r for r in self.registrations if not r.custom]

    @cached_property
    def _by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.registrations}

    def component_of(self, reg: Registration) -> str:
        """The nearest enclosing fraiseql component, as `Type name`; `program` at top level."""
        parent = self._by_urn.get(reg.parent)
        while parent is not None:
            if parent.type.startswith("fraiseql:"):
                return f"{parent.type.split(':')[-1]} {parent.name}"
            parent = self._by_urn.get(parent.parent)
        return "program"

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.resources if r.type == typ]

    def grouped(self) -> dict[str, dict[str, Counter]]:
        groups: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for reg in self.resources:
            groups[reg.region][self.component_of(reg)][reg.type] += 1
        return groups


def synthesize(stack: str, *, config: Optional[dict[str, str]] = None, secret_keys: Optional[list[str]] = None,
               path: Optional[Path] = None, monitors: Optional[list] = None,
               run: Optional[Callable[[], dict[str, Any]]] = None) -> Synthesis:
    """Run `infra.program.run()` under mocks.

    Config comes from `Pulumi.<stack>.yaml` (or `path`); `config` replaces it when given (tests).
    `monitors`, when given, receives the recording monitor even if the program fails. `run` replaces
    the program (benchmarks of one component); by default it is `infra.program.run`.
    """
    if config is None:
        config, secret_keys = read_stack_file(path or stack_file(stack))
    monitor = install(program.PROJECT, stack)
    if monitors is not None:
        monitors.append(monitor)
    runtime_config.set_all_config(dict(config), secret_keys or [])
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    outputs: dict[str, Any] = {}

    def body() -> None:
        declared = (run or program.run)()
        resolved: Optional[dict[str, Any]] = _sync_await(pulumi.Output.from_input(declared).future())
        outputs.update(resolved or {})

    _sync_await(run_pulumi_func(body))
    return Synthesis(stack=stack, registrations=list(monitor.registrations), outputs=outputs)
