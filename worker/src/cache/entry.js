// Entries: an origin answer prepared for the client and, when it may be
// stored, for the Cache API; and a stored entry turned back into an answer.
import { LIMITS } from "../config.js";
import { INJECTED_TYPENAME } from "../graphql/parser.js";
import { CACHE_STATUS_HEADER, log } from "../http/errors.js";
import { clientHeaders } from "../http/origin.js";
import { parseJsonExact } from "../json.js";
import { collectTags, entryTags } from "../tags.js";
import { isPrivate, storagePolicy } from "./policy.js";

// Stored entries only: "fetchedAtMs,ttl,swr,sie", and the origin's
// Cache-Control (the stored copy's own Cache-Control is its Cache API lifetime).
const META_HEADER = "x-fraiseql-meta";
const ORIGIN_CACHE_CONTROL_HEADER = "x-fraiseql-origin-cache-control";

// Removes the injected __typename alias from a GraphQL answer (or a batch of
// them). Returns the client's body and the parsed results as the origin sent
// them (null where the answer was not JSON), for tagging.
export function rewriteResponse(text, ops, batched) {
  let payload;
  try {
    payload = parseJsonExact(text);
  } catch {
    return { body: text, results: ops.map(() => null) };
  }
  const results = batched ? (Array.isArray(payload) ? payload : []) : [payload];
  const body = ops.some((op) => op.injected) && text.includes(INJECTED_TYPENAME) ? JSON.stringify(payload, withoutInjected) : text;
  return { body, results: ops.map((_, i) => results[i] ?? null) };
}

function withoutInjected(key, value) {
  return key === INJECTED_TYPENAME ? undefined : value;
}

export function stripInjected(payload) {
  return JSON.stringify(payload, withoutInjected);
}

// What a fill produced: the client's status, headers and body, whether the
// answer may go to other callers (`shareable`), and the entry to store.
export function prepareEntry(cfg, response, text, op, fetchedAt) {
  const { body, results } = rewriteResponse(text, [op], false);
  return prepareFromPayload(cfg, response, body, results[0], op, fetchedAt);
}

export function prepareFromPayload(cfg, response, body, payload, op, fetchedAt) {
  const headers = clientHeaders(cfg, response.headers, null);
  const out = {
    status: response.status,
    statusText: response.statusText,
    headers,
    body,
    json: payload !== null,
    shareable: !isPrivate(cfg, response.headers),
    stored: null,
    entry: null,
    tagHeader: null,
    fetchedAt,
  };
  const policy = storagePolicy(cfg, response, payload);
  if (policy === null) return out;
  const tagHeader = entryTags(op, collectTags(payload.data, op)).join(",");
  if (tagHeader.length > LIMITS.cacheTagMaxBytes) {
    // Truncating would leave objects this entry shows that no purge can
    // reach, so an entry whose tags do not fit is not stored at all.
    log("warn", "cache_tags_overflow", { bytes: tagHeader.length });
    return out;
  }
  out.tagHeader = tagHeader;
  const stored = new Headers(headers);
  // Only a routing cookie may have been set (anything else made the answer
  // private); it belongs to the caller of this fetch, not to the entry.
  stored.delete("set-cookie");
  const originCacheControl = response.headers.get("cache-control");
  if (originCacheControl) stored.set(ORIGIN_CACHE_CONTROL_HEADER, originCacheControl);
  stored.set("cache-control", `max-age=${Math.max(1, Math.ceil(policy.ttl + Math.max(policy.swr, policy.sie)))}`);
  stored.set("cache-tag", tagHeader);
  stored.set(META_HEADER, `${fetchedAt},${policy.ttl},${policy.swr},${policy.sie}`);
  out.entry = { status: response.status, headers: [...stored], body, fetchedAt, ...policy, tagHeader };
  return out;
}

export function storedResponse(entry) {
  return new Response(entry.body, { status: entry.status, headers: entry.headers });
}

export function entryState(headers) {
  const [fetchedAt, ttl, swr, sie] = (headers.get(META_HEADER) || "").split(",").map(Number);
  return { fetchedAt: fetchedAt > 0 ? fetchedAt : 0, ttl: ttl || 0, swr: swr || 0, sie: sie || 0 };
}

export const ageOf = (fetchedAt, now = Date.now()) => (fetchedAt > 0 ? Math.max(0, now - fetchedAt) / 1000 : Infinity);

// The headers a client sees for a stored entry, without status and age.
export function servedHeaders(storedHeaders) {
  const headers = new Headers(storedHeaders);
  const originCacheControl = headers.get(ORIGIN_CACHE_CONTROL_HEADER);
  if (originCacheControl) {
    headers.set("cache-control", originCacheControl);
    headers.delete(ORIGIN_CACHE_CONTROL_HEADER);
  } else {
    headers.delete("cache-control");
  }
  headers.delete(META_HEADER);
  return headers;
}

export function fromCache(cached, status, ageSeconds) {
  const headers = servedHeaders(cached.headers);
  headers.set(CACHE_STATUS_HEADER, status);
  headers.set("age", String(Math.floor(ageSeconds)));
  return new Response(cached.body, { status: cached.status, statusText: cached.statusText, headers });
}
