"""Shared fixtures: the real stack files, synthesized under mocks, and config variants of them."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

import pytest

from core.config import StackConfig, load_config, namespaced_values
from infra.synth import Synthesis, read_stack_file, stack_file, synthesize


def stack_values(stack: str) -> dict[str, Any]:
    """The `fraiseql:` config of a stack file as Python values (namespace removed)."""
    flat, _ = read_stack_file(stack_file(stack))
    return {k: json.loads(v) if v[:1] in "[{" else v for k, v in namespaced_values(flat).items()}


def flatten(stack: str, values: dict[str, Any]) -> dict[str, str]:
    """Back to the engine's shape: namespaced keys, structured values as JSON strings."""
    flat, _ = read_stack_file(stack_file(stack))
    out = {k: v for k, v in flat.items() if not k.startswith("fraiseql:")}
    for k, v in values.items():
        out[f"fraiseql:{k}"] = v if isinstance(v, str) else json.dumps(v)
    return out


@pytest.fixture(scope="session")
def phase_a() -> Synthesis:
    return synthesize("phase-a")


@pytest.fixture
def phase_a_values() -> dict[str, Any]:
    return copy.deepcopy(stack_values("phase-a"))


def synth_variant(stack: str, change: Callable[[dict[str, Any]], None]) -> Synthesis:
    values = copy.deepcopy(stack_values(stack))
    change(values)
    _, secret_keys = read_stack_file(stack_file(stack))
    return synthesize(stack, config=flatten(stack, values), secret_keys=secret_keys)


def config_variant(stack: str, change: Callable[[dict[str, Any]], None]) -> StackConfig:
    values = copy.deepcopy(stack_values(stack))
    change(values)
    return load_config(values, stack)
