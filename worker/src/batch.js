// Batches. One that holds a mutation goes to the origin whole (its queries
// must see the mutation) and is never cached. One of queries only is served
// item by item through the cache: hits from the cache, identical items once,
// items another request is fetching shared with it, and the rest in one
// batch to the origin.
import { cacheKeyUrl } from "./canonical.js";
import { LIMITS } from "./config.js";
import { CACHE_KEY_HEADER, fetchShared, fill, fillBatch, finish, lookup, pendingFill, register, settle } from "./cache/serve.js";
import { CACHE_STATUS_HEADER, ClientError, errorBody } from "./http/errors.js";
import { serveMutations } from "./mutations.js";
import { resolveOperation } from "./apq.js";

export async function serveBatch(cfg, env, ctx, base, items) {
  if (items.length === 0) throw new ClientError(400, "Empty batch: send at least one operation", "BAD_REQUEST");
  if (items.length > LIMITS.maxBatchItems) {
    throw new ClientError(400, `A batch may hold at most ${LIMITS.maxBatchItems} operations`, "BAD_REQUEST");
  }
  const ops = [];
  for (const item of items) {
    const op = await resolveOperation(env, ctx, item);
    if (op.type === "subscription") throw new ClientError(400, "Subscriptions cannot be batched", "BAD_REQUEST");
    ops.push(op);
  }
  const bypass = base.credentials.length > 0 && cfg.authMode === "bypass";
  if (bypass || ops.some((op) => op.type === "mutation" || !op.cacheable)) return serveMutations(cfg, env, ctx, base, ops, true);
  return serveQueries(cfg, ctx, base, ops);
}

async function serveQueries(cfg, ctx, base, ops) {
  const keys = await Promise.all(ops.map((op) => cacheKeyUrl(base, op)));
  const unique = new Map();
  keys.forEach((keyUrl, i) => unique.has(keyUrl) || unique.set(keyUrl, ops[i]));
  const answers = new Map();
  const misses = [];
  await Promise.all(
    [...unique].map(async ([keyUrl, op]) => {
      const found = await lookup(cfg, ctx, keyUrl, base, () => op);
      if (found.response) answers.set(keyUrl, found.response);
      else misses.push({ keyUrl, op, miss: found.miss });
    }),
  );
  // Keys another request is already fetching wait for it; the others go to
  // the origin together.
  const joining = misses.filter((m) => pendingFill(m.keyUrl));
  const fetching = misses.filter((m) => !pendingFill(m.keyUrl));
  const outcomes = fetching.length > 0 ? startFills(cfg, ctx, base, fetching) : [];
  await Promise.all([
    ...joining.map(async (m) => {
      const { outcome, shared } = await fetchShared(cfg, ctx, m.keyUrl, base, m.op);
      answers.set(m.keyUrl, await finish(m.miss, outcome, shared));
    }),
    ...fetching.map(async (m, i) => answers.set(m.keyUrl, await finish(m.miss, await outcomes[i], false))),
  ]);
  return assemble(keys.map((k) => answers.get(k)), keys);
}

function startFills(cfg, ctx, base, misses) {
  const all = misses.length === 1 ? fill(cfg, base, misses[0].op).then((o) => [o]) : fillBatch(cfg, base, misses.map((m) => m.op));
  return misses.map((m, i) => {
    const promise = all.then((outcomes) => outcomes[i]);
    register(m.keyUrl, promise);
    promise.then((outcome) => settle(cfg, ctx, m.keyUrl, promise, outcome));
    return promise;
  });
}

// Per-entry and per-item headers a batch answer does not take from its items.
const ITEM_HEADERS = ["age", "cache-tag", "content-length", "etag", "last-modified", "set-cookie", CACHE_STATUS_HEADER, CACHE_KEY_HEADER];

// One JSON array, each item what its own request would have answered. The
// other headers (CORS, for one) come from an item the origin answered.
async function assemble(responses, keys) {
  const template = responses.find((r) => r.status === 200) ?? responses[0];
  const headers = new Headers(template.headers);
  for (const name of ITEM_HEADERS) headers.delete(name);
  headers.set("content-type", "application/json");
  headers.set("cache-control", "no-store");
  // Duplicate items share one Response: each is read once.
  const texts = new Map();
  for (const res of new Set(responses)) {
    const text = await res.text();
    texts.set(res, isJson(text) ? text : errorBody(`Origin answered ${res.status} without a GraphQL result`, "BAD_GATEWAY"));
    const status = res.headers.get(CACHE_STATUS_HEADER);
    if (status === "MISS" || status === "REVALIDATED") for (const c of res.headers.getSetCookie()) headers.append("set-cookie", c);
  }
  headers.set(CACHE_STATUS_HEADER, responses.map((r) => r.headers.get(CACHE_STATUS_HEADER)).join(","));
  headers.set(CACHE_KEY_HEADER, keys.map((k) => k.slice(k.lastIndexOf("/") + 1)).join(","));
  return new Response(`[${responses.map((r) => texts.get(r)).join(",")}]`, { status: 200, headers });
}

function isJson(text) {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
