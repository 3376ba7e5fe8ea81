"""The Pulumi program: validated stack config in, components per phase out.

`pulumi up` runs it through the repo's `__main__.py`; `python -m infra plan` runs the very same
`run()` under mocks. There is no second code path. Each phase's module is imported only when that
phase runs, so a phase pays only for the provider SDK modules it declares resources with.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from core.config import (
    KEYS,
    NAMESPACE,
    PROVIDER_SECRET_KEYS,
    SECRET_KEYS,
    ConfigError,
    StackConfig,
    load_config,
    namespaced_values,
    plaintext_secret_problems,
)
from infra.paths import LAMBDA_DEPS, REPO

PROJECT = "fraiseql"
__all__ = ["PROJECT", "REPO", "LAMBDA_DEPS", "run", "read_stack_config", "read_stack_config_unchecked"]


def _raw_config() -> dict[str, Any]:
    """Every `fraiseql:` key the engine passed in, namespace removed."""
    values = namespaced_values({**runtime_config.get_config_env(), **runtime_config.CONFIG.get()})
    cfg = pulumi.Config(NAMESPACE)
    for key in (*KEYS, *SECRET_KEYS):
        if key not in values and (raw := cfg.get(key)) is not None:
            values[key] = raw
    return values


def _plaintext_secrets() -> list[tuple[str, str]]:
    """Documented secret keys the engine handed over without the secret flag."""
    present: dict[str, Any] = {}
    for key in [f"{NAMESPACE}:{k}" for k in SECRET_KEYS] + list(PROVIDER_SECRET_KEYS):
        namespace, name = key.split(":", 1)
        present[key] = pulumi.Config(namespace).get(name)
    return plaintext_secret_problems(present, runtime_config.is_config_secret)


def read_stack_config() -> StackConfig:
    """Read and validate the stack config, before any resource exists."""
    return load_config(_raw_config(), pulumi.get_stack(), plaintext_secrets=_plaintext_secrets())


def read_stack_config_unchecked() -> StackConfig:
    """Stack config for benchmarks of parts of the program: fields validated, any region count."""
    return load_config(_raw_config(), pulumi.get_stack(), cross_checks=False)


def run() -> dict[str, Any]:
    try:
        cfg = read_stack_config()
    except ConfigError as e:
        # RunError prints the message alone, without a Python traceback.
        raise pulumi.RunError(str(e)) from None
    stack = pulumi.get_stack()
    if cfg.phase == "a":
        from infra import phase_a as phase
    else:
        from infra import phase_b as phase  # type: ignore[no-redef]
    from infra import common

    outputs = phase.build(cfg, stack)
    common.manifest(cfg, stack)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
