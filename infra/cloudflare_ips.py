"""Cloudflare's published edge address ranges, kept as data (`infra/cloudflare-ips.json`).

Phase C's ALBs accept 80/443 only from these ranges. The file is checked in so a plan is
reproducible and offline; `python -m infra cloudflare-ips [--write]` compares it with Cloudflare's
API (`GET /client/v4/ips`, no authentication) and rewrites it. Run it before `pulumi up` and commit
the change: Cloudflare announces range changes in advance.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Optional

from infra.paths import REPO

DATA = REPO / "infra" / "cloudflare-ips.json"
API = "https://api.cloudflare.com/client/v4/ips"
# Fewer ranges than this means a truncated or wrong answer: never lock the origin to it.
MIN_IPV4 = 5


class RangesError(ValueError):
    pass


@dataclass(frozen=True)
class Ranges:
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]

    @classmethod
    def parse(cls, doc: dict[str, Any], what: str) -> "Ranges":
        try:
            v4 = tuple(str(ipaddress.IPv4Network(c)) for c in doc["ipv4_cidrs"])
            v6 = tuple(str(ipaddress.IPv6Network(c)) for c in doc["ipv6_cidrs"])
        except (KeyError, TypeError, ValueError) as e:
            raise RangesError(f"{what}: not a list of Cloudflare ranges ({e})") from None
        if len(v4) < MIN_IPV4:
            raise RangesError(f"{what}: only {len(v4)} IPv4 ranges; refusing to restrict the origin to them")
        for net in v4:
            if ipaddress.IPv4Network(net).prefixlen < 8:
                raise RangesError(f"{what}: {net} is far too wide for an edge range")
        return cls(v4, v6)


def load(path: Path = DATA) -> Ranges:
    return Ranges.parse(json.loads(path.read_text()), str(path))


def fetch(urlopen: Optional[Callable[..., Any]] = None) -> Ranges:
    urlopen = urlopen or urllib.request.urlopen
    with urlopen(urllib.request.Request(API, headers={"Accept": "application/json"}), timeout=15) as resp:
        body = json.loads(resp.read())
    if not body.get("success"):
        raise RangesError(f"{API} answered without success: {body.get('errors')}")
    return Ranges.parse(body.get("result") or {}, API)


def refresh(*, write: bool, path: Path = DATA, urlopen: Optional[Callable[..., Any]] = None,
            today: Optional[date] = None) -> tuple[bool, str]:
    """Compare the data file with the API; with `write`, rewrite it. Returns (changed, report)."""
    old, new = load(path), fetch(urlopen)
    added = sorted(set(new.ipv4 + new.ipv6) - set(old.ipv4 + old.ipv6))
    removed = sorted(set(old.ipv4 + old.ipv6) - set(new.ipv4 + new.ipv6))
    changed = bool(added or removed)
    if write:
        doc = json.loads(path.read_text())
        doc.update(ipv4_cidrs=list(new.ipv4), ipv6_cidrs=list(new.ipv6), checked=(today or date.today()).isoformat())
        path.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"{path.name}: {'changed' if changed else 'up to date'}"]
    lines += [f"  + {c}" for c in added] + [f"  - {c}" for c in removed]
    if changed and not write:
        lines.append("  run with --write, commit the file, then pulumi up")
    return changed, "\n".join(lines)
