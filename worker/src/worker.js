// FraiseQL edge cache: caches GraphQL queries in the Workers Cache API, forwards
// everything else to ORIGIN_URL, and purges by Cache-Tag after mutations.
// No imports on purpose: this exact file is what the Pulumi program uploads.

const CACHE_STATUS_HEADER = "x-fraiseql-cache";
const CACHE_KEY_HEADER = "x-fraiseql-cache-key";
const STORED_AT_HEADER = "x-fraiseql-stored-at";
const ORIGIN_CACHE_CONTROL_HEADER = "x-fraiseql-origin-cache-control";
const KEY_PREFIX = "/__fraiseql-cache/";
const KEY_VERSION = "v1";

// Cloudflare: the aggregate Cache-Tag header may not exceed 16 KB (after the
// field name) and purge API calls accept tags of at most 1,024 characters.
const CACHE_TAG_MAX_BYTES = 16 * 1024;
const TAG_MAX_CHARS = 1024;
// Free/Bundled Workers get 50 subrequests per invocation; the origin fetch
// needs one, so a single mutation never fans out into more purge calls.
const MAX_PURGE_REQUESTS = 40;
const APQ_MAPPING_TTL_SECONDS = 86400;
// Caps recursion on client-supplied JSON (variables/extensions).
const MAX_JSON_DEPTH = 64;

const DEFAULTS = {
  CACHE_TTL_SECONDS: 60,
  STALE_WHILE_REVALIDATE_SECONDS: 30,
  STALE_IF_ERROR_SECONDS: 300,
  MAX_BODY_BYTES: 1048576,
  PURGE_BATCH_SIZE: 100,
  ORIGIN_TIMEOUT_MS: 10000,
  CF_API_BASE: "https://api.cloudflare.com/client/v4",
};

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
];

// Vary values we can honour because they are already part of the cache key.
const KEYED_VARY = new Set(["accept", "accept-encoding", "origin"]);

const TYPE_SYSTEM_KEYWORDS = new Set([
  "schema",
  "scalar",
  "type",
  "interface",
  "union",
  "enum",
  "input",
  "directive",
  "extend",
]);

// Per-isolate guard so a burst of STALE hits triggers one background refresh.
const revalidating = new Set();

class ClientError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

class GraphQLSyntaxError extends ClientError {
  constructor(message) {
    super(400, `Syntax Error: ${message}`, "GRAPHQL_PARSE_FAILED");
  }
}

class NotCacheable extends Error {}

export default {
  async fetch(request, env, ctx) {
    try {
      return await handle(request, env, ctx);
    } catch (err) {
      if (err instanceof ClientError) {
        return errorResponse(err.status, err.message, err.code);
      }
      log("error", "unhandled", { message: String(err && err.message), stack: err && err.stack });
      return errorResponse(500, "Internal edge error", "INTERNAL_SERVER_ERROR");
    }
  },
};

// ---------------------------------------------------------------------------
// Configuration

function readConfig(env) {
  const num = (name, min) => {
    const raw = env[name];
    const value = typeof raw === "number" ? raw : Number.parseFloat(raw);
    return Number.isFinite(value) && value >= min ? value : DEFAULTS[name];
  };
  let originUrl = null;
  try {
    if (env.ORIGIN_URL) originUrl = new URL(env.ORIGIN_URL);
  } catch {
    originUrl = null;
  }
  return {
    ttl: num("CACHE_TTL_SECONDS", 0),
    swr: num("STALE_WHILE_REVALIDATE_SECONDS", 0),
    sie: num("STALE_IF_ERROR_SECONDS", 0),
    maxBodyBytes: Math.floor(num("MAX_BODY_BYTES", 1)),
    purgeBatchSize: Math.max(1, Math.floor(num("PURGE_BATCH_SIZE", 1))),
    originTimeoutMs: num("ORIGIN_TIMEOUT_MS", 1),
    apiBase: String(env.CF_API_BASE || DEFAULTS.CF_API_BASE).replace(/\/+$/, ""),
    authMode: env.CACHE_AUTH_MODE === "bypass" ? "bypass" : "scope",
    originUrl,
    zoneId: env.ZONE_ID || "",
    purgeToken: env.PURGE_API_TOKEN || "",
  };
}

// ---------------------------------------------------------------------------
// Request handling

async function handle(request, env, ctx) {
  const method = request.method;
  if (method !== "GET" && method !== "POST" && method !== "OPTIONS") {
    return errorResponse(405, `Method ${method} is not allowed`, "METHOD_NOT_ALLOWED", {
      allow: "GET, POST, OPTIONS",
    });
  }
  const cfg = readConfig(env);
  if (!cfg.originUrl) {
    log("error", "config", { message: "ORIGIN_URL is missing or invalid" });
    return errorResponse(500, "Edge worker is not configured", "INTERNAL_SERVER_ERROR");
  }
  const url = new URL(request.url);

  if (request.headers.get("upgrade")) {
    // WebSocket subscriptions: hand the original request over untouched.
    try {
      return await fetch(originTarget(cfg, url), request);
    } catch (err) {
      return originUnreachable(err, "BYPASS");
    }
  }
  if (method === "OPTIONS") {
    return passThrough(cfg, request, url, request.body);
  }

  let params;
  let bodyText = null;
  if (method === "GET") {
    const sp = url.searchParams;
    if (!sp.has("query") && !sp.has("extensions")) {
      return passThrough(cfg, request, url, null);
    }
    params = paramsFromSearch(sp);
  } else {
    const declared = request.headers.get("content-length");
    if (declared !== null && Number(declared) > cfg.maxBodyBytes) {
      return tooLarge(cfg);
    }
    const contentType = (request.headers.get("content-type") || "").toLowerCase();
    if (contentType && !contentType.includes("json")) {
      // multipart uploads, application/graphql, ...: not parsed, never cached.
      return passThrough(cfg, request, url, request.body);
    }
    bodyText = await readBodyLimited(request, cfg.maxBodyBytes);
    if (bodyText === null) return tooLarge(cfg);
    let body;
    try {
      body = JSON.parse(bodyText);
    } catch {
      throw new ClientError(400, "Request body is not valid JSON", "BAD_REQUEST");
    }
    if (Array.isArray(body)) {
      return handleBatch(cfg, request, url, ctx, body, bodyText);
    }
    params = paramsFromBody(body);
  }

  const cache = caches.default;
  let queryText = params.query;
  let learnApq = false;
  let injectQuery = false;
  if (queryText === null) {
    if (!params.apqHash) throw new ClientError(400, "Must provide query string.", "BAD_REQUEST");
    queryText = await lookupApq(cache, url, params.apqHash);
    if (queryText === null) {
      // The edge has not seen this document's text, so its operation type is
      // unknown: let the origin answer (it may know the hash) and cache nothing.
      return passThrough(cfg, request, url, bodyText);
    }
    injectQuery = true;
  } else if (params.apqHash) {
    if ((await sha256Hex(queryText)) !== params.apqHash) {
      // The origin rejects a hash mismatch; never learn or cache such a pair.
      return passThrough(cfg, request, url, bodyText);
    }
    learnApq = true;
  }

  const tokens = tokenize(queryText);
  const doc = analyzeDocument(tokens);
  if (doc.unsupported) return passThrough(cfg, request, url, bodyText);
  const op = selectOperation(doc.operations, params.operationName);

  const forward = () =>
    originRequest(cfg, request, url, injectQuery ? withQueryText(method, url, params, queryText) : bodyText, injectQuery);

  // Learned for mutations too, so a later hash-only mutation still purges.
  if (learnApq) ctx.waitUntil(storeApq(cache, url, params.apqHash, queryText));
  if (op.type === "mutation") return forwardMutation(cfg, ctx, forward);
  if (op.type !== "query" || doc.duplicateNames) return passThroughRequest(cfg, forward);

  const credentials = credentialMaterial(request.headers);
  if (credentials !== null && cfg.authMode === "bypass") return passThroughRequest(cfg, forward);

  let keyUrl;
  try {
    keyUrl = await cacheKeyUrl(url, request.headers, {
      query: normalizeTokens(tokens),
      operationName: op.name,
      variables: params.variables,
      extensions: params.extensions,
      credentials,
    });
  } catch (err) {
    if (err instanceof NotCacheable) return passThroughRequest(cfg, forward);
    throw err;
  }
  return serveQuery(cfg, ctx, keyUrl, forward, op.name);
}

function paramsFromSearch(sp) {
  return normalizeParams({
    query: sp.get("query"),
    operationName: sp.get("operationName"),
    variables: parseJsonParam(sp.get("variables"), "variables"),
    extensions: parseJsonParam(sp.get("extensions"), "extensions"),
  });
}

function parseJsonParam(raw, name) {
  if (raw === null || raw === "") return null;
  try {
    return JSON.parse(raw);
  } catch {
    throw new ClientError(400, `The "${name}" parameter is not valid JSON`, "BAD_REQUEST");
  }
}

function paramsFromBody(body) {
  if (body === null || typeof body !== "object") {
    throw new ClientError(400, "Request body must be a JSON object", "BAD_REQUEST");
  }
  return normalizeParams(body);
}

function normalizeParams(raw) {
  const { query = null, operationName = null, variables = null, extensions = null } = raw;
  if (query !== null && typeof query !== "string") {
    throw new ClientError(400, `"query" must be a string`, "BAD_REQUEST");
  }
  if (operationName !== null && typeof operationName !== "string") {
    throw new ClientError(400, `"operationName" must be a string`, "BAD_REQUEST");
  }
  if (variables !== null && (typeof variables !== "object" || Array.isArray(variables))) {
    throw new ClientError(400, `"variables" must be an object`, "BAD_REQUEST");
  }
  if (extensions !== null && (typeof extensions !== "object" || Array.isArray(extensions))) {
    throw new ClientError(400, `"extensions" must be an object`, "BAD_REQUEST");
  }
  let apqHash = null;
  if (extensions && extensions.persistedQuery !== undefined) {
    const pq = extensions.persistedQuery;
    if (!pq || typeof pq !== "object" || typeof pq.sha256Hash !== "string" || !/^[0-9a-fA-F]{64}$/.test(pq.sha256Hash)) {
      throw new ClientError(400, "Invalid persistedQuery extension", "BAD_REQUEST");
    }
    apqHash = pq.sha256Hash.toLowerCase();
  }
  let otherExtensions = null;
  if (extensions) {
    const { persistedQuery: _ignored, ...rest } = extensions;
    if (Object.keys(rest).length > 0) otherExtensions = rest;
  }
  return {
    query: query === "" ? null : query,
    operationName: operationName === "" ? null : operationName,
    variables: variables || {},
    extensions: otherExtensions,
    apqHash,
  };
}

// Rebuilds a hash-only APQ request with the query text the edge already knows,
// so an origin whose persisted-query store lacks the hash can still answer.
function withQueryText(method, url, params, queryText) {
  if (method === "GET") {
    const target = new URL(url);
    target.searchParams.set("query", queryText);
    return target;
  }
  return JSON.stringify({
    query: queryText,
    operationName: params.operationName,
    variables: params.variables,
    extensions: { ...(params.extensions || {}), persistedQuery: { version: 1, sha256Hash: params.apqHash } },
  });
}

async function readBodyLimited(request, limit) {
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

function tooLarge(cfg) {
  return errorResponse(413, `Request body exceeds ${cfg.maxBodyBytes} bytes`, "PAYLOAD_TOO_LARGE");
}

// ---------------------------------------------------------------------------
// Origin

function originTarget(cfg, url) {
  const base = cfg.originUrl;
  const prefix = base.pathname.replace(/\/+$/, "");
  return `${base.origin}${prefix}${url.pathname}${url.search}`;
}

function forwardHeaders(request, url) {
  const headers = new Headers(request.headers);
  for (const name of HOP_BY_HOP) headers.delete(name);
  headers.set("x-forwarded-host", url.host);
  return headers;
}

// `payload` is the body text for POST, or a replacement URL for GET.
function originRequest(cfg, request, url, payload, payloadIsRewrite = false) {
  const headers = forwardHeaders(request, url);
  let target = originTarget(cfg, url);
  let body = null;
  if (payload instanceof URL) {
    target = originTarget(cfg, payload);
  } else if (request.method === "POST") {
    body = payload;
    headers.delete("content-length");
    if (payloadIsRewrite) headers.set("content-type", "application/json");
  }
  return new Request(target, { method: request.method, headers, body, redirect: "manual" });
}

async function fetchOrigin(cfg, originReq, { timeout = true } = {}) {
  if (!timeout) return fetch(originReq);
  // The timeout only covers the wait for response headers, so streamed
  // responses (subscriptions over SSE) are not cut off later.
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error("origin timeout")), cfg.originTimeoutMs);
  try {
    return await fetch(originReq, { signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

// `body` is the already-read text, or the client's stream; a streamed upload
// gets no header timeout since the origin answers only after receiving it.
function passThrough(cfg, request, url, body) {
  const makeRequest = () =>
    new Request(originTarget(cfg, url), {
      method: request.method,
      headers: forwardHeaders(request, url),
      body: request.method === "GET" ? null : body,
      redirect: "manual",
    });
  return passThroughRequest(cfg, makeRequest, { timeout: typeof body === "string" || body === null });
}

async function passThroughRequest(cfg, makeRequest, options) {
  let response;
  try {
    response = await fetchOrigin(cfg, makeRequest(), options);
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  return withCacheStatus(response, "BYPASS");
}

function originUnreachable(err, status) {
  log("error", "origin_unreachable", { message: String(err && err.message) });
  return errorResponse(502, "Origin unreachable", "BAD_GATEWAY", { [CACHE_STATUS_HEADER]: status });
}

function withCacheStatus(response, status) {
  const out = new Response(response.body, response);
  out.headers.set(CACHE_STATUS_HEADER, status);
  return out;
}

// ---------------------------------------------------------------------------
// Mutations and purge

async function forwardMutation(cfg, ctx, makeRequest) {
  let response;
  try {
    response = await fetchOrigin(cfg, makeRequest());
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  const copy = response.clone();
  ctx.waitUntil(purgeFromResponse(cfg, copy));
  return withCacheStatus(response, "BYPASS");
}

async function handleBatch(cfg, request, url, ctx, items, bodyText) {
  // Batches are forwarded whole and never cached; they only matter here
  // because a mutation inside one still has to purge.
  let hasMutation = false;
  for (const item of items) {
    try {
      const params = paramsFromBody(item);
      if (params.query === null) continue;
      const doc = analyzeDocument(tokenize(params.query));
      if (!doc.unsupported && selectOperation(doc.operations, params.operationName).type === "mutation") {
        hasMutation = true;
      }
    } catch {
      // The origin reports per-item errors itself.
    }
  }
  const makeRequest = () => originRequest(cfg, request, url, bodyText);
  return hasMutation ? forwardMutation(cfg, ctx, makeRequest) : passThroughRequest(cfg, makeRequest);
}

async function purgeFromResponse(cfg, response) {
  try {
    const payload = JSON.parse(await response.text());
    const results = Array.isArray(payload) ? payload : [payload];
    const tags = new Set();
    for (const result of results) {
      if (result && typeof result === "object") {
        for (const tag of collectEntityTags(result.data)) tags.add(tag);
      }
    }
    await purgeTags(cfg, [...tags]);
  } catch (err) {
    log("error", "purge_skipped", { message: String(err && err.message) });
  }
}

async function purgeTags(cfg, tags) {
  if (tags.length === 0) return;
  if (!cfg.zoneId || !cfg.purgeToken) {
    log("warn", "purge_not_configured", { tags: tags.length });
    return;
  }
  const endpoint = `${cfg.apiBase}/zones/${encodeURIComponent(cfg.zoneId)}/purge_cache`;
  const batches = [];
  for (let i = 0; i < tags.length; i += cfg.purgeBatchSize) {
    batches.push(tags.slice(i, i + cfg.purgeBatchSize));
  }
  if (batches.length > MAX_PURGE_REQUESTS) {
    const dropped = batches.splice(MAX_PURGE_REQUESTS);
    log("warn", "purge_truncated", { droppedTags: dropped.reduce((n, b) => n + b.length, 0) });
  }
  // Sequential on purpose: Workers allow only 6 simultaneous connections.
  for (const batch of batches) {
    try {
      const res = await fetch(endpoint, {
        method: "POST",
        headers: { authorization: `Bearer ${cfg.purgeToken}`, "content-type": "application/json" },
        body: JSON.stringify({ tags: batch }),
      });
      let body = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      if (!res.ok || !body || body.success !== true) {
        log("error", "purge_failed", {
          status: res.status,
          tags: batch.length,
          errors: body && body.errors ? body.errors : null,
        });
      }
    } catch (err) {
      log("error", "purge_failed", { status: 0, tags: batch.length, message: String(err && err.message) });
    }
  }
}

// Type:id for every object in `data` carrying both __typename and id, in
// document order. Iterative so deeply nested origin data cannot blow the stack.
function collectEntityTags(data) {
  const tags = [];
  const seen = new Set();
  const stack = [data];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === null || typeof node !== "object") continue;
    if (Array.isArray(node)) {
      for (let i = node.length - 1; i >= 0; i--) stack.push(node[i]);
      continue;
    }
    const typename = node.__typename;
    const id = node.id;
    if (typeof typename === "string" && typename !== "" && (typeof id === "string" || typeof id === "number")) {
      const tag = `${encodeTagPart(typename)}:${encodeTagPart(String(id))}`;
      if (tag.length <= TAG_MAX_CHARS && !seen.has(tag)) {
        seen.add(tag);
        tags.push(tag);
      }
    }
    const values = Object.values(node);
    for (let i = values.length - 1; i >= 0; i--) stack.push(values[i]);
  }
  return tags;
}

// Cache-Tag must be printable ASCII without spaces; commas separate tags.
// toWellFormed() because encodeURIComponent throws on lone surrogates.
function encodeTagPart(value) {
  return encodeURIComponent(value.toWellFormed());
}

function operationTag(name) {
  // "-" cannot occur in a GraphQL name, so this never collides with Type:id.
  return name ? `gql-op:${encodeTagPart(name)}` : "gql-op-anonymous";
}

// ---------------------------------------------------------------------------
// Query caching

async function serveQuery(cfg, ctx, keyUrl, makeRequest, opName) {
  const response = await lookupOrFetch(cfg, ctx, keyUrl, makeRequest, opName);
  // Shows which requests share an entry; reveals nothing the caller lacks.
  response.headers.set(CACHE_KEY_HEADER, keyUrl.slice(keyUrl.lastIndexOf("/") + 1));
  return response;
}

async function lookupOrFetch(cfg, ctx, keyUrl, makeRequest, opName) {
  const cache = caches.default;
  const key = new Request(keyUrl);
  const cached = await cache.match(key);
  let age = Infinity;
  if (cached) {
    const storedAt = Number(cached.headers.get(STORED_AT_HEADER));
    age = Number.isFinite(storedAt) && storedAt > 0 ? Math.max(0, Date.now() - storedAt) / 1000 : Infinity;
  }
  if (cached && age < cfg.ttl) return fromCache(cached, "HIT", age);
  if (cached && age < cfg.ttl + cfg.swr) {
    if (!revalidating.has(keyUrl)) {
      revalidating.add(keyUrl);
      ctx.waitUntil(revalidate(cfg, key, makeRequest, opName).finally(() => revalidating.delete(keyUrl)));
    }
    return fromCache(cached, "STALE", age);
  }
  const canServeStaleOnError = cached && age < cfg.ttl + cfg.sie;

  let response;
  try {
    response = await fetchOrigin(cfg, makeRequest());
  } catch (err) {
    if (canServeStaleOnError) return fromCache(cached, "ERROR-STALE", age);
    return originUnreachable(err, "MISS");
  }
  if (response.status >= 500 && canServeStaleOnError) {
    await response.body?.cancel();
    return fromCache(cached, "ERROR-STALE", age);
  }
  if (cached) await cached.body?.cancel();

  const text = await response.text();
  const entry = prepareEntry(cfg, response, text, opName);
  const headers = new Headers(entry.clientHeaders);
  headers.set(CACHE_STATUS_HEADER, cached ? "REVALIDATED" : "MISS");
  headers.set("age", "0");
  if (entry.stored) {
    headers.set("cache-tag", entry.tagHeader);
    ctx.waitUntil(putEntry(cache, key, entry.stored));
  }
  return new Response(text, { status: response.status, statusText: response.statusText, headers });
}

async function revalidate(cfg, key, makeRequest, opName) {
  try {
    const response = await fetchOrigin(cfg, makeRequest());
    if (response.status >= 500) {
      await response.body?.cancel();
      log("warn", "revalidate_failed", { status: response.status });
      return;
    }
    const text = await response.text();
    const entry = prepareEntry(cfg, response, text, opName);
    if (entry.stored) await putEntry(caches.default, key, entry.stored);
  } catch (err) {
    log("warn", "revalidate_failed", { message: String(err && err.message) });
  }
}

async function putEntry(cache, key, response) {
  try {
    await cache.put(key, response);
  } catch (err) {
    log("error", "cache_put_failed", { message: String(err && err.message) });
  }
}

// Decides whether an origin response may be stored and builds both the
// client-facing headers and, when cacheable, the Response to store.
function prepareEntry(cfg, response, text, opName) {
  const clientHeaders = new Headers(response.headers);
  // The body was decoded by fetch(); drop headers describing the wire form.
  for (const name of ["content-encoding", "content-length", ...HOP_BY_HOP]) clientHeaders.delete(name);
  clientHeaders.delete("cache-tag");

  const reason = uncacheableReason(response, text);
  if (reason !== null) return { clientHeaders, stored: null };
  const data = JSON.parse(text).data;
  const tags = [operationTag(opName), ...collectEntityTags(data)];
  const tagHeader = tags.join(",");
  if (tagHeader.length > CACHE_TAG_MAX_BYTES) {
    // Truncating would leave objects this entry shows that no purge can reach,
    // so an entry whose tags do not fit is not stored at all.
    log("warn", "cache_tags_overflow", { tags: tags.length, bytes: tagHeader.length });
    return { clientHeaders, stored: null };
  }

  const storedHeaders = new Headers(clientHeaders);
  const originCacheControl = response.headers.get("cache-control");
  if (originCacheControl) storedHeaders.set(ORIGIN_CACHE_CONTROL_HEADER, originCacheControl);
  const lifetime = Math.max(1, Math.ceil(cfg.ttl + Math.max(cfg.swr, cfg.sie)));
  storedHeaders.set("cache-control", `max-age=${lifetime}`);
  storedHeaders.set("cache-tag", tagHeader);
  storedHeaders.set(STORED_AT_HEADER, String(Date.now()));
  const stored = new Response(text, { status: response.status, headers: storedHeaders });
  return { clientHeaders, stored, tagHeader };
}

function uncacheableReason(response, text) {
  if (response.status !== 200) return "status";
  const h = response.headers;
  if (h.has("set-cookie")) return "set-cookie";
  const cc = (h.get("cache-control") || "").toLowerCase();
  if (/(?:^|[\s,])(?:private|no-store)(?:$|[\s,=])/.test(cc)) return "cache-control";
  const vary = (h.get("vary") || "")
    .split(",")
    .map((v) => v.trim().toLowerCase())
    .filter(Boolean);
  if (vary.some((v) => !KEYED_VARY.has(v))) return "vary";
  if (!(h.get("content-type") || "").toLowerCase().includes("json")) return "content-type";
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    return "body";
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) return "body";
  if (payload.errors !== undefined && !(Array.isArray(payload.errors) && payload.errors.length === 0)) {
    return "errors";
  }
  if (!payload.data || typeof payload.data !== "object") return "no-data";
  return null;
}

function fromCache(cached, status, ageSeconds) {
  const headers = new Headers(cached.headers);
  const originCacheControl = headers.get(ORIGIN_CACHE_CONTROL_HEADER);
  headers.delete("cache-control");
  if (originCacheControl) headers.set("cache-control", originCacheControl);
  headers.delete(ORIGIN_CACHE_CONTROL_HEADER);
  headers.delete(STORED_AT_HEADER);
  headers.set(CACHE_STATUS_HEADER, status);
  headers.set("age", String(Math.floor(ageSeconds)));
  return new Response(cached.body, { status: cached.status, statusText: cached.statusText, headers });
}

// ---------------------------------------------------------------------------
// Cache keys

function credentialMaterial(headers) {
  const authorization = headers.get("authorization") || "";
  const cookie = headers.get("cookie") || "";
  if (!authorization && !cookie) return null;
  return `authorization\n${authorization}\ncookie\n${cookie}`;
}

async function cacheKeyUrl(url, headers, parts) {
  const scope = parts.credentials === null ? "" : await sha256Hex(parts.credentials);
  const material = JSON.stringify([
    KEY_VERSION,
    url.pathname,
    parts.query,
    parts.operationName,
    canonicalJson(parts.variables, 0),
    parts.extensions === null ? null : canonicalJson(parts.extensions, 0),
    // The response may depend on these (content negotiation, CORS).
    headers.get("accept") || "",
    headers.get("origin") || "",
    scope,
  ]);
  // Same hostname as the Worker, as Cloudflare recommends for Cache API keys.
  return `${url.origin}${KEY_PREFIX}${await sha256Hex(material)}`;
}

function canonicalJson(value, depth) {
  if (depth > MAX_JSON_DEPTH) throw new NotCacheable("variables nested too deeply");
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v, depth + 1)).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k], depth + 1)}`).join(",")}}`;
}

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  let hex = "";
  for (const byte of new Uint8Array(digest)) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

// The APQ hash is sha256 of the exact query text, so the mapping is only ever
// learned from text the edge has hashed itself (no poisoning by a bad pair).
function apqKey(url, hash) {
  return new Request(`${url.origin}${KEY_PREFIX}apq/${hash}`);
}

async function lookupApq(cache, url, hash) {
  const hit = await cache.match(apqKey(url, hash));
  return hit ? hit.text() : null;
}

async function storeApq(cache, url, hash, queryText) {
  const response = new Response(queryText, {
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": `max-age=${APQ_MAPPING_TTL_SECONDS}` },
  });
  await putEntry(cache, apqKey(url, hash), response);
}

// ---------------------------------------------------------------------------
// GraphQL lexer and a minimal document scan

const PUNCTUATORS = new Set(["!", "$", "&", "(", ")", ":", "=", "@", "[", "]", "{", "|", "}"]);
const NAME_START = /[_A-Za-z]/;
const NAME_RE = /[_A-Za-z][_0-9A-Za-z]*/y;
const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

function tokenize(src) {
  const tokens = [];
  const n = src.length;
  let i = 0;
  while (i < n) {
    const ch = src[i];
    if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || ch === "," || ch === "\ufeff") {
      i++;
      continue;
    }
    if (ch === "#") {
      while (i < n && src[i] !== "\n" && src[i] !== "\r") i++;
      continue;
    }
    if (PUNCTUATORS.has(ch)) {
      tokens.push({ kind: "punct", value: ch });
      i++;
      continue;
    }
    if (ch === ".") {
      if (src.startsWith("...", i)) {
        tokens.push({ kind: "punct", value: "..." });
        i += 3;
        continue;
      }
      throw new GraphQLSyntaxError(`Unexpected "." at offset ${i}`);
    }
    if (NAME_START.test(ch)) {
      NAME_RE.lastIndex = i;
      const value = NAME_RE.exec(src)[0];
      tokens.push({ kind: "name", value });
      i += value.length;
      continue;
    }
    if (ch === "-" || (ch >= "0" && ch <= "9")) {
      NUMBER_RE.lastIndex = i;
      const m = NUMBER_RE.exec(src);
      const end = m ? i + m[0].length : i;
      if (!m || (end < n && /[_0-9A-Za-z.]/.test(src[end]))) {
        throw new GraphQLSyntaxError(`Invalid number at offset ${i}`);
      }
      tokens.push({ kind: "number", value: m[0] });
      i = end;
      continue;
    }
    if (ch === '"') {
      const end = src.startsWith('"""', i) ? scanBlockString(src, i) : scanString(src, i);
      tokens.push({ kind: "string", value: src.slice(i, end) });
      i = end;
      continue;
    }
    throw new GraphQLSyntaxError(`Unexpected character ${JSON.stringify(ch)} at offset ${i}`);
  }
  return tokens;
}

function scanString(src, start) {
  let i = start + 1;
  while (i < src.length) {
    const ch = src[i];
    if (ch === '"') return i + 1;
    if (ch === "\n" || ch === "\r") break;
    if (ch === "\\") {
      const next = src[i + 1];
      if (next === "u") {
        const m = /^(?:[0-9A-Fa-f]{4}|\{[0-9A-Fa-f]{1,6}\})/.exec(src.slice(i + 2, i + 10));
        if (!m) throw new GraphQLSyntaxError(`Invalid Unicode escape at offset ${i}`);
        i += 2 + m[0].length;
        continue;
      }
      if (next === undefined || !'"\\/bfnrt'.includes(next)) {
        throw new GraphQLSyntaxError(`Invalid escape at offset ${i}`);
      }
      i += 2;
      continue;
    }
    i++;
  }
  throw new GraphQLSyntaxError(`Unterminated string at offset ${start}`);
}

function scanBlockString(src, start) {
  let i = start + 3;
  while (i < src.length) {
    if (src.startsWith('\\"""', i)) {
      i += 4;
      continue;
    }
    if (src.startsWith('"""', i)) return i + 3;
    i++;
  }
  throw new GraphQLSyntaxError(`Unterminated block string at offset ${start}`);
}

// Canonical text for the cache key: tokens only, separated where two adjacent
// tokens would otherwise lex differently (name/number runs, "" followed by ").
function normalizeTokens(tokens) {
  let out = "";
  let prev = null;
  for (const token of tokens) {
    if (prev) {
      const words = (prev.kind === "name" || prev.kind === "number") && (token.kind === "name" || token.kind === "number");
      const strings = prev.kind === "string" && token.kind === "string";
      if (words || strings) out += " ";
    }
    out += token.value;
    prev = token;
  }
  return out;
}

const CLOSERS = { "}": "{", ")": "(", "]": "[" };

// Finds the executable definitions and their operation types. It checks
// bracket balance but is not a validator: the origin still parses the
// document, and a document the origin rejects yields errors, which are never
// cached.
function analyzeDocument(tokens) {
  const operations = [];
  let i = 0;
  if (tokens.length === 0) throw new GraphQLSyntaxError("Unexpected end of document");
  while (i < tokens.length) {
    const t = tokens[i];
    let type = null;
    let name = null;
    if (t.kind === "punct" && t.value === "{") {
      type = "query";
    } else if (t.kind === "name" && (t.value === "query" || t.value === "mutation" || t.value === "subscription")) {
      type = t.value;
      i++;
      if (i < tokens.length && tokens[i].kind === "name") name = tokens[i].value;
    } else if (t.kind === "name" && t.value === "fragment") {
      type = "fragment";
    } else if ((t.kind === "name" && TYPE_SYSTEM_KEYWORDS.has(t.value)) || t.kind === "string") {
      checkBalanced(tokens, i);
      return { operations, unsupported: true, duplicateNames: false };
    } else {
      throw new GraphQLSyntaxError(`Unexpected ${JSON.stringify(t.value)}`);
    }
    i = skipDefinition(tokens, i);
    if (type !== "fragment") operations.push({ type, name });
  }
  const names = operations.map((o) => o.name).filter((n) => n !== null);
  return { operations, unsupported: false, duplicateNames: new Set(names).size !== names.length };
}

// Returns the index after the definition's top-level selection set.
function skipDefinition(tokens, i) {
  const stack = [];
  for (; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== "punct") continue;
    if (t.value === "{" || t.value === "(" || t.value === "[") {
      stack.push(t.value);
    } else if (t.value in CLOSERS) {
      if (stack.pop() !== CLOSERS[t.value]) throw new GraphQLSyntaxError(`Unexpected "${t.value}"`);
      if (stack.length === 0 && t.value === "}") return i + 1;
    }
  }
  throw new GraphQLSyntaxError(stack.length ? "Unbalanced brackets" : "Expected a selection set");
}

function checkBalanced(tokens, i) {
  const stack = [];
  for (; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== "punct") continue;
    if (t.value === "{" || t.value === "(" || t.value === "[") stack.push(t.value);
    else if (t.value in CLOSERS && stack.pop() !== CLOSERS[t.value]) {
      throw new GraphQLSyntaxError(`Unexpected "${t.value}"`);
    }
  }
  if (stack.length) throw new GraphQLSyntaxError("Unbalanced brackets");
}

function selectOperation(operations, operationName) {
  if (operations.length === 0) {
    throw new ClientError(400, "Document does not contain an operation", "BAD_REQUEST");
  }
  if (operationName !== null) {
    const op = operations.find((o) => o.name === operationName);
    if (!op) throw new ClientError(400, `Unknown operation named "${operationName}".`, "BAD_REQUEST");
    return op;
  }
  if (operations.length > 1) {
    throw new ClientError(400, "Must provide operation name if query contains multiple operations.", "BAD_REQUEST");
  }
  return operations[0];
}

// ---------------------------------------------------------------------------
// Helpers

function errorResponse(status, message, code, extraHeaders = {}) {
  return new Response(JSON.stringify({ errors: [{ message, extensions: { code } }] }), {
    status,
    headers: {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      [CACHE_STATUS_HEADER]: "BYPASS",
      ...extraHeaders,
    },
  });
}

function log(level, event, fields) {
  const line = JSON.stringify({ level, event, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}
