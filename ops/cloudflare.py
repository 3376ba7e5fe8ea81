"""Cloudflare's API as the runbooks use it: the token and base URL from the environment, errors as one
exception, and read-only GETs (`preflight`). `purge` posts through the same base and token.

The token comes from env CLOUDFLARE_API_TOKEN (never a flag, never logged). The API base is
`https://api.cloudflare.com/client/v4` unless env CLOUDFLARE_API_BASE says otherwise (tests point it
at a stub). Uses urllib only, through the runtime's `urlopen`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ops.aws import Runtime
from ops.errors import UsageError

DEFAULT_API_BASE = "https://api.cloudflare.com/client/v4"
TOKEN_ENV, BASE_ENV = "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_BASE"


class CloudflareError(Exception):
    pass


def errors_of(payload: dict[str, Any]) -> str:
    errs = payload.get("errors") or []
    return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" if isinstance(e, dict) else str(e) for e in errs)


def api_base(rt: Runtime, step: str) -> str:
    base = rt.environ.get(BASE_ENV, DEFAULT_API_BASE).rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise UsageError(f"{BASE_ENV} must be an http(s) URL", step=step)
    return base


class CloudflareReader:
    """GETs against the API with a bearer token; `get` returns the envelope's `result`."""

    def __init__(self, rt: Runtime, token: str, base: str):
        self._rt, self._token, self._base = rt, token, base

    def get(self, path: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self._base}{path}{query}"
        req = urllib.request.Request(url, method="GET", headers={"Authorization": f"Bearer {self._token}"})
        try:
            with self._rt.urlopen(req, timeout=30) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read() or b"{}")
            except ValueError:
                body = {}
            raise CloudflareError(f"GET {path}: HTTP {e.code}: {errors_of(body) or e.reason}") from None
        except urllib.error.URLError as e:
            raise CloudflareError(f"cannot reach {self._base}: {e.reason}") from None
        if not payload.get("success", False):
            raise CloudflareError(f"GET {path}: {errors_of(payload) or 'success=false without errors'}")
        return payload.get("result")
