// Local invalidation. The Cache API is per data center and purge by tag takes
// a moment to arrive, so the data center that ran a mutation records the tags
// it touched (with the time) before it answers; a cached entry fetched before
// that time and carrying one of them is treated as absent. Records live
// LOCAL_INVALIDATION_SECONDS, which also caps every entry's lifetime, so no
// entry outlives the record that hides it.
import { LIMITS } from "./config.js";
import { KEY_PREFIX } from "./canonical.js";
import { log } from "./http/errors.js";

const LOCAL_INVALIDATIONS_PATH = `${KEY_PREFIX}local-invalidations`;
const tombstones = { tags: new Map(), readAt: -Infinity, pending: null };

function recordKey(url) {
  return new Request(`${url.origin}${LOCAL_INVALIDATIONS_PATH}`);
}

function mergeTombstones(target, source, now, horizonMs) {
  for (const [tag, at] of source) {
    if (now - at > horizonMs) continue;
    const prev = target.get(tag);
    if (prev === undefined || at > prev) target.set(tag, at);
  }
  for (const [tag, at] of target) if (now - at > horizonMs) target.delete(tag);
  if (target.size > LIMITS.maxLocalTombstones) {
    const sorted = [...target].sort((a, b) => a[1] - b[1]);
    for (const [tag] of sorted.slice(0, target.size - LIMITS.maxLocalTombstones)) target.delete(tag);
  }
}

async function readStored(url) {
  const res = await caches.default.match(recordKey(url));
  if (!res) return new Map();
  try {
    return new Map(Object.entries(JSON.parse(await res.text())));
  } catch {
    return new Map();
  }
}

export async function invalidateLocally(cfg, url, tags, now = Date.now()) {
  const horizonMs = cfg.localInvalidationSeconds * 1000;
  const mine = new Map(tags.map((t) => [t, now]));
  mergeTombstones(tombstones.tags, mine, now, horizonMs);
  try {
    const stored = await readStored(url);
    mergeTombstones(stored, mine, now, horizonMs);
    await caches.default.put(
      recordKey(url),
      new Response(JSON.stringify(Object.fromEntries(stored)), {
        headers: { "content-type": "application/json", "cache-control": `max-age=${Math.ceil(cfg.localInvalidationSeconds)}` },
      }),
    );
  } catch (err) {
    log("error", "local_invalidation_failed", { message: String(err && err.message) });
  }
}

// Other isolates' records are re-read at most every
// LOCAL_INVALIDATION_REFRESH_MS; this isolate's own are always current.
// Returns the pending re-read (which concurrent lookups share), or null.
export function refreshIfDue(cfg, url) {
  const now = Date.now();
  if (now - tombstones.readAt < cfg.localRefreshMs) return tombstones.pending;
  tombstones.readAt = now;
  const pending = readStored(url)
    .then(
      (stored) => mergeTombstones(tombstones.tags, stored, now, cfg.localInvalidationSeconds * 1000),
      (err) => log("warn", "local_invalidation_read_failed", { message: String(err && err.message) }),
    )
    .finally(() => {
      if (tombstones.pending === pending) tombstones.pending = null;
    });
  tombstones.pending = pending;
  return pending;
}

// Whether an entry with these tags, fetched at `fetchedAt`, was invalidated since.
export function invalidatedSince(tagHeader, fetchedAt) {
  if (tombstones.tags.size === 0 || !tagHeader) return false;
  for (const tag of tagHeader.split(",")) {
    const at = tombstones.tags.get(tag);
    if (at !== undefined && at >= fetchedAt) return true;
  }
  return false;
}
