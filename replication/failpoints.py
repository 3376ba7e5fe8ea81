"""Fault-injection points, as etcd's gofail or TiKV's fail-rs: places in the agent where a drill can
make it pause, to test what a process pause at the worst moment does.

Off in production: nothing happens unless ``FRAISEQL_FAILPOINTS_FILE`` names a file. The file holds a
JSON object ``{"<point>": {"token": "...", "seconds": 8.0}}``; each token pauses the process once, at
the named point, for that long (a drill arms a point by writing a new token).
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["pause"]

_done: set[tuple[str, str]] = set()


def pause(point: str) -> float:
    """Sleep if a drill armed ``point`` with a token not used yet; returns the seconds slept."""
    path = os.environ.get("FRAISEQL_FAILPOINTS_FILE")
    if not path:
        return 0.0
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f).get(point)
        token, seconds = str(spec["token"]), float(spec["seconds"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return 0.0
    if (point, token) in _done or seconds <= 0:
        return 0.0
    _done.add((point, token))
    time.sleep(seconds)
    return seconds
