// FraiseQL edge cache: caches GraphQL queries in the Workers Cache API, forwards
// mutations to ORIGIN_URL, invalidates what they return in this data center at
// once and everywhere through a purge-by-tag queue.
// No imports on purpose: this exact file is what the Pulumi program uploads.

const CACHE_STATUS_HEADER = "x-fraiseql-cache";
const CACHE_KEY_HEADER = "x-fraiseql-cache-key";
// Stored entries only: "fetchedAtMs,ttl,swr,sie" and the origin's Cache-Control
// (the stored copy's own Cache-Control is the Cache API lifetime).
const META_HEADER = "x-fraiseql-meta";
const ORIGIN_CACHE_CONTROL_HEADER = "x-fraiseql-origin-cache-control";
const KEY_PREFIX = "/__fraiseql-cache/";
const KEY_VERSION = "v2";
const LOCAL_INVALIDATIONS_PATH = `${KEY_PREFIX}local-invalidations`;
// Added to every selection set on the way to the origin and removed from the
// answer; an alias (not a bare __typename) so the client's own selection is
// never confused with ours.
const INJECTED_TYPENAME = "_fraiseqlEdgeTypename";
const TYPE_TAG_PREFIX = "gql-type:";

// Cloudflare: the aggregate Cache-Tag header may not exceed 16 KB (after the
// field name) and purge API calls accept tags of at most 1,024 characters.
const CACHE_TAG_MAX_BYTES = 16 * 1024;
const TAG_MAX_CHARS = 1024;
// Variables nested deeper than this are forwarded but not cached; deeper than
// MAX_JSON_NESTING they are refused (the canonical printer recurses).
const MAX_CACHEABLE_JSON_DEPTH = 64;
const MAX_JSON_NESTING = 1000;
const MAX_SELECTION_DEPTH = 200;
const MAX_BATCH_ITEMS = 50;
const APQ_MEMO_MAX = 2000;
const DOCUMENT_MEMO_MAX = 2000;
const QUERY_MEMO_MAX = 2000;
const MAX_MEMO_TEXT = 16384;
const MAX_LOCAL_TOMBSTONES = 5000;
const MUTATION_RETRY_AFTER_SECONDS = 60;
const PURGE_RETRY_MAX_SECONDS = 300;

// Cloudflare's purge limits for tag purges (per account, token bucket). The
// consumer paces calls at the sustained rate and never spends the burst.
const PURGE_PLANS = {
  free: { perSecond: 5 / 60 },
  pro: { perSecond: 5 },
  business: { perSecond: 10 },
  enterprise: { perSecond: 50 },
};

const DEFAULTS = {
  CACHE_TTL_SECONDS: 60,
  STALE_WHILE_REVALIDATE_SECONDS: 30,
  STALE_IF_ERROR_SECONDS: 300,
  MAX_BODY_BYTES: 1048576,
  PURGE_BATCH_SIZE: 100,
  ORIGIN_TIMEOUT_MS: 10000,
  CF_API_BASE: "https://api.cloudflare.com/client/v4",
  CACHE_AUTH_MODE: "scope",
  PURGE_PLAN: "enterprise",
  MAX_TAGS_PER_MUTATION: 100,
  KEYED_HEADERS: "accept,origin",
  CREDENTIAL_HEADERS: "authorization,cookie,x-api-key",
  FORWARDED_HEADERS: "user-agent,traceparent,tracestate,x-request-id",
  UNKEYED_COOKIES: "__cflb",
  STRIPPED_QUERY_PARAMS: "utm_*,fbclid,gclid",
  ORIGIN_AUTH_HEADER: "x-fraiseql-origin-auth",
  LOCAL_INVALIDATION_SECONDS: 300,
  LOCAL_INVALIDATION_REFRESH_MS: 250,
};

const GRAPHQL_PARAMS = ["query", "operationName", "variables", "extensions"];
const JSON_MEDIA_TYPES = new Set(["application/json", "application/graphql+json"]);
const GRAPHQL_MEDIA_TYPE = "application/graphql";
const ACCEPTED_POST_TYPES = "application/json, application/graphql+json, application/graphql";
const GRAPHQL_RESPONSE_TYPE = "application/graphql-response+json";
const CORS_PREFLIGHT_HEADERS = ["access-control-request-method", "access-control-request-headers"];
const WEBSOCKET_HEADERS = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"];
const RESPONSE_WIRE_HEADERS = [
  "content-encoding",
  "content-length",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "trailer",
];

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

// Per-isolate state. Nothing here is authoritative: the Cache API, KV and the
// purge queue are; these only save round trips.
const revalidating = new Set();
const inflight = new Map();
const apqMemo = new Map();
const documentMemo = new Map();
const queryMemo = new Map();
const configMemo = new WeakMap();
const localTombstones = { tags: new Map(), readAt: -Infinity };
let lastPurgeCallAt = -Infinity;

class ClientError extends Error {
  constructor(status, message, code, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

class GraphQLSyntaxError extends ClientError {
  constructor(message) {
    super(400, `Syntax Error: ${message}`, "GRAPHQL_PARSE_FAILED");
  }
}

// A JSON number kept as its source text, so 9007199254740993 survives.
class RawNumber {
  constructor(raw) {
    this.raw = raw;
  }
  toJSON() {
    return JSON.rawJSON(this.raw);
  }
}

export default {
  async fetch(request, env, ctx) {
    try {
      return await handle(request, env, ctx);
    } catch (err) {
      if (err instanceof ClientError) {
        return errorResponse(request, err.status, err.message, err.code, err.headers);
      }
      log("error", "unhandled", { message: String(err && err.message), stack: err && err.stack });
      return errorResponse(request, 500, "Internal edge error", "INTERNAL_SERVER_ERROR");
    }
  },

  async queue(batch, env) {
    await consumePurgeBatch(batch, readConfig(env));
  },
};

// ---------------------------------------------------------------------------
// Configuration

function readConfig(env) {
  const memo = configMemo.get(env);
  if (memo) return memo;
  const num = (name, min) => {
    const raw = env[name];
    const value = typeof raw === "number" ? raw : Number.parseFloat(raw);
    return Number.isFinite(value) && value >= min ? value : DEFAULTS[name];
  };
  const list = (name) =>
    String(env[name] ?? DEFAULTS[name])
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean);
  let originUrl = null;
  try {
    if (env.ORIGIN_URL) originUrl = new URL(env.ORIGIN_URL);
  } catch {
    originUrl = null;
  }
  const originAuthHeader = String(env.ORIGIN_AUTH_HEADER || DEFAULTS.ORIGIN_AUTH_HEADER).trim().toLowerCase();
  // The auth header is the edge's own: never keyed, never taken from a client.
  const notAuth = (name) => name !== originAuthHeader;
  const plan = PURGE_PLANS[String(env.PURGE_PLAN || "").toLowerCase()] ? String(env.PURGE_PLAN).toLowerCase() : DEFAULTS.PURGE_PLAN;
  const cfg = {
    ttl: num("CACHE_TTL_SECONDS", 0),
    swr: num("STALE_WHILE_REVALIDATE_SECONDS", 0),
    sie: num("STALE_IF_ERROR_SECONDS", 0),
    maxBodyBytes: Math.floor(num("MAX_BODY_BYTES", 1)),
    purgeBatchSize: Math.min(100, Math.max(1, Math.floor(num("PURGE_BATCH_SIZE", 1)))),
    originTimeoutMs: num("ORIGIN_TIMEOUT_MS", 1),
    apiBase: String(env.CF_API_BASE || DEFAULTS.CF_API_BASE).replace(/\/+$/, ""),
    authMode: env.CACHE_AUTH_MODE === "bypass" ? "bypass" : "scope",
    purgePlan: plan,
    purgeIntervalMs: 1000 / PURGE_PLANS[plan].perSecond,
    maxTagsPerMutation: Math.max(1, Math.floor(num("MAX_TAGS_PER_MUTATION", 1))),
    keyedHeaders: list("KEYED_HEADERS").filter(notAuth),
    credentialHeaders: list("CREDENTIAL_HEADERS").filter(notAuth),
    forwardedHeaders: list("FORWARDED_HEADERS").filter(notAuth),
    unkeyedCookies: new Set(
      String(env.UNKEYED_COOKIES ?? DEFAULTS.UNKEYED_COOKIES)
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean),
    ),
    strippedParams: list("STRIPPED_QUERY_PARAMS"),
    originAuthHeader,
    originAuthToken: typeof env.ORIGIN_AUTH_TOKEN === "string" ? env.ORIGIN_AUTH_TOKEN : "",
    localInvalidationSeconds: num("LOCAL_INVALIDATION_SECONDS", 1),
    localRefreshMs: num("LOCAL_INVALIDATION_REFRESH_MS", 0),
    originUrl,
    zoneId: env.ZONE_ID || "",
    purgeToken: env.PURGE_API_TOKEN || "",
  };
  configMemo.set(env, cfg);
  return cfg;
}

// ---------------------------------------------------------------------------
// Request handling

async function handle(request, env, ctx) {
  const method = request.method;
  if (method !== "GET" && method !== "POST" && method !== "OPTIONS") {
    throw new ClientError(405, `Method ${method} is not allowed`, "METHOD_NOT_ALLOWED", { allow: "GET, POST, OPTIONS" });
  }
  const cfg = readConfig(env);
  if (!cfg.originUrl) {
    log("error", "config", { message: "ORIGIN_URL is missing or invalid" });
    return errorResponse(request, 500, "Edge worker is not configured", "INTERNAL_SERVER_ERROR");
  }
  const url = new URL(request.url);
  const hasGraphQLParams = GRAPHQL_PARAMS.some((p) => url.searchParams.has(p));
  const upgrade = (request.headers.get("upgrade") || "").toLowerCase();

  if (upgrade === "websocket" && method === "GET" && !hasGraphQLParams) {
    // graphql-ws subscriptions: the handshake goes through with the same
    // header policy as everything else; any other Upgrade is simply dropped.
    return forwardWebSocket(cfg, request, url);
  }
  if (method === "OPTIONS") {
    return passThrough(cfg, request, url, CORS_PREFLIGHT_HEADERS);
  }

  if (method === "GET" && !hasGraphQLParams) return passThrough(cfg, request, url, []);
  const body = method === "POST" ? await readPostBody(cfg, request) : null;
  const base = canonicalBase(cfg, request, url);

  // A repeat of an anonymous request already classified as a cacheable query
  // skips parsing and hashing: the key is a function of exactly these inputs.
  let fingerprint = null;
  if (base.credentials.length === 0 && (body === null || body.text.length <= MAX_MEMO_TEXT)) {
    fingerprint = `${method}\n${body ? `${body.type}\n${body.text}` : ""}\n${url.pathname}${url.search}\n${JSON.stringify(base.keyed)}`;
    const known = queryMemo.get(fingerprint);
    if (known) return serveQuery(cfg, ctx, known.keyUrl, base, known.op);
  }

  let raw;
  if (method === "GET") {
    raw = {
      query: url.searchParams.get("query"),
      operationName: url.searchParams.get("operationName"),
      variables: parseJsonParam(url.searchParams.get("variables"), "variables"),
      extensions: parseJsonParam(url.searchParams.get("extensions"), "extensions"),
    };
  } else {
    raw = parsePostBody(body, url);
  }

  if (Array.isArray(raw)) {
    if (method === "GET") throw new ClientError(400, "Batched requests must use POST", "BAD_REQUEST");
    return handleBatch(cfg, env, ctx, request, base, raw);
  }
  const op = await canonicalOperation(cfg, env, ctx, raw);
  if (method === "GET" && op.type === "mutation") {
    // GraphQL over HTTP: GET is for queries only (a link with the victim's
    // cookies must never write).
    throw new ClientError(405, "Mutations must use POST", "METHOD_NOT_ALLOWED", { allow: "POST" });
  }
  if (op.type === "mutation") return serveMutations(cfg, env, ctx, request, base, [op], false);
  if (op.type === "subscription") return passThroughRequest(cfg, () => originRequest(cfg, base, [op], false));
  if (base.credentials.length > 0 && cfg.authMode === "bypass") {
    return forwardUncached(cfg, base, op);
  }
  if (!op.cacheable) return forwardUncached(cfg, base, op);
  const keyUrl = await cacheKeyUrl(url, base, op);
  if (fingerprint !== null) remember(queryMemo, fingerprint, { keyUrl, op }, QUERY_MEMO_MAX);
  return serveQuery(cfg, ctx, keyUrl, base, op);
}

function parseJsonParam(raw, name) {
  if (raw === null || raw === "") return null;
  try {
    return parseJsonExact(raw);
  } catch {
    throw new ClientError(400, `The "${name}" parameter is not valid JSON`, "BAD_REQUEST");
  }
}

function mediaTypeOf(value) {
  if (!value) return null;
  const [type, ...params] = value.split(";");
  let charset = null;
  for (const p of params) {
    const eq = p.indexOf("=");
    if (eq > 0 && p.slice(0, eq).trim().toLowerCase() === "charset") {
      charset = p
        .slice(eq + 1)
        .trim()
        .replace(/^"|"$/g, "")
        .toLowerCase();
    }
  }
  return { type: type.trim().toLowerCase(), charset };
}

// Only the media types GraphQL over HTTP names are read; text/plain, form
// encodings and anything else a browser may send cross-site without a CORS
// preflight are refused before the body is touched.
async function readPostBody(cfg, request) {
  const media = mediaTypeOf(request.headers.get("content-type"));
  const known = media && (JSON_MEDIA_TYPES.has(media.type) || media.type === GRAPHQL_MEDIA_TYPE);
  if (!known || (media.charset !== null && media.charset !== "utf-8")) {
    throw new ClientError(415, "Unsupported Media Type: send application/json", "UNSUPPORTED_MEDIA_TYPE", {
      "accept-post": ACCEPTED_POST_TYPES,
    });
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > cfg.maxBodyBytes) throw tooLarge(cfg);
  // A declared length bounds the body already; only chunked bodies are counted.
  const text = declared !== null ? await request.text() : await readBodyLimited(request, cfg.maxBodyBytes);
  if (text === null) throw tooLarge(cfg);
  return { type: media.type, text };
}

function parsePostBody(body, url) {
  if (body.type === GRAPHQL_MEDIA_TYPE) {
    const sp = url.searchParams;
    return {
      query: body.text,
      operationName: sp.get("operationName"),
      variables: parseJsonParam(sp.get("variables"), "variables"),
      extensions: parseJsonParam(sp.get("extensions"), "extensions"),
    };
  }
  try {
    return parseJsonExact(body.text);
  } catch {
    throw new ClientError(400, "Request body is not valid JSON", "BAD_REQUEST");
  }
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
  return new ClientError(413, `Request body exceeds ${cfg.maxBodyBytes} bytes`, "PAYLOAD_TOO_LARGE");
}

// ---------------------------------------------------------------------------
// The canonical request: everything the origin is sent and everything the
// cache key is made of come from here, so the two cannot disagree.

// What is the same for every operation of one HTTP request: path, the query
// parameters the origin may read, and the header sets.
function canonicalBase(cfg, request, url) {
  const params = [];
  for (const [k, v] of url.searchParams) {
    if (GRAPHQL_PARAMS.includes(k) || isStrippedParam(cfg, k)) continue;
    params.push([k, v]);
  }
  params.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const h = request.headers;
  const keyed = [];
  for (const name of cfg.keyedHeaders) {
    const v = h.get(name);
    if (v !== null) keyed.push([name, v]);
  }
  const credentials = [];
  const unkeyed = [];
  let routingCookies = [];
  const cookieHeader = h.get("cookie");
  if (cookieHeader) {
    const split = splitCookies(cfg, cookieHeader);
    routingCookies = split.unkeyed;
    if (cfg.credentialHeaders.includes("cookie") && split.keyed.length > 0) {
      credentials.push(["cookie", split.keyed.join("; ")]);
    }
  }
  for (const name of cfg.credentialHeaders) {
    if (name === "cookie") continue;
    const v = h.get(name);
    if (v) credentials.push([name, v]);
  }
  for (const name of cfg.forwardedHeaders) {
    const v = h.get(name);
    if (v !== null) unkeyed.push([name, v]);
  }
  return { url, host: url.host, path: url.pathname, params, keyed, credentials, unkeyed, routingCookies };
}

function isStrippedParam(cfg, name) {
  const lower = name.toLowerCase();
  return cfg.strippedParams.some((p) => (p.endsWith("*") ? lower.startsWith(p.slice(0, -1)) : lower === p));
}

// Cookies named in UNKEYED_COOKIES (the load balancer's affinity cookie) only
// route the request: they are forwarded but never make it "authenticated".
function splitCookies(cfg, header) {
  const keyed = [];
  const unkeyed = [];
  for (const part of header.split(";")) {
    const pair = part.trim();
    if (!pair) continue;
    const eq = pair.indexOf("=");
    const name = eq < 0 ? pair : pair.slice(0, eq).trim();
    (cfg.unkeyedCookies.has(name) ? unkeyed : keyed).push(pair);
  }
  return { keyed, unkeyed };
}

// One operation, classified and normalized. `raw` is a parsed request body (or
// the GET parameters).
async function canonicalOperation(cfg, env, ctx, raw) {
  const params = normalizeParams(raw);
  let queryText = params.query;
  if (queryText === null) {
    if (!params.apqHash) throw new ClientError(400, "Must provide query string.", "BAD_REQUEST");
    queryText = await lookupApq(env, params.apqHash);
    if (queryText === null) {
      // The edge is the registry: an unknown hash never reaches the origin
      // unclassified. APQ clients answer this by sending the text once.
      throw new ClientError(200, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND");
    }
  } else if (params.apqHash) {
    if ((await sha256Hex(queryText)) !== params.apqHash) {
      throw new ClientError(400, "provided sha does not match query", "BAD_REQUEST");
    }
    learnApq(env, ctx, params.apqHash, queryText);
  }
  const doc = analyzeQuery(queryText);
  const op = selectOperation(doc, params.operationName);
  const depth = { max: 0 };
  const variables = params.variables === null || Object.keys(params.variables).length === 0 ? null : canonicalJson(params.variables, 0, depth);
  const extensions = params.extensions === null ? null : canonicalJson(params.extensions, 0, depth);
  return {
    type: op.type,
    name: op.name,
    selections: op.selections,
    fragments: doc.fragments,
    query: doc.normalized,
    forwardQuery: op.type === "subscription" || doc.hasSubscription ? doc.normalized : doc.injected,
    injected: !(op.type === "subscription" || doc.hasSubscription),
    variables,
    extensions,
    cacheable: depth.max <= MAX_CACHEABLE_JSON_DEPTH,
  };
}

function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof RawNumber);
}

function normalizeParams(raw) {
  if (!isPlainObject(raw)) {
    throw new ClientError(400, "Request body must be a JSON object", "BAD_REQUEST");
  }
  const { query = null, operationName = null, variables = null, extensions = null } = raw;
  if (query !== null && typeof query !== "string") {
    throw new ClientError(400, `"query" must be a string`, "BAD_REQUEST");
  }
  if (operationName !== null && typeof operationName !== "string") {
    throw new ClientError(400, `"operationName" must be a string`, "BAD_REQUEST");
  }
  if (variables !== null && !isPlainObject(variables)) {
    throw new ClientError(400, `"variables" must be an object`, "BAD_REQUEST");
  }
  if (extensions !== null && !isPlainObject(extensions)) {
    throw new ClientError(400, `"extensions" must be an object`, "BAD_REQUEST");
  }
  let apqHash = null;
  let otherExtensions = null;
  if (extensions) {
    const { persistedQuery, ...rest } = extensions;
    if (persistedQuery !== undefined) {
      const pq = persistedQuery;
      if (!isPlainObject(pq) || typeof pq.sha256Hash !== "string" || !/^[0-9a-fA-F]{64}$/.test(pq.sha256Hash)) {
        throw new ClientError(400, "Invalid persistedQuery extension", "BAD_REQUEST");
      }
      apqHash = pq.sha256Hash.toLowerCase();
    }
    if (Object.keys(rest).length > 0) otherExtensions = rest;
  }
  return {
    query: query === "" ? null : query,
    operationName: operationName === "" ? null : operationName,
    variables,
    extensions: otherExtensions,
    apqHash,
  };
}

async function cacheKeyUrl(url, base, op) {
  const scope = await credentialScope(base);
  const material = JSON.stringify([
    KEY_VERSION,
    base.path,
    base.params,
    op.query,
    op.name,
    op.variables,
    op.extensions,
    base.keyed,
    scope,
  ]);
  // Same hostname as the Worker, as Cloudflare recommends for Cache API keys.
  return `${url.origin}${KEY_PREFIX}${await sha256Hex(material)}`;
}

async function credentialScope(base) {
  if (base.credentials.length === 0) return "";
  if (base.scope === undefined) base.scope = await sha256Hex(JSON.stringify(base.credentials));
  return base.scope;
}

function originTarget(cfg, base) {
  const origin = cfg.originUrl;
  const prefix = origin.pathname.replace(/\/+$/, "");
  const search = base.params.length ? `?${new URLSearchParams(base.params)}` : "";
  return `${origin.origin}${prefix}${base.path}${search}`;
}

// Headers sent to the origin: the keyed ones, the credentials, the unkeyed
// forwarded ones and the routing cookies; nothing else the client sent.
function originHeaders(cfg, base, extra = []) {
  const headers = new Headers();
  for (const [k, v] of base.keyed) headers.set(k, v);
  for (const [k, v] of base.unkeyed) headers.set(k, v);
  let cookie = null;
  for (const [k, v] of base.credentials) {
    if (k === "cookie") cookie = v;
    else headers.set(k, v);
  }
  const cookies = [...(cookie ? [cookie] : []), ...base.routingCookies];
  if (cookies.length) headers.set("cookie", cookies.join("; "));
  for (const [k, v] of extra) headers.set(k, v);
  headers.set("x-forwarded-host", base.host);
  headers.delete(cfg.originAuthHeader);
  if (cfg.originAuthToken) headers.set(cfg.originAuthHeader, cfg.originAuthToken);
  return headers;
}

function operationBody(op) {
  let out = `{"query":${JSON.stringify(op.forwardQuery)}`;
  if (op.name !== null) out += `,"operationName":${JSON.stringify(op.name)}`;
  if (op.variables !== null) out += `,"variables":${op.variables}`;
  if (op.extensions !== null) out += `,"extensions":${op.extensions}`;
  return `${out}}`;
}

// Every GraphQL operation reaches the origin as a POST of application/json,
// built from the canonical form: GET, application/graphql and hash-only
// persisted queries all arrive the same way.
function originRequest(cfg, base, ops, batched) {
  const body = batched ? `[${ops.map(operationBody).join(",")}]` : operationBody(ops[0]);
  const headers = originHeaders(cfg, base, [["content-type", "application/json"]]);
  return new Request(originTarget(cfg, base), { method: "POST", headers, body, redirect: "manual" });
}

// ---------------------------------------------------------------------------
// Origin

async function fetchOrigin(cfg, originReq) {
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

function passThrough(cfg, request, url, extraHeaderNames) {
  const base = canonicalBase(cfg, request, url);
  const extra = [];
  for (const name of extraHeaderNames) {
    const v = request.headers.get(name);
    if (v !== null) extra.push([name, v]);
  }
  const make = () =>
    new Request(originTarget(cfg, base), {
      method: request.method,
      headers: originHeaders(cfg, base, extra),
      redirect: "manual",
    });
  return passThroughRequest(cfg, make);
}

async function passThroughRequest(cfg, makeRequest) {
  let response;
  try {
    response = await fetchOrigin(cfg, makeRequest());
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  const out = new Response(response.body, response);
  out.headers.delete(cfg.originAuthHeader);
  out.headers.set(CACHE_STATUS_HEADER, "BYPASS");
  return out;
}

async function forwardWebSocket(cfg, request, url) {
  const base = canonicalBase(cfg, request, url);
  const extra = [["upgrade", "websocket"]];
  for (const name of WEBSOCKET_HEADERS) {
    const v = request.headers.get(name);
    if (v !== null) extra.push([name, v]);
  }
  try {
    return await fetch(originTarget(cfg, base), { headers: originHeaders(cfg, base, extra) });
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
}

// Not cacheable but parsed: forwarded in canonical form, the injected
// __typename stripped from the answer.
async function forwardUncached(cfg, base, op) {
  let response;
  try {
    response = await fetchOrigin(cfg, originRequest(cfg, base, [op], false));
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  const text = await response.text();
  const { body } = rewriteResponse(text, [op], false);
  return new Response(body, { status: response.status, statusText: response.statusText, headers: clientHeaders(cfg, response.headers, "BYPASS") });
}

function originUnreachable(err, status) {
  log("error", "origin_unreachable", { message: String(err && err.message) });
  return errorResponse(null, 502, "Origin unreachable", "BAD_GATEWAY", { [CACHE_STATUS_HEADER]: status });
}

function clientHeaders(cfg, originHeadersIn, status) {
  const headers = new Headers(originHeadersIn);
  // The body was decoded (and maybe rewritten); drop headers describing the wire form.
  for (const name of RESPONSE_WIRE_HEADERS) headers.delete(name);
  headers.delete("cache-tag");
  headers.delete(cfg.originAuthHeader);
  if (status) headers.set(CACHE_STATUS_HEADER, status);
  return headers;
}

// ---------------------------------------------------------------------------
// Mutations: rate limit, forward, invalidate here before answering, then queue
// the global purge.

async function serveMutations(cfg, env, ctx, request, base, ops, batched) {
  const mutations = ops.filter((o) => o.type === "mutation");
  for (let i = 0; i < mutations.length; i++) {
    if (!(await allowMutation(env, request, base))) {
      throw new ClientError(429, "Too many mutations; slow down", "RATE_LIMITED", {
        "retry-after": String(MUTATION_RETRY_AFTER_SECONDS),
      });
    }
  }
  let response;
  try {
    response = await fetchOrigin(cfg, originRequest(cfg, base, ops, batched));
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  const text = await response.text();
  const { body, results } = rewriteResponse(text, ops, batched);
  const tags = mutationTags(cfg, ops, results);
  if (tags.length > 0) {
    await invalidateLocally(cfg, base.url, tags);
    ctx.waitUntil(enqueuePurge(env, cfg, tags));
  }
  return new Response(body, { status: response.status, statusText: response.statusText, headers: clientHeaders(cfg, response.headers, "BYPASS") });
}

async function allowMutation(env, request, base) {
  const limiter = env.MUTATION_LIMITER;
  if (!limiter) return true;
  const scope = await credentialScope(base);
  const key = scope ? `c:${scope}` : `ip:${request.headers.get("cf-connecting-ip") || "unknown"}`;
  try {
    const { success } = await limiter.limit({ key });
    return success;
  } catch (err) {
    log("warn", "rate_limiter_failed", { message: String(err && err.message) });
    return true;
  }
}

// Only the mutations' own results are tagged, through the document's real
// field names (aliases cannot forge an `id` or a `__typename`). Past the cap,
// entity tags collapse into their types' tags: coarser, never missing.
function mutationTags(cfg, ops, results) {
  const entities = new Set();
  const bareTypes = new Set();
  const entityTypes = new Set();
  ops.forEach((op, i) => {
    if (op.type !== "mutation" || !isPlainObject(results[i])) return;
    const found = collectTags(results[i].data, op);
    for (const t of found.entities) entities.add(t);
    for (const t of found.typesWithoutId) bareTypes.add(typeTag(t));
    for (const t of found.entityTypes) entityTypes.add(typeTag(t));
  });
  if (entities.size + bareTypes.size <= cfg.maxTagsPerMutation) return [...entities, ...bareTypes];
  let tags = [...new Set([...entityTypes, ...bareTypes])];
  log("warn", "purge_tags_collapsed", { entities: entities.size, types: tags.length });
  if (tags.length > cfg.maxTagsPerMutation) {
    log("warn", "purge_tags_truncated", { dropped: tags.length - cfg.maxTagsPerMutation });
    tags = tags.slice(0, cfg.maxTagsPerMutation);
  }
  return tags;
}

async function handleBatch(cfg, env, ctx, request, base, items) {
  if (items.length === 0) throw new ClientError(400, "Empty batch: send at least one operation", "BAD_REQUEST");
  if (items.length > MAX_BATCH_ITEMS) {
    throw new ClientError(400, `A batch may hold at most ${MAX_BATCH_ITEMS} operations`, "BAD_REQUEST");
  }
  const ops = [];
  for (const item of items) {
    const op = await canonicalOperation(cfg, env, ctx, item);
    if (op.type === "subscription") throw new ClientError(400, "Subscriptions cannot be batched", "BAD_REQUEST");
    ops.push(op);
  }
  // Batches are never cached; they are parsed so that only the mutations in
  // them count, and only the mutations' results are purged.
  return serveMutations(cfg, env, ctx, request, base, ops, true);
}

// ---------------------------------------------------------------------------
// Local invalidation. The Cache API is per data center and purge by tag takes
// a moment to arrive, so the data center that ran a mutation records the tags
// it touched (with the time) before it answers; a cached entry fetched before
// that time and carrying one of them is treated as absent.

function localInvalidationsKey(url) {
  return new Request(`${url.origin}${LOCAL_INVALIDATIONS_PATH}`);
}

function mergeTombstones(target, source, now, horizonMs) {
  for (const [tag, at] of source) {
    if (now - at > horizonMs) continue;
    const prev = target.get(tag);
    if (prev === undefined || at > prev) target.set(tag, at);
  }
  for (const [tag, at] of target) if (now - at > horizonMs) target.delete(tag);
  if (target.size > MAX_LOCAL_TOMBSTONES) {
    const sorted = [...target].sort((a, b) => a[1] - b[1]);
    for (const [tag] of sorted.slice(0, target.size - MAX_LOCAL_TOMBSTONES)) target.delete(tag);
  }
}

async function readStoredTombstones(url) {
  const res = await caches.default.match(localInvalidationsKey(url));
  if (!res) return new Map();
  try {
    return new Map(Object.entries(JSON.parse(await res.text())));
  } catch {
    return new Map();
  }
}

async function invalidateLocally(cfg, url, tags) {
  const now = Date.now();
  const horizonMs = cfg.localInvalidationSeconds * 1000;
  const mine = new Map(tags.map((t) => [t, now]));
  mergeTombstones(localTombstones.tags, mine, now, horizonMs);
  try {
    const stored = await readStoredTombstones(url);
    mergeTombstones(stored, mine, now, horizonMs);
    await caches.default.put(
      localInvalidationsKey(url),
      new Response(JSON.stringify(Object.fromEntries(stored)), {
        headers: { "content-type": "application/json", "cache-control": `max-age=${Math.ceil(cfg.localInvalidationSeconds)}` },
      }),
    );
  } catch (err) {
    log("error", "local_invalidation_failed", { message: String(err && err.message) });
  }
}

// Other isolates' tombstones are re-read at most every
// LOCAL_INVALIDATION_REFRESH_MS; this isolate's own are always current.
function tombstonesDue(cfg) {
  return Date.now() - localTombstones.readAt >= cfg.localRefreshMs;
}

async function refreshTombstones(cfg, url) {
  const now = Date.now();
  localTombstones.readAt = now;
  try {
    mergeTombstones(localTombstones.tags, await readStoredTombstones(url), now, cfg.localInvalidationSeconds * 1000);
  } catch (err) {
    log("warn", "local_invalidation_read_failed", { message: String(err && err.message) });
  }
}

function invalidatedSince(tagHeader, fetchedAt) {
  if (localTombstones.tags.size === 0 || !tagHeader) return false;
  for (const tag of tagHeader.split(",")) {
    const at = localTombstones.tags.get(tag);
    if (at !== undefined && at >= fetchedAt) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Global purge: a queue whose consumer (max_concurrency 1) batches the tags of
// many mutations, paces calls under the plan's rate limit and retries with
// backoff.

async function enqueuePurge(env, cfg, tags) {
  if (!env.PURGE_QUEUE) {
    log("warn", "purge_queue_missing", { tags: tags.length });
    return;
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await env.PURGE_QUEUE.send({ tags, at: Date.now() });
      return;
    } catch (err) {
      if (attempt === 2) log("error", "purge_enqueue_failed", { tags: tags.length, message: String(err && err.message) });
      else await sleep(50 * 2 ** attempt);
    }
  }
}

async function consumePurgeBatch(batch, cfg) {
  const messages = batch.messages;
  if (!cfg.zoneId || !cfg.purgeToken) {
    log("warn", "purge_not_configured", { messages: messages.length });
    for (const m of messages) m.ack();
    return;
  }
  const tagOwners = new Map();
  for (const m of messages) {
    const tags = m.body && Array.isArray(m.body.tags) ? m.body.tags : [];
    for (const tag of tags) {
      if (typeof tag !== "string" || tag.length === 0 || tag.length > TAG_MAX_CHARS) continue;
      if (!tagOwners.has(tag)) tagOwners.set(tag, []);
      tagOwners.get(tag).push(m);
    }
  }
  const tags = [...tagOwners.keys()];
  const failed = new Set();
  let retryAfter = 0;
  for (let i = 0; i < tags.length; i += cfg.purgeBatchSize) {
    const chunk = tags.slice(i, i + cfg.purgeBatchSize);
    if (retryAfter > 0) {
      for (const tag of chunk) for (const m of tagOwners.get(tag)) failed.add(m);
      continue;
    }
    const result = await paced(cfg, () => callPurgeApi(cfg, chunk));
    if (result.ok || result.permanent) continue;
    if (result.retryAfter) retryAfter = result.retryAfter;
    for (const tag of chunk) for (const m of tagOwners.get(tag)) failed.add(m);
  }
  for (const m of messages) {
    if (!failed.has(m)) {
      m.ack();
      continue;
    }
    const delaySeconds = Math.min(PURGE_RETRY_MAX_SECONDS, Math.max(retryAfter, 2 ** (m.attempts - 1)));
    log("warn", "purge_retry", { attempt: m.attempts, delaySeconds, tags: (m.body.tags || []).length });
    m.retry({ delaySeconds });
  }
}

// Calls are spaced by the plan's sustained interval, also after the last one:
// with one consumer at a time that bounds the rate across invocations.
async function paced(cfg, call) {
  const wait = lastPurgeCallAt + cfg.purgeIntervalMs - Date.now();
  if (wait > 0) await sleep(wait);
  try {
    return await call();
  } finally {
    lastPurgeCallAt = Date.now();
  }
}

async function callPurgeApi(cfg, tags) {
  const endpoint = `${cfg.apiBase}/zones/${encodeURIComponent(cfg.zoneId)}/purge_cache`;
  let res;
  try {
    res = await fetch(endpoint, {
      method: "POST",
      headers: { authorization: `Bearer ${cfg.purgeToken}`, "content-type": "application/json" },
      body: JSON.stringify({ tags }),
    });
  } catch (err) {
    log("error", "purge_failed", { status: 0, tags: tags.length, message: String(err && err.message) });
    return { ok: false };
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (res.ok && body && body.success === true) return { ok: true };
  const errors = body && Array.isArray(body.errors) ? body.errors.map((e) => ({ code: e && e.code, message: e && e.message })) : null;
  log("error", "purge_failed", { status: res.status, tags: tags.length, errors });
  if (res.status === 429) {
    const after = Number.parseInt(res.headers.get("retry-after") || "", 10);
    return { ok: false, retryAfter: Number.isFinite(after) && after > 0 ? after : 1 };
  }
  // A malformed request will not get better by retrying.
  return { ok: false, permanent: res.status === 400 };
}

// ---------------------------------------------------------------------------
// Persisted queries: hash -> text in a KV namespace, so every data center
// knows every document the edge has verified.

async function lookupApq(env, hash) {
  const memo = apqMemo.get(hash);
  if (memo !== undefined) return memo;
  const kv = env.PERSISTED_QUERIES;
  if (!kv) return null;
  let text = null;
  try {
    text = await kv.get(hash, { cacheTtl: 3600 });
  } catch (err) {
    log("warn", "apq_lookup_failed", { message: String(err && err.message) });
    return null;
  }
  if (typeof text !== "string" || (await sha256Hex(text)) !== hash) return null;
  remember(apqMemo, hash, text, APQ_MEMO_MAX);
  return text;
}

// The mapping is learned only from text the edge hashed itself.
function learnApq(env, ctx, hash, text) {
  if (apqMemo.has(hash)) return;
  remember(apqMemo, hash, text, APQ_MEMO_MAX);
  const kv = env.PERSISTED_QUERIES;
  if (!kv) return;
  ctx.waitUntil(
    (async () => {
      try {
        if ((await kv.get(hash)) === null) await kv.put(hash, text);
      } catch (err) {
        log("warn", "apq_store_failed", { message: String(err && err.message) });
      }
    })(),
  );
}

function remember(map, key, value, max) {
  if (map.size >= max) map.delete(map.keys().next().value);
  map.set(key, value);
}

// ---------------------------------------------------------------------------
// Query caching

async function serveQuery(cfg, ctx, keyUrl, base, op) {
  const response = await lookupOrFetch(cfg, ctx, keyUrl, base, op);
  // Shows which requests share an entry; reveals nothing the caller lacks.
  response.headers.set(CACHE_KEY_HEADER, keyUrl.slice(keyUrl.lastIndexOf("/") + 1));
  return response;
}

function entryState(cached) {
  const [fetchedAt, ttl, swr, sie] = (cached.headers.get(META_HEADER) || "").split(",").map(Number);
  const age = fetchedAt > 0 ? Math.max(0, Date.now() - fetchedAt) / 1000 : Infinity;
  return { fetchedAt, age, ttl: ttl || 0, swr: swr || 0, sie: sie || 0 };
}

async function lookupOrFetch(cfg, ctx, keyUrl, base, op) {
  const cache = caches.default;
  const key = new Request(keyUrl);
  let cached = tombstonesDue(cfg)
    ? (await Promise.all([cache.match(key), refreshTombstones(cfg, base.url)]))[0]
    : await cache.match(key);
  let state = null;
  if (cached) {
    state = entryState(cached);
    if (invalidatedSince(cached.headers.get("cache-tag"), state.fetchedAt)) {
      await cached.body?.cancel();
      cached = null;
      state = null;
    }
  }
  if (cached && state.age < state.ttl) return fromCache(cached, "HIT", state.age);
  if (cached && state.age < state.ttl + state.swr) {
    if (!revalidating.has(keyUrl)) {
      revalidating.add(keyUrl);
      ctx.waitUntil(revalidate(cfg, ctx, key, keyUrl, base, op).finally(() => revalidating.delete(keyUrl)));
    }
    return fromCache(cached, "STALE", state.age);
  }
  const canServeStaleOnError = cached && state.age < state.ttl + state.sie;

  const { outcome, shared } = await fetchShared(cfg, ctx, keyUrl, key, base, op);
  const failed = outcome.error || outcome.status >= 500;
  if (failed && canServeStaleOnError) return fromCache(cached, "ERROR-STALE", state.age);
  if (outcome.error) return originUnreachable(outcome.error, "MISS");
  if (cached) await cached.body?.cancel();
  const headers = new Headers(outcome.headers);
  if (shared) headers.delete("set-cookie");
  headers.set(CACHE_STATUS_HEADER, shared ? "COALESCED" : cached ? "REVALIDATED" : "MISS");
  headers.set("age", "0");
  if (outcome.tagHeader) headers.set("cache-tag", outcome.tagHeader);
  return new Response(outcome.body, { status: outcome.status, statusText: outcome.statusText, headers });
}

// Concurrent misses for one key share one origin fetch. The key includes the
// credential scope, so nothing (errors included) is shared across callers with
// different credentials. A stored outcome stays shared until its cache.put
// lands, so a miss arriving in between does not fetch again.
async function fetchShared(cfg, ctx, keyUrl, key, base, op) {
  const pending = inflight.get(keyUrl);
  if (pending) {
    const outcome = await pending;
    if (!outcome.tagHeader || !invalidatedSince(outcome.tagHeader, outcome.fetchedAt)) return { outcome, shared: true };
  }
  const promise = fetchAndPrepare(cfg, base, op);
  inflight.set(keyUrl, promise);
  const outcome = await promise;
  if (outcome.stored) {
    ctx.waitUntil(
      putEntry(caches.default, key, outcome.stored).finally(() => {
        if (inflight.get(keyUrl) === promise) inflight.delete(keyUrl);
      }),
    );
  } else if (inflight.get(keyUrl) === promise) {
    inflight.delete(keyUrl);
  }
  return { outcome, shared: false };
}

// Never rejects: an unreachable origin is an outcome like any other.
async function fetchAndPrepare(cfg, base, op) {
  const fetchedAt = Date.now();
  let response;
  try {
    response = await fetchOrigin(cfg, originRequest(cfg, base, [op], false));
  } catch (error) {
    return { error, fetchedAt };
  }
  try {
    const text = await response.text();
    return { ...prepareEntry(cfg, response, text, op, fetchedAt), fetchedAt };
  } catch (error) {
    return { error, fetchedAt };
  }
}

async function revalidate(cfg, ctx, key, keyUrl, base, op) {
  const { outcome } = await fetchShared(cfg, ctx, keyUrl, key, base, op);
  if (outcome.error || outcome.status >= 500) {
    log("warn", "revalidate_failed", { status: outcome.status || 0 });
  }
}

async function putEntry(cache, key, response) {
  try {
    await cache.put(key, response);
  } catch (err) {
    log("error", "cache_put_failed", { message: String(err && err.message) });
  }
}

// Decides whether an origin response may be stored and builds the body and
// headers the client sees and, when cacheable, the Response to store.
function prepareEntry(cfg, response, text, op, fetchedAt) {
  const headers = clientHeaders(cfg, response.headers, null);
  const { body, results } = rewriteResponse(text, [op], false);
  const out = { status: response.status, statusText: response.statusText, headers, body, stored: null, tagHeader: null };
  const policy = storagePolicy(cfg, response, headers, results[0]);
  if (policy === null) return out;

  const found = collectTags(results[0].data, op);
  const tags = [operationTag(op.name), ...found.entities, ...[...found.allTypes].map(typeTag)].filter(
    (t) => t.length <= TAG_MAX_CHARS,
  );
  const tagHeader = tags.join(",");
  if (tagHeader.length > CACHE_TAG_MAX_BYTES) {
    // Truncating would leave objects this entry shows that no purge can reach,
    // so an entry whose tags do not fit is not stored at all.
    log("warn", "cache_tags_overflow", { tags: tags.length, bytes: tagHeader.length });
    return out;
  }
  out.tagHeader = tagHeader;
  const storedHeaders = new Headers(headers);
  // Only the affinity cookie may have been set (anything else made it
  // uncacheable); it belongs to the caller of this fetch, not to the entry.
  storedHeaders.delete("set-cookie");
  const originCacheControl = response.headers.get("cache-control");
  if (originCacheControl) storedHeaders.set(ORIGIN_CACHE_CONTROL_HEADER, originCacheControl);
  const lifetime = Math.max(1, Math.ceil(policy.ttl + Math.max(policy.swr, policy.sie)));
  storedHeaders.set("cache-control", `max-age=${lifetime}`);
  storedHeaders.set("cache-tag", tagHeader);
  storedHeaders.set(META_HEADER, `${fetchedAt},${policy.ttl},${policy.swr},${policy.sie}`);
  out.stored = new Response(body, { status: response.status, headers: storedHeaders });
  return out;
}

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

// Returns the entry's {ttl, swr, sie}, or null if the response must not be
// stored. The origin's s-maxage (shared caches) wins over max-age, which wins
// over CACHE_TTL_SECONDS.
function storagePolicy(cfg, response, headers, payload) {
  if (response.status !== 200) return null;
  const setCookies = response.headers.getSetCookie();
  if (setCookies.some((c) => !cfg.unkeyedCookies.has(c.slice(0, Math.max(0, c.indexOf("="))).trim()))) return null;
  const cc = parseCacheControl(response.headers.get("cache-control"));
  if (cc.has("private") || cc.has("no-store") || cc.has("no-cache")) return null;
  const sMaxAge = seconds(cc, "s-maxage");
  const maxAge = seconds(cc, "max-age");
  const ttl = sMaxAge ?? maxAge ?? cfg.ttl;
  if (ttl <= 0) return null;
  const varyOk = new Set(["accept-encoding", ...cfg.keyedHeaders, ...cfg.credentialHeaders]);
  const vary = (response.headers.get("vary") || "")
    .split(",")
    .map((v) => v.trim().toLowerCase())
    .filter(Boolean);
  if (vary.some((v) => !varyOk.has(v))) return null;
  if (!(headers.get("content-type") || "").toLowerCase().includes("json")) return null;
  if (!isPlainObject(payload)) return null;
  if (payload.errors !== undefined && !(Array.isArray(payload.errors) && payload.errors.length === 0)) return null;
  if (!isPlainObject(payload.data)) return null;
  const noStale = cc.has("must-revalidate") || cc.has("proxy-revalidate");
  return {
    ttl,
    swr: noStale ? 0 : seconds(cc, "stale-while-revalidate") ?? cfg.swr,
    sie: noStale ? 0 : seconds(cc, "stale-if-error") ?? cfg.sie,
  };
}

function fromCache(cached, status, ageSeconds) {
  const headers = new Headers(cached.headers);
  const originCacheControl = headers.get(ORIGIN_CACHE_CONTROL_HEADER);
  if (originCacheControl) {
    headers.set("cache-control", originCacheControl);
    headers.delete(ORIGIN_CACHE_CONTROL_HEADER);
  } else {
    headers.delete("cache-control");
  }
  headers.delete(META_HEADER);
  headers.set(CACHE_STATUS_HEADER, status);
  headers.set("age", String(Math.floor(ageSeconds)));
  return new Response(cached.body, { status: cached.status, statusText: cached.statusText, headers });
}

// Removes the injected __typename alias from a GraphQL response (or a batch
// of them). Returns the client's body and the parsed results as the origin
// sent them (null where the answer was not JSON), for tagging.
function rewriteResponse(text, ops, batched) {
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

// ---------------------------------------------------------------------------
// Tags

// Walks `data` alongside the operation's selection sets, so `id` and
// `__typename` are recognised by field name whatever the response key.
// Returns Type:id entity tags, every type seen, and the types of objects
// without a selected id (a mutation cannot name those precisely).
function collectTags(data, op) {
  const entities = [];
  const seen = new Set();
  const allTypes = new Set();
  const typesWithoutId = new Set();
  const entityTypes = new Set();
  const flatMemo = new Map();
  const stack = [[data, op.selections, true]];
  while (stack.length > 0) {
    const [node, selections, root] = stack.pop();
    if (node === null || typeof node !== "object" || node instanceof RawNumber) continue;
    if (Array.isArray(node)) {
      for (let i = node.length - 1; i >= 0; i--) stack.push([node[i], selections, false]);
      continue;
    }
    const fields = flattenSelections(selections, op, flatMemo);
    let typename = null;
    let id = null;
    const children = [];
    for (const [key, info] of fields) {
      if (!Object.hasOwn(node, key)) continue;
      const value = node[key];
      if (info.names.size === 1) {
        const name = info.names.values().next().value;
        if (name === "__typename" && typeof value === "string" && value !== "") typename = value;
        else if (name === "id" && id === null) {
          if (typeof value === "string") id = value;
          else if (value instanceof RawNumber) id = value.raw;
        }
      }
      if (info.subs.length > 0 && value !== null && typeof value === "object") children.push([value, mergeSelections(info.subs, flatMemo), false]);
    }
    // The root object (Query, Mutation) is in every answer: never a tag.
    if (typename !== null && !root) {
      allTypes.add(typename);
      if (id !== null) {
        const tag = `${encodeTagPart(typename)}:${encodeTagPart(id)}`;
        entityTypes.add(typename);
        if (tag.length <= TAG_MAX_CHARS && !seen.has(tag)) {
          seen.add(tag);
          entities.push(tag);
        }
      } else {
        typesWithoutId.add(typename);
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
  }
  return { entities, allTypes, typesWithoutId, entityTypes };
}

// responseKey -> {names: field names seen under that key, subs: their
// selection sets}, through fragment spreads and inline fragments (type
// conditions ignored: over-tagging is harmless, under-tagging is not).
function flattenSelections(selections, op, memo) {
  const hit = memo.get(selections);
  if (hit) return hit;
  const fragments = op.fragments;
  const fields = new Map();
  if (op.injected) fields.set(INJECTED_TYPENAME, { names: new Set(["__typename"]), subs: [] });
  const visiting = new Set();
  const walk = (sels) => {
    for (const sel of sels) {
      if (sel.kind === "field") {
        let info = fields.get(sel.key);
        if (!info) {
          info = { names: new Set(), subs: [] };
          fields.set(sel.key, info);
        }
        info.names.add(sel.name);
        if (sel.selections) info.subs.push(sel.selections);
      } else if (sel.kind === "inline") {
        walk(sel.selections);
      } else if (sel.kind === "spread" && !visiting.has(sel.name) && fragments.has(sel.name)) {
        visiting.add(sel.name);
        walk(fragments.get(sel.name));
        visiting.delete(sel.name);
      }
    }
  };
  walk(selections);
  memo.set(selections, fields);
  return fields;
}

function mergeSelections(subs, memo) {
  if (subs.length === 1) return subs[0];
  // Stable identity for the same list, so flattenSelections' memo hits.
  const key = subs;
  let merged = memo.get(key);
  if (!merged) {
    merged = [{ kind: "inline", selections: subs.flat() }];
    memo.set(key, merged);
  }
  return merged;
}

// Cache-Tag must be printable ASCII without spaces; commas separate tags.
// toWellFormed() because encodeURIComponent throws on lone surrogates.
function encodeTagPart(value) {
  return encodeURIComponent(value.toWellFormed());
}

function typeTag(typename) {
  // "-" cannot occur in a GraphQL name, so these never collide with Type:id.
  return `${TYPE_TAG_PREFIX}${encodeTagPart(typename)}`;
}

function operationTag(name) {
  return name ? `gql-op:${encodeTagPart(name)}` : "gql-op-anonymous";
}

// ---------------------------------------------------------------------------
// JSON with exact numbers

function parseJsonExact(text) {
  return JSON.parse(text, (_key, value, context) =>
    typeof value === "number" ? new RawNumber(context && context.source !== undefined ? context.source : String(value)) : value,
  );
}

// Sorted keys, no whitespace, numbers as the client wrote them.
function canonicalJson(value, depth, stats) {
  if (depth > MAX_JSON_NESTING) throw new ClientError(400, "JSON nested too deeply", "BAD_REQUEST");
  if (depth > stats.max) stats.max = depth;
  if (value instanceof RawNumber) return value.raw;
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v, depth + 1, stats)).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k], depth + 1, stats)}`).join(",")}}`;
}

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  let hex = "";
  for (const byte of new Uint8Array(digest)) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

// ---------------------------------------------------------------------------
// GraphQL: lexer, a parser for executable documents (no validation), and the
// __typename injection.

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

// Canonical text: tokens only, separated where two adjacent tokens would
// otherwise lex differently (name/number runs, "" followed by "). `insertAfter`
// holds the indexes of the selection-set braces that get the __typename alias.
function printTokens(tokens, insertAfter) {
  let out = "";
  let prev = null;
  for (let idx = 0; idx < tokens.length; idx++) {
    const token = tokens[idx];
    if (prev) {
      const words = (prev.kind === "name" || prev.kind === "number") && (token.kind === "name" || token.kind === "number");
      const strings = prev.kind === "string" && token.kind === "string";
      if (words || strings) out += " ";
    }
    out += token.value;
    prev = token;
    if (insertAfter && insertAfter.has(idx)) {
      out += `${INJECTED_TYPENAME}:__typename`;
      prev = { kind: "name" };
    }
  }
  return out;
}

const CLOSERS = { "}": "{", ")": "(", "]": "[" };

function analyzeQuery(text) {
  const memo = documentMemo.get(text);
  if (memo) return memo;
  const tokens = tokenize(text);
  const doc = parseDocument(tokens);
  doc.normalized = printTokens(tokens, null);
  doc.injected = printTokens(tokens, new Set(doc.selectionSetStarts));
  if (text.length <= MAX_MEMO_TEXT) remember(documentMemo, text, doc, DOCUMENT_MEMO_MAX);
  return doc;
}

// Operations and fragments with their selection sets. Not a validator: the
// origin still validates, and a document it rejects yields errors, which are
// never cached.
function parseDocument(tokens) {
  if (tokens.length === 0) throw new GraphQLSyntaxError("Unexpected end of document");
  let i = 0;
  const operations = [];
  const fragments = new Map();
  const selectionSetStarts = [];
  const names = new Set();
  let hasSubscription = false;

  const peek = () => tokens[i];
  const isPunct = (v) => i < tokens.length && tokens[i].kind === "punct" && tokens[i].value === v;
  const expectPunct = (v) => {
    if (!isPunct(v)) throw new GraphQLSyntaxError(`Expected "${v}", found ${describe(peek())}`);
    i++;
  };
  const expectName = () => {
    const t = peek();
    if (!t || t.kind !== "name") throw new GraphQLSyntaxError(`Expected Name, found ${describe(t)}`);
    if (t.value === INJECTED_TYPENAME) {
      throw new ClientError(400, `The name ${INJECTED_TYPENAME} is reserved by the edge`, "BAD_REQUEST");
    }
    i++;
    return t.value;
  };
  const skipBalanced = () => {
    const stack = [];
    for (; i < tokens.length; i++) {
      const t = tokens[i];
      if (t.kind === "name" && t.value === INJECTED_TYPENAME) {
        throw new ClientError(400, `The name ${INJECTED_TYPENAME} is reserved by the edge`, "BAD_REQUEST");
      }
      if (t.kind !== "punct") continue;
      if (t.value === "{" || t.value === "(" || t.value === "[") {
        stack.push(t.value);
      } else if (t.value in CLOSERS) {
        if (stack.pop() !== CLOSERS[t.value]) throw new GraphQLSyntaxError(`Unexpected "${t.value}"`);
        if (stack.length === 0) {
          i++;
          return;
        }
      }
    }
    throw new GraphQLSyntaxError("Unbalanced brackets");
  };
  const directives = () => {
    while (isPunct("@")) {
      i++;
      expectName();
      if (isPunct("(")) skipBalanced();
    }
  };
  const selectionSet = (depth) => {
    if (depth > MAX_SELECTION_DEPTH) throw new ClientError(400, "Document nested too deeply", "BAD_REQUEST");
    selectionSetStarts.push(i);
    expectPunct("{");
    const selections = [];
    while (!isPunct("}")) {
      if (i >= tokens.length) throw new GraphQLSyntaxError("Unbalanced brackets");
      if (isPunct("...")) {
        i++;
        const t = peek();
        if (t && t.kind === "name" && t.value !== "on") {
          selections.push({ kind: "spread", name: expectName() });
          directives();
        } else {
          if (t && t.kind === "name" && t.value === "on") {
            i++;
            expectName();
          }
          directives();
          selections.push({ kind: "inline", selections: selectionSet(depth + 1) });
        }
        continue;
      }
      const first = expectName();
      let name = first;
      let key = first;
      if (isPunct(":")) {
        i++;
        name = expectName();
      }
      if (isPunct("(")) skipBalanced();
      directives();
      const sub = isPunct("{") ? selectionSet(depth + 1) : null;
      selections.push({ kind: "field", key, name, selections: sub });
    }
    if (selections.length === 0) throw new GraphQLSyntaxError("Expected Name, found }");
    i++;
    return selections;
  };

  while (i < tokens.length) {
    const t = peek();
    if (t.kind === "punct" && t.value === "{") {
      operations.push({ type: "query", name: null, selections: selectionSet(0) });
    } else if (t.kind === "name" && (t.value === "query" || t.value === "mutation" || t.value === "subscription")) {
      i++;
      const name = peek() && peek().kind === "name" ? expectName() : null;
      if (isPunct("(")) skipBalanced();
      directives();
      if (t.value === "subscription") hasSubscription = true;
      if (name !== null) {
        if (names.has(name)) throw new ClientError(400, `There can be only one operation named "${name}".`, "BAD_REQUEST");
        names.add(name);
      }
      operations.push({ type: t.value, name, selections: selectionSet(0) });
    } else if (t.kind === "name" && t.value === "fragment") {
      i++;
      const name = expectName();
      if (name === "on") throw new GraphQLSyntaxError(`Unexpected Name "on"`);
      const on = expectName();
      if (on !== "on") throw new GraphQLSyntaxError(`Expected "on", found Name "${on}"`);
      expectName();
      directives();
      if (fragments.has(name)) throw new ClientError(400, `There can be only one fragment named "${name}".`, "BAD_REQUEST");
      fragments.set(name, selectionSet(0));
    } else if ((t.kind === "name" && TYPE_SYSTEM_KEYWORDS.has(t.value)) || t.kind === "string") {
      throw new ClientError(400, "Only executable definitions (operations and fragments) may be sent", "BAD_REQUEST");
    } else {
      throw new GraphQLSyntaxError(`Unexpected ${describe(t)}`);
    }
  }
  return { operations, fragments, selectionSetStarts, hasSubscription };
}

function describe(token) {
  if (!token) return "<EOF>";
  return token.kind === "name" ? `Name "${token.value}"` : JSON.stringify(token.value);
}

function selectOperation(doc, operationName) {
  const operations = doc.operations;
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

// GraphQL over HTTP: errors in the media type the client accepts.
function errorResponse(request, status, message, code, extraHeaders = {}) {
  const accept = request ? (request.headers.get("accept") || "").toLowerCase() : "";
  const type = accept.includes(GRAPHQL_RESPONSE_TYPE) ? GRAPHQL_RESPONSE_TYPE : "application/json";
  return new Response(JSON.stringify({ errors: [{ message, extensions: { code } }] }), {
    status,
    headers: {
      "content-type": `${type}; charset=utf-8`,
      "cache-control": "no-store",
      [CACHE_STATUS_HEADER]: "BYPASS",
      ...extraHeaders,
    },
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function log(level, event, fields) {
  const line = JSON.stringify({ level, event, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}
