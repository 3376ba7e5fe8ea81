// Serving a query through the cache: isolate memory, then the Cache API,
// then the origin, with coalescing, stale-while-revalidate and stale-if-error.
import { CACHE_STATUS_HEADER, log, originUnreachable, sleep } from "../http/errors.js";
import { fetchAnswer, originRequest } from "../http/origin.js";
import { invalidatedSince, refreshIfDue } from "../invalidation.js";
import { ageOf, entryState, fromCache, prepareEntry, prepareFromPayload, rewriteResponse, storedResponse, stripInjected } from "./entry.js";
import { confirm, forget, recall, remember } from "./memory.js";

export const CACHE_KEY_HEADER = "x-fraiseql-cache-key";
// How long after the client took the answer it is stored. Storing costs more
// than answering (about 2 ms of CPU a put in workerd through Miniflare, which
// otherwise delays the answer's delivery); meanwhile this isolate shares the
// fill (in flight, then in memory) and other isolates would be fetching anyway.
const STORE_AFTER_ANSWER_MS = 25;
const revalidating = new Set();
const inflight = new Map();

// `getOp()` resolves the canonical operation; it is only called on a miss.
export async function serveQuery(cfg, ctx, keyUrl, base, getOp) {
  const response = await lookupOrFetch(cfg, ctx, keyUrl, base, getOp);
  // Shows which requests share an entry; reveals nothing the caller lacks.
  if (!response.headers.has(CACHE_KEY_HEADER)) response.headers.set(CACHE_KEY_HEADER, keyId(keyUrl));
  return response;
}

async function lookupOrFetch(cfg, ctx, keyUrl, base, getOp) {
  const found = await lookup(cfg, ctx, keyUrl, base, getOp);
  if (found.response) return found.response;
  // The entry is stored once this answer has been handed over, so storing
  // it does not delay the answer.
  let handedOver;
  const answered = new Promise((resolve) => (handedOver = resolve));
  const { outcome, shared } = await fetchShared(cfg, ctx, keyUrl, base, await getOp(), answered);
  return finish(found.miss, outcome, shared, handedOver);
}

// The entry for `keyUrl` as an answer (HIT, STALE), or what a fill needs to
// know about the copy it replaces: {miss: {cached, age, state}}.
export async function lookup(cfg, ctx, keyUrl, base, getOp) {
  // Other isolates' invalidations are re-read (when due) beside the lookup.
  const refreshing = refreshIfDue(cfg, base.url);
  const now = Date.now();
  const copy = recall(keyUrl, now);
  if (copy && ageOf(copy.fetchedAt, now) < copy.ttl) {
    if (refreshing) await refreshing;
    if (!invalidatedSince(copy.tagHeader, copy.fetchedAt)) return { response: fromMemory(keyUrl, copy, ageOf(copy.fetchedAt, now)) };
  }
  let [cached] = await Promise.all([caches.default.match(new Request(keyUrl)), refreshing]);
  let state = null;
  if (cached) {
    state = entryState(cached.headers);
    if (invalidatedSince(cached.headers.get("cache-tag"), state.fetchedAt)) {
      await cached.body?.cancel();
      forget(keyUrl);
      cached = null;
      state = null;
    }
  }
  const age = state ? ageOf(state.fetchedAt) : Infinity;
  if (cached && age < state.ttl) {
    const known = confirm(keyUrl, state.fetchedAt);
    if (known) {
      await cached.body?.cancel();
      return { response: fromMemory(keyUrl, known, age) };
    }
    const body = await cached.text();
    remember(keyUrl, { status: cached.status, headers: [...cached.headers], body, ...state, tagHeader: cached.headers.get("cache-tag") });
    return { response: fromCache(new Response(body, cached), "HIT", age) };
  }
  if (cached && age < state.ttl + state.swr) {
    if (!revalidating.has(keyUrl)) {
      revalidating.add(keyUrl);
      ctx.waitUntil(revalidate(cfg, ctx, keyUrl, base, getOp).finally(() => revalidating.delete(keyUrl)));
    }
    return { response: fromCache(cached, "STALE", age) };
  }
  return { miss: { cached, age, state } };
}

// The answer to a miss, from the fill's outcome. `handedOver()` is called
// once the client has taken the answer's body.
export async function finish(miss, outcome, shared, handedOver = () => {}) {
  const { cached, age, state } = miss;
  const failed = outcome.error || outcome.status >= 500;
  if (failed && cached && age < state.ttl + state.sie) {
    handedOver();
    return fromCache(cached, "ERROR-STALE", age);
  }
  if (cached) await cached.body?.cancel();
  if (outcome.error) {
    handedOver();
    return originUnreachable(outcome.error, "MISS");
  }
  return answer(outcome, shared ? "COALESCED" : cached ? "REVALIDATED" : "MISS", handedOver);
}

const keyId = (keyUrl) => keyUrl.slice(keyUrl.lastIndexOf("/") + 1);

// The hit path: one header list, built natively once.
function fromMemory(keyUrl, copy, ageSeconds) {
  const headers = [...copy.served, [CACHE_STATUS_HEADER, "HIT"], ["age", String(Math.floor(ageSeconds))], [CACHE_KEY_HEADER, keyId(keyUrl)]];
  return new Response(copy.body, { status: copy.status, headers });
}

export function answer(outcome, status, handedOver = () => {}) {
  const headers = new Headers(outcome.headers);
  if (status === "COALESCED") headers.delete("set-cookie");
  headers.set(CACHE_STATUS_HEADER, status);
  headers.set("age", "0");
  if (outcome.tagHeader) headers.set("cache-tag", outcome.tagHeader);
  return new Response(bodyThen(outcome.body, handedOver), { status: outcome.status, statusText: outcome.statusText, headers });
}

const encoder = new TextEncoder();

// A body that calls `taken()` once its reader has it (a FixedLengthStream
// holds nothing: the write completes when the bytes are read).
function bodyThen(text, taken) {
  const bytes = encoder.encode(text);
  const { readable, writable } = new FixedLengthStream(bytes.byteLength);
  const writer = writable.getWriter();
  writer
    .write(bytes)
    .then(() => writer.close())
    .then(taken, taken);
  return readable;
}

async function revalidate(cfg, ctx, keyUrl, base, getOp) {
  const { outcome } = await fetchShared(cfg, ctx, keyUrl, base, await getOp());
  if (outcome.error || outcome.status >= 500) log("warn", "revalidate_failed", { status: outcome.status || 0 });
}

// Concurrent misses for one key share one origin fetch. The key includes the
// credential scope, so nothing, errors included, is shared between callers
// with different credentials; and an answer made for one caller (private,
// no-store, a Set-Cookie) is never shared at all: its waiters fetch their own.
// A stored outcome stays shared until its cache.put lands.
export async function fetchShared(cfg, ctx, keyUrl, base, op, answered = null) {
  const pending = inflight.get(keyUrl);
  if (pending) {
    const outcome = await pending;
    const reusable = outcome.error || (outcome.shareable && !invalidatedSince(outcome.tagHeader, outcome.fetchedAt));
    if (reusable) return { outcome, shared: true };
    if (!outcome.shareable) return { outcome: await fill(cfg, base, op), shared: false };
  }
  const promise = fill(cfg, base, op);
  inflight.set(keyUrl, promise);
  settle(cfg, ctx, keyUrl, promise, await promise, answered);
  return { outcome: await promise, shared: false };
}

// Stores what may be stored, and keeps the outcome shared until then.
export function settle(cfg, ctx, keyUrl, promise, outcome, answered = null) {
  const release = () => {
    if (inflight.get(keyUrl) === promise) inflight.delete(keyUrl);
  };
  if (!outcome.entry) return release();
  // A fill stored later than this after it started could land after the
  // second purge of a mutation it raced (see purge/queue.js): not stored.
  if (Date.now() - outcome.fetchedAt > cfg.originTimeoutMs + 250) {
    log("warn", "fill_too_late", { ms: Date.now() - outcome.fetchedAt });
    return release();
  }
  remember(keyUrl, outcome.entry);
  // Storing waits until the answer has left (at most 200 ms), and
  // STORE_AFTER_ANSWER_MS more; the outcome stays shared meanwhile. With the
  // check above, a put lands within ORIGIN_TIMEOUT_MS + 0.5 s of the fill's
  // start, before the repeated purge (ORIGIN_TIMEOUT_MS + 1 s at the soonest).
  const ready = (answered ? Promise.race([answered, sleep(200)]) : Promise.resolve()).then(() => sleep(STORE_AFTER_ANSWER_MS));
  ctx.waitUntil(ready.then(() => putEntry(keyUrl, outcome.entry)).finally(release));
}

export function register(keyUrl, promise) {
  inflight.set(keyUrl, promise);
}

export function pendingFill(keyUrl) {
  return inflight.get(keyUrl);
}

async function putEntry(keyUrl, entry) {
  try {
    await caches.default.put(new Request(keyUrl), storedResponse(entry));
  } catch (err) {
    log("error", "cache_put_failed", { message: String(err && err.message) });
  }
}

// One origin fetch for one operation. Never rejects: a failed origin is an
// outcome like any other.
export async function fill(cfg, base, op) {
  const fetchedAt = Date.now();
  try {
    const { response, text } = await fetchAnswer(cfg, originRequest(cfg, base, [op], false));
    return prepareEntry(cfg, response, text, op, fetchedAt);
  } catch (error) {
    return { error, fetchedAt, shareable: true };
  }
}

// One origin fetch for several operations (a batch): one outcome each.
export async function fillBatch(cfg, base, ops) {
  const fetchedAt = Date.now();
  try {
    const { response, text } = await fetchAnswer(cfg, originRequest(cfg, base, ops, true));
    const { results } = rewriteResponse(text, ops, true);
    return ops.map((op, i) => {
      const payload = results[i];
      const body = payload === null ? null : stripInjected(payload);
      if (body === null) return { error: new Error("origin batch answer has no item for this operation"), fetchedAt, shareable: true };
      return prepareFromPayload(cfg, response, body, payload, op, fetchedAt);
    });
  } catch (error) {
    return ops.map(() => ({ error, fetchedAt, shareable: true }));
  }
}
