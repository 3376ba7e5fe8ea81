"""Keep secrets out of what leaves a Lambda: results, error messages and log lines.

Passwords never appear in SQL text (they travel as bind parameters, see ``replication.roles``), but
an error can still carry a conninfo or a value a library echoed. ``redact`` removes every known
secret value and anything shaped like ``password=...``; ``guarded`` wraps a Lambda handler so an
exception leaves it as one redacted message with no chained cause (the Lambda runtime prints the
whole chain, and ``pulumi up`` prints what the runtime returns).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["HandlerError", "SecretBox", "guarded", "redact"]

MASK = "[redacted]"
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)

F = TypeVar("F", bound=Callable[..., Any])


class SecretBox:
    """The secrets one invocation has seen; `redact` masks all of them."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str | None) -> None:
        self.values.update(v for v in values if v and len(v) >= 4)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return _PASSWORD_KV.sub(lambda m: m.group(1) + MASK, text)


class HandlerError(RuntimeError):
    """What a guarded handler raises instead of the original exception."""


def guarded(box: SecretBox) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure leaves redacted
                message = redact(f"{type(exc).__name__}: {exc}", box.values)
                raise HandlerError(message) from None

        return inner  # type: ignore[return-value]

    return wrap
