"""Bounded retries with exponential backoff and jitter, for throttling and dropped connections.

The runbook's AWS clients are built with botocore's own retries off (`total_max_attempts: 1`), so this
module is the one retry policy: it is bounded, it reports each retry, and its sleep and randomness are
injected, so tests run it instantly and deterministically.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

T = TypeVar("T")

# Error codes AWS services use for "slow down". PriorRequestNotComplete is Route 53's answer to a
# change submitted while the previous one for the same zone is still being processed.
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
# botocore's ConnectionError also covers a proxy that refuses (ProxyConnectionError) and TLS failures.
CONNECTION_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, BotoConnectionError)


def error_code(exc: BaseException) -> Optional[str]:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def is_throttle(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in THROTTLE_CODES or status == 429


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS)


@dataclass
class RetryPolicy:
    sleep: Callable[[float], None]
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 5  # total tries on throttling, including the first
    connection_attempts: int = 3  # total tries on a dropped or refused connection
    base_s: float = 0.5
    cap_s: float = 20.0
    on_retry: Optional[Callable[[str, int, int, BaseException, float], None]] = None

    def delay(self, retry_index: int) -> float:
        """Exponential backoff with "equal jitter": a delay in [d/2, d] for d = min(cap, base * 2^i)."""
        d = min(self.cap_s, self.base_s * (2**retry_index))
        return d / 2 + self.rng.uniform(0, d / 2)

    def call(self, fn: Callable[[], T], op: str) -> T:
        retry_index = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when not retryable
                if is_throttle(exc):
                    limit = self.attempts
                elif is_connection_error(exc):
                    limit = self.connection_attempts
                else:
                    raise
                if retry_index + 1 >= limit:
                    raise
                wait = self.delay(retry_index)
                if self.on_retry:
                    self.on_retry(op, retry_index + 1, limit - 1, exc, wait)
                self.sleep(wait)
                retry_index += 1


class RetryingClient:
    """A boto3 client whose every API call goes through a RetryPolicy."""

    _PASSTHROUGH = frozenset({"get_waiter", "get_paginator", "can_paginate", "close", "generate_presigned_url"})

    def __init__(self, client: Any, policy: RetryPolicy):
        self._client = client
        self._policy = policy

    @property
    def meta(self) -> Any:
        return self._client.meta

    @property
    def exceptions(self) -> Any:
        return self._client.exceptions

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or name in self._PASSTHROUGH or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._policy.call(lambda: attr(*args, **kwargs), op=name)

        call.__name__ = name
        return call
