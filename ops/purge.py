"""Phase C: purge Cloudflare's cache for the API zone, by cache tag or everything.

`POST {api}/zones/{zone_id}/purge_cache` with `{"tags": [...]}` or `{"purge_everything": true}`,
with the token and API base of `ops.cloudflare` (tests point the base at a loopback server).

Cloudflare's purge limits allow at most 100 tags in one request ("max operations per request" for
tag, hostname and prefix purges, every plan), so tags go out in batches of at most 100.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ops import log
from ops.aws import Runtime
from ops.cloudflare import TOKEN_ENV, CloudflareError, api_base, errors_of
from ops.errors import Refused, StepFailed, UsageError
from ops.outputs import PhaseCOutputs

MAX_TAGS_PER_REQUEST = 100
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class PurgeOptions:
    tags: tuple[str, ...] = ()
    everything: bool = False
    yes: bool = False
    batch_size: int = MAX_TAGS_PER_REQUEST
    dry_run: bool = False
    attempts: int = 5
    max_retry_after_s: float = 60.0


def parse_tags(values: Sequence[str]) -> tuple[str, ...]:
    """`--tags A,B --tags C` → (A, B, C): trimmed, empties dropped, duplicates removed in order."""
    tags = [t.strip() for v in values for t in v.split(",")]
    return tuple(dict.fromkeys(t for t in tags if t))


def batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _post(rt: Runtime, url: str, token: str, body: dict[str, Any], opts: PurgeOptions, what: str) -> dict[str, Any]:
    data = json.dumps(body).encode()
    r = rt.reporter
    for attempt in range(opts.attempts):
        req = urllib.request.Request(
            url, data=data, method="POST", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        )
        retry_after: Optional[str] = None
        try:
            with rt.urlopen(req, timeout=30) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            status = e.code
            retry_after = e.headers.get("Retry-After") if e.headers else None
            try:
                payload = json.loads(e.read() or b"{}")
            except ValueError:
                payload = {}
            if status not in RETRY_STATUSES or attempt + 1 >= opts.attempts:
                raise CloudflareError(f"HTTP {status}: {errors_of(payload) or e.reason}") from None
        except urllib.error.URLError as e:
            raise CloudflareError(f"cannot reach {url.split('/zones/')[0]}: {e.reason}") from None
        else:
            if not payload.get("success", False):
                raise CloudflareError(errors_of(payload) or "success=false without errors")
            return payload
        wait = _retry_wait(retry_after, attempt, rt, opts)
        if r:
            r.emit("purge", log.RETRY, f"{what}: HTTP {status}; retry {attempt + 1}/{opts.attempts - 1} in {wait:.2f} s", status=status, wait_s=round(wait, 3))
        rt.sleep(wait)
    raise CloudflareError("unreachable")  # pragma: no cover - the loop returns or raises


def _retry_wait(retry_after: Optional[str], attempt: int, rt: Runtime, opts: PurgeOptions) -> float:
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), opts.max_retry_after_s)
        except ValueError:
            pass
    d = min(20.0, 0.5 * 2**attempt)
    return d / 2 + rt.rng.uniform(0, d / 2)


def run_purge(outputs: PhaseCOutputs, rt: Runtime, opts: PurgeOptions) -> int:
    assert rt.reporter is not None
    r = rt.reporter
    if opts.everything == bool(opts.tags):
        raise UsageError("purge needs exactly one of --tags T1,T2 or --everything", step="purge")
    if not 1 <= opts.batch_size <= MAX_TAGS_PER_REQUEST:
        raise UsageError(f"--batch-size must be 1 to {MAX_TAGS_PER_REQUEST} (Cloudflare's limit per purge request)", step="purge")
    if opts.everything and not opts.yes:
        r.emit("purge", log.REFUSED, f"purging everything empties the cache of {outputs.apiHostname} in every PoP; add --yes to confirm")
        raise Refused(
            f"refused: --everything purges the whole zone {outputs.cloudflareZoneId} ({outputs.apiHostname}), sending every request "
            "to the origins until the cache refills. Nothing was sent. Re-run with --yes to confirm, or purge --tags instead",
            step="purge",
        )
    base = api_base(rt, "purge")
    url = f"{base}/zones/{outputs.cloudflareZoneId}/purge_cache"
    bodies: list[dict[str, Any]] = [{"purge_everything": True}] if opts.everything else [{"tags": b} for b in batches(opts.tags, opts.batch_size)]
    token = rt.environ.get(TOKEN_ENV, "")
    if opts.dry_run:
        for i, body in enumerate(bodies, 1):
            r.emit("purge", log.WOULD, f"would POST {url} {json.dumps(body)} (request {i}/{len(bodies)})", url=url, body=body)
        if not token:
            r.emit("purge", log.WARN, f"{TOKEN_ENV} is not set: a real run would stop here")
        r.emit("purge", log.DONE, "dry run complete: nothing was sent")
        return 0
    if not token:
        raise UsageError(f"set {TOKEN_ENV} to a Cloudflare API token with the Cache Purge permission on the zone", step="purge")

    done_tags = 0
    for i, body in enumerate(bodies, 1):
        what = "purge everything" if opts.everything else f"batch {i}/{len(bodies)} ({len(body['tags'])} tags)"
        try:
            payload = _post(rt, url, token, body, opts, what)
        except CloudflareError as e:
            remaining = [t for b in bodies[i - 1 :] for t in b.get("tags", [])]
            r.emit("purge", log.FAILED, f"{what} failed: {e}", remaining_tags=remaining)
            raise StepFailed(
                f"Cloudflare purge failed on {what}: {e}."
                + (f" {done_tags} tags were purged; re-run with the {len(remaining)} remaining (purging is idempotent)" if remaining else ""),
                step="purge",
            ) from None
        done_tags += len(body.get("tags", []))
        r.emit("purge", log.OK, f"{what} purged (id {(payload.get('result') or {}).get('id', '?')})")
    r.emit("purge", log.DONE, f"done: {'everything' if opts.everything else f'{done_tags} tags'} purged from zone {outputs.cloudflareZoneId} ({outputs.apiHostname})")
    return 0
