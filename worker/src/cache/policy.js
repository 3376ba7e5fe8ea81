// What may be stored, for how long, and what may be shared with callers
// waiting on the same fetch.
import { onlyRoutingCookies } from "../cookies.js";
import { isPlainObject } from "../json.js";

function parseCacheControl(value) {
  const directives = new Map();
  for (const part of (value || "").split(",")) {
    const eq = part.indexOf("=");
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (!name) continue;
    directives.set(name, eq < 0 ? "" : part.slice(eq + 1).trim().replace(/^"|"$/g, ""));
  }
  return directives;
}

function seconds(directives, name) {
  if (!directives.has(name)) return null;
  const n = Number.parseInt(directives.get(name), 10);
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

// An answer made for one caller: never handed to anyone else, not even to
// callers waiting on the same fetch.
export function isPrivate(cfg, headers) {
  const cc = parseCacheControl(headers.get("cache-control"));
  if (cc.has("private") || cc.has("no-store") || cc.has("no-cache")) return true;
  return !onlyRoutingCookies(cfg, headers.getSetCookie());
}

// Returns the entry's {ttl, swr, sie} in seconds, or null if the answer must
// not be stored. The origin's s-maxage (shared caches) wins over max-age,
// which wins over CACHE_TTL_SECONDS. Everything served from an entry is
// younger than LOCAL_INVALIDATION_SECONDS: the local invalidation record
// outlives every entry it hides.
export function storagePolicy(cfg, response, payload) {
  if (response.status !== 200) return null;
  if (isPrivate(cfg, response.headers)) return null;
  const cc = parseCacheControl(response.headers.get("cache-control"));
  const ttl = seconds(cc, "s-maxage") ?? seconds(cc, "max-age") ?? cfg.ttl;
  if (ttl <= 0) return null;
  const varyOk = new Set(["accept-encoding", ...cfg.keyedHeaders, ...cfg.credentialHeaders]);
  const vary = (response.headers.get("vary") || "")
    .split(",")
    .map((v) => v.trim().toLowerCase())
    .filter(Boolean);
  if (vary.some((v) => !varyOk.has(v))) return null;
  if (!(response.headers.get("content-type") || "").toLowerCase().includes("json")) return null;
  if (!isPlainObject(payload)) return null;
  if (payload.errors !== undefined && !(Array.isArray(payload.errors) && payload.errors.length === 0)) return null;
  if (!isPlainObject(payload.data)) return null;
  const noStale = cc.has("must-revalidate") || cc.has("proxy-revalidate");
  return boundedLifetime(cfg, {
    ttl,
    swr: noStale ? 0 : (seconds(cc, "stale-while-revalidate") ?? cfg.swr),
    sie: noStale ? 0 : (seconds(cc, "stale-if-error") ?? cfg.sie),
  });
}

export function boundedLifetime(cfg, { ttl, swr, sie }) {
  const horizon = cfg.localInvalidationSeconds;
  const t = Math.min(ttl, horizon);
  return { ttl: t, swr: Math.min(swr, horizon - t), sie: Math.min(sie, horizon - t) };
}
