var __defProp = Object.defineProperty;
var __name = (target, value) => __defProp(target, "name", { value, configurable: true });

// src/config.js
var DEFAULTS = {
  CACHE_TTL_SECONDS: 60,
  STALE_WHILE_REVALIDATE_SECONDS: 30,
  STALE_IF_ERROR_SECONDS: 300,
  MAX_BODY_BYTES: 1048576,
  MAX_RESPONSE_BYTES: 8388608,
  PURGE_BATCH_SIZE: 100,
  ORIGIN_TIMEOUT_MS: 1e4,
  CF_API_BASE: "https://api.cloudflare.com/client/v4",
  CACHE_AUTH_MODE: "scope",
  PURGE_PLAN: "enterprise",
  MAX_TAGS_PER_MUTATION: 100,
  KEYED_HEADERS: "accept,origin",
  CREDENTIAL_HEADERS: "authorization,cookie,x-api-key",
  FORWARDED_HEADERS: "user-agent,traceparent,tracestate,x-request-id",
  UNKEYED_COOKIES: "__cflb",
  IGNORED_COOKIES: "_ga,_ga_*,_gid,_gat,_gat_*,_gcl_au,_fbp,_fbc,_hjSessionUser_*,_hjSession_*,_clck,_clsk,_uetsid,_uetvid,__cf_bm,cf_clearance,__cfruid,_cfuvid,__cfwaitingroom",
  STRIPPED_QUERY_PARAMS: "utm_*,fbclid,gclid",
  ORIGIN_AUTH_HEADER: "x-fraiseql-origin-auth",
  LOCAL_INVALIDATION_SECONDS: 300,
  LOCAL_INVALIDATION_REFRESH_MS: 250,
  PURGE_REPEAT_AFTER_SECONDS: 12
};
var PURGE_PLANS = {
  free: { perSecond: 5 / 60 },
  pro: { perSecond: 5 },
  business: { perSecond: 10 },
  enterprise: { perSecond: 50 }
};
var LIMITS = {
  // Cloudflare: the Cache-Tag header may not exceed 16 KB, a purged tag 1,024 characters.
  cacheTagMaxBytes: 16 * 1024,
  tagMaxChars: 1024,
  // Variables nested deeper than this are forwarded but not cached; deeper
  // than maxJsonNesting they are refused (the canonical printer recurses).
  maxCacheableJsonDepth: 64,
  maxJsonNesting: 1e3,
  maxSelectionDepth: 200,
  maxBatchItems: 50,
  // Parsed documents, request fingerprints and persisted queries share one
  // byte budget; answers kept in isolate memory have their own. 128 MB a isolate.
  memoBudgetBytes: 8 * 1024 * 1024,
  responseMemoryBytes: 16 * 1024 * 1024,
  // An answer in isolate memory is served without asking the Cache API for at
  // most this long: a purge from elsewhere is seen this much later here.
  responseMemoryTrustMs: 1e3,
  // Persisted-query registry: largest text learned, and how long KV keeps it.
  apqMaxBytes: 64 * 1024,
  apqTtlSeconds: 30 * 24 * 3600,
  maxLocalTombstones: 5e3,
  mutationRetryAfterSeconds: 60,
  purgeRetryMaxSeconds: 300
};
var configMemo = /* @__PURE__ */ new WeakMap();
function readConfig(env) {
  const memo = configMemo.get(env);
  if (memo) return memo;
  const num = /* @__PURE__ */ __name((name, min) => {
    const raw = env[name];
    const value = typeof raw === "number" ? raw : Number.parseFloat(raw);
    return Number.isFinite(value) && value >= min ? value : DEFAULTS[name];
  }, "num");
  const list = /* @__PURE__ */ __name((name, lower = true) => String(env[name] ?? DEFAULTS[name]).split(",").map((s) => lower ? s.trim().toLowerCase() : s.trim()).filter(Boolean), "list");
  let originUrl = null;
  try {
    if (env.ORIGIN_URL) originUrl = new URL(env.ORIGIN_URL);
  } catch {
    originUrl = null;
  }
  const originAuthHeader = String(env.ORIGIN_AUTH_HEADER || DEFAULTS.ORIGIN_AUTH_HEADER).trim().toLowerCase();
  const notAuth = /* @__PURE__ */ __name((name) => name !== originAuthHeader, "notAuth");
  const planName = String(env.PURGE_PLAN || "").toLowerCase();
  const plan = Object.hasOwn(PURGE_PLANS, planName) ? planName : DEFAULTS.PURGE_PLAN;
  const originTimeoutMs = num("ORIGIN_TIMEOUT_MS", 1);
  const localInvalidationSeconds = num("LOCAL_INVALIDATION_SECONDS", 1);
  const purgeRepeatAfterSeconds = Math.max(num("PURGE_REPEAT_AFTER_SECONDS", 0), Math.ceil(originTimeoutMs / 1e3) + 1);
  const cfg = {
    ttl: num("CACHE_TTL_SECONDS", 0),
    swr: num("STALE_WHILE_REVALIDATE_SECONDS", 0),
    sie: num("STALE_IF_ERROR_SECONDS", 0),
    maxBodyBytes: Math.floor(num("MAX_BODY_BYTES", 1)),
    maxResponseBytes: Math.floor(num("MAX_RESPONSE_BYTES", 1)),
    purgeBatchSize: Math.min(100, Math.max(1, Math.floor(num("PURGE_BATCH_SIZE", 1)))),
    originTimeoutMs,
    apiBase: String(env.CF_API_BASE || DEFAULTS.CF_API_BASE).replace(/\/+$/, ""),
    authMode: env.CACHE_AUTH_MODE === "bypass" ? "bypass" : "scope",
    purgePlan: plan,
    purgeIntervalMs: 1e3 / PURGE_PLANS[plan].perSecond,
    maxTagsPerMutation: Math.max(1, Math.floor(num("MAX_TAGS_PER_MUTATION", 1))),
    keyedHeaders: list("KEYED_HEADERS").filter(notAuth),
    credentialHeaders: list("CREDENTIAL_HEADERS").filter(notAuth),
    forwardedHeaders: list("FORWARDED_HEADERS").filter(notAuth),
    unkeyedCookies: new Set(list("UNKEYED_COOKIES", false)),
    ignoredCookies: namePatterns(list("IGNORED_COOKIES", false)),
    strippedParams: namePatterns(list("STRIPPED_QUERY_PARAMS")),
    originAuthHeader,
    originAuthToken: typeof env.ORIGIN_AUTH_TOKEN === "string" ? env.ORIGIN_AUTH_TOKEN : "",
    localInvalidationSeconds,
    localRefreshMs: num("LOCAL_INVALIDATION_REFRESH_MS", 0),
    purgeRepeatAfterSeconds,
    // Past this age (from the mutation) a purge is moot: every entry it could
    // reach has expired (lifetimes are capped at LOCAL_INVALIDATION_SECONDS
    // from the fill's start, and fills started before the mutation).
    purgeMootAfterMs: (localInvalidationSeconds + purgeRepeatAfterSeconds) * 1e3,
    originUrl,
    zoneId: env.ZONE_ID || "",
    purgeToken: env.PURGE_API_TOKEN || ""
  };
  configMemo.set(env, cfg);
  return cfg;
}
__name(readConfig, "readConfig");
function namePatterns(patterns) {
  const exact = /* @__PURE__ */ new Set();
  const prefixes = [];
  for (const p of patterns) {
    if (p.endsWith("*")) prefixes.push(p.slice(0, -1));
    else exact.add(p);
  }
  return { exact, prefixes, matches: /* @__PURE__ */ __name((name) => exact.has(name) || prefixes.some((p) => name.startsWith(p)), "matches") };
}
__name(namePatterns, "namePatterns");

// src/http/errors.js
var CACHE_STATUS_HEADER = "x-fraiseql-cache";
var GRAPHQL_RESPONSE_TYPE = "application/graphql-response+json";
var ClientError = class extends Error {
  static {
    __name(this, "ClientError");
  }
  constructor(status, message, code, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
};
var GraphQLSyntaxError = class extends ClientError {
  static {
    __name(this, "GraphQLSyntaxError");
  }
  constructor(message) {
    super(400, `Syntax Error: ${message}`, "GRAPHQL_PARSE_FAILED");
  }
};
function errorBody(message, code) {
  return JSON.stringify({ errors: [{ message, extensions: { code } }] });
}
__name(errorBody, "errorBody");
function errorResponse(request, status, message, code, extraHeaders = {}) {
  const accept = request ? (request.headers.get("accept") || "").toLowerCase() : "";
  const type = accept.includes(GRAPHQL_RESPONSE_TYPE) ? GRAPHQL_RESPONSE_TYPE : "application/json";
  return new Response(errorBody(message, code), {
    status,
    headers: {
      "content-type": `${type}; charset=utf-8`,
      "cache-control": "no-store",
      [CACHE_STATUS_HEADER]: "BYPASS",
      ...extraHeaders
    }
  });
}
__name(errorResponse, "errorResponse");
var FAILURE_MESSAGES = { timeout: "Origin timed out", too_large: "Origin answer too large" };
function originUnreachable(err, status) {
  log("error", "origin_unreachable", { reason: err?.reason ?? "network", message: String(err && err.message) });
  const message = FAILURE_MESSAGES[err?.reason] ?? "Origin unreachable";
  return errorResponse(null, 502, message, "BAD_GATEWAY", { [CACHE_STATUS_HEADER]: status });
}
__name(originUnreachable, "originUnreachable");
function log(level, event, fields) {
  const line = JSON.stringify({ level, event, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}
__name(log, "log");
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
__name(sleep, "sleep");

// src/purge/api.js
var lastCallAt = -Infinity;
async function purgeTags(cfg, tags) {
  const work = [];
  for (let i = 0; i < tags.length; i += cfg.purgeBatchSize) work.push(tags.slice(i, i + cfg.purgeBatchSize));
  const failed = [];
  let retryAfter = 0;
  while (work.length > 0) {
    const chunk = work.shift();
    if (retryAfter > 0) {
      failed.push(...chunk);
      continue;
    }
    const result = await paced(cfg, () => callPurgeApi(cfg, chunk));
    if (result.ok) continue;
    if (result.refused) {
      if (chunk.length === 1) {
        log("error", "purge_tag_refused", { tag: chunk[0] });
      } else {
        const half = Math.ceil(chunk.length / 2);
        work.unshift(chunk.slice(0, half), chunk.slice(half));
      }
      continue;
    }
    if (result.retryAfter) retryAfter = result.retryAfter;
    failed.push(...chunk);
  }
  return { failed, retryAfter };
}
__name(purgeTags, "purgeTags");
async function paced(cfg, call) {
  const wait = lastCallAt + cfg.purgeIntervalMs - Date.now();
  if (wait > 0) await sleep(wait);
  try {
    return await call();
  } finally {
    lastCallAt = Date.now();
  }
}
__name(paced, "paced");
async function restAfterLastCall(cfg) {
  const wait = lastCallAt + cfg.purgeIntervalMs - Date.now();
  if (wait > 0) await sleep(wait);
}
__name(restAfterLastCall, "restAfterLastCall");
async function callPurgeApi(cfg, tags) {
  const endpoint = `${cfg.apiBase}/zones/${encodeURIComponent(cfg.zoneId)}/purge_cache`;
  let res;
  try {
    res = await fetch(endpoint, {
      method: "POST",
      headers: { authorization: `Bearer ${cfg.purgeToken}`, "content-type": "application/json" },
      body: JSON.stringify({ tags })
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
    return { ok: false, retryAfter: Number.isFinite(after) && after > 0 ? Math.min(after, LIMITS.purgeRetryMaxSeconds) : 1 };
  }
  return { ok: false, refused: res.status === 400 };
}
__name(callPurgeApi, "callPurgeApi");

// src/purge/queue.js
function isDeadLetterQueue(name) {
  return /-dlq(-|$)/.test(name);
}
__name(isDeadLetterQueue, "isDeadLetterQueue");
async function enqueuePurge(env, cfg, tags, at) {
  if (!env.PURGE_QUEUE) {
    log("warn", "purge_queue_missing", { tags: tags.length });
    return;
  }
  const messages = [{ body: { tags, at } }, { body: { tags, at, repeat: true }, delaySeconds: cfg.purgeRepeatAfterSeconds }];
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await env.PURGE_QUEUE.sendBatch(messages);
      return;
    } catch (err) {
      if (attempt === 2) log("error", "purge_enqueue_failed", { tags: tags.length, message: String(err && err.message) });
      else await sleep(50 * 2 ** attempt);
    }
  }
}
__name(enqueuePurge, "enqueuePurge");
function tagsOf(message) {
  const tags = message.body && Array.isArray(message.body.tags) ? message.body.tags : [];
  return tags.filter((t) => typeof t === "string" && t.length > 0 && t.length <= LIMITS.tagMaxChars);
}
__name(tagsOf, "tagsOf");
function dropMoot(cfg, messages, now = Date.now()) {
  const live = [];
  for (const m of messages) {
    const at = Number(m.body && m.body.at);
    if (Number.isFinite(at) && now - at > cfg.purgeMootAfterMs) {
      log("error", "purge_expired_unsent", { tags: tagsOf(m).length, ageMs: now - at, attempts: m.attempts });
      m.ack();
    } else {
      live.push(m);
    }
  }
  return live;
}
__name(dropMoot, "dropMoot");
async function consumePurgeBatch(batch, env, cfg) {
  if (isDeadLetterQueue(batch.queue)) return resend(batch, env, cfg);
  if (!cfg.zoneId || !cfg.purgeToken) {
    log("warn", "purge_not_configured", { messages: batch.messages.length });
    for (const m of batch.messages) m.ack();
    return;
  }
  const messages = dropMoot(cfg, batch.messages);
  const owners = /* @__PURE__ */ new Map();
  for (const m of messages) {
    for (const tag of tagsOf(m)) {
      if (!owners.has(tag)) owners.set(tag, []);
      owners.get(tag).push(m);
    }
  }
  const { failed, retryAfter } = owners.size > 0 ? await purgeTags(cfg, [...owners.keys()]) : { failed: [], retryAfter: 0 };
  const retry = new Set(failed.flatMap((tag) => owners.get(tag)));
  for (const m of messages) {
    if (!retry.has(m)) {
      m.ack();
      continue;
    }
    const delaySeconds = Math.min(LIMITS.purgeRetryMaxSeconds, Math.max(retryAfter, 2 ** (m.attempts - 1)));
    log("warn", "purge_retry", { attempt: m.attempts, delaySeconds, tags: tagsOf(m).length });
    m.retry({ delaySeconds });
  }
  await restAfterLastCall(cfg);
}
__name(consumePurgeBatch, "consumePurgeBatch");
async function resend(batch, env, cfg) {
  for (const m of dropMoot(cfg, batch.messages)) {
    log("error", "purge_dead_lettered", { tags: tagsOf(m).length, attempts: m.attempts });
    try {
      await env.PURGE_QUEUE.send(m.body, { delaySeconds: 1 });
      m.ack();
    } catch (err) {
      log("error", "purge_resend_failed", { message: String(err && err.message) });
      m.retry({ delaySeconds: 5 });
    }
  }
}
__name(resend, "resend");

// src/cookies.js
function splitCookies(cfg, header) {
  const credentials = [];
  const routing = [];
  for (const part of header.split(";")) {
    const pair = part.trim();
    if (!pair) continue;
    const eq = pair.indexOf("=");
    const name = eq < 0 ? pair : pair.slice(0, eq).trim();
    if (cfg.unkeyedCookies.has(name)) routing.push(pair);
    else if (!cfg.ignoredCookies.matches(name)) credentials.push(pair);
  }
  return { credentials, routing };
}
__name(splitCookies, "splitCookies");
function onlyRoutingCookies(cfg, setCookies) {
  return setCookies.every((c) => cfg.unkeyedCookies.has(c.slice(0, Math.max(0, c.indexOf("="))).trim()));
}
__name(onlyRoutingCookies, "onlyRoutingCookies");

// src/memo.js
var ENTRY_OVERHEAD = 96;
var BudgetMap = class {
  static {
    __name(this, "BudgetMap");
  }
  constructor(maxBytes) {
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.entries = /* @__PURE__ */ new Map();
  }
  get(key) {
    const entry = this.entries.get(key);
    if (entry === void 0) return void 0;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.value;
  }
  peek(key) {
    return this.entries.get(key)?.value;
  }
  has(key) {
    return this.entries.has(key);
  }
  // Refuses (returns false) an entry larger than an eighth of the budget, so
  // one request cannot flush everything else.
  set(key, value, valueBytes) {
    const bytes = ENTRY_OVERHEAD + stringBytes(key) + valueBytes;
    this.delete(key);
    if (bytes > this.maxBytes / 8) return false;
    this.entries.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.bytes;
    }
    return true;
  }
  delete(key) {
    const entry = this.entries.get(key);
    if (entry === void 0) return;
    this.entries.delete(key);
    this.bytes -= entry.bytes;
  }
  clear() {
    this.entries.clear();
    this.bytes = 0;
  }
  get size() {
    return this.entries.size;
  }
};
function stringBytes(s) {
  return typeof s === "string" ? 2 * s.length : 0;
}
__name(stringBytes, "stringBytes");
var share = LIMITS.memoBudgetBytes / 4;
var documentMemo = new BudgetMap(2 * share);
var requestMemo = new BudgetMap(share);
var apqMemo = new BudgetMap(share);

// src/graphql/lexer.js
var PUNCTUATORS = /* @__PURE__ */ new Set(["!", "$", "&", "(", ")", ":", "=", "@", "[", "]", "{", "|", "}"]);
var NAME_START = /[_A-Za-z]/;
var NAME_RE = /[_A-Za-z][_0-9A-Za-z]*/y;
var NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
function tokenize(src) {
  const tokens = [];
  const n = src.length;
  let i = 0;
  while (i < n) {
    const ch = src[i];
    if (ch === " " || ch === "	" || ch === "\n" || ch === "\r" || ch === "," || ch === "\uFEFF") {
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
    if (ch === "-" || ch >= "0" && ch <= "9") {
      NUMBER_RE.lastIndex = i;
      const m = NUMBER_RE.exec(src);
      const end = m ? i + m[0].length : i;
      if (!m || end < n && /[_0-9A-Za-z.]/.test(src[end])) {
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
__name(tokenize, "tokenize");
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
      if (next === void 0 || !'"\\/bfnrt'.includes(next)) {
        throw new GraphQLSyntaxError(`Invalid escape at offset ${i}`);
      }
      i += 2;
      continue;
    }
    i++;
  }
  throw new GraphQLSyntaxError(`Unterminated string at offset ${start}`);
}
__name(scanString, "scanString");
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
__name(scanBlockString, "scanBlockString");
function printTokens(tokens, insertAfter, insertion) {
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
      out += insertion;
      prev = NAME_TOKEN;
    }
  }
  return out;
}
__name(printTokens, "printTokens");
var NAME_TOKEN = { kind: "name" };

// src/graphql/parser.js
var INJECTED_TYPENAME = "_fraiseqlEdgeTypename";
var TYPE_SYSTEM_KEYWORDS = /* @__PURE__ */ new Set(["schema", "scalar", "type", "interface", "union", "enum", "input", "directive", "extend"]);
var CLOSERS = { "}": "{", ")": "(", "]": "[" };
function reserved() {
  return new ClientError(400, `The name ${INJECTED_TYPENAME} is reserved by the edge`, "BAD_REQUEST");
}
__name(reserved, "reserved");
function parseDocument(tokens) {
  if (tokens.length === 0) throw new GraphQLSyntaxError("Unexpected end of document");
  let i = 0;
  let nodes = 0;
  const operations = [];
  const fragments = /* @__PURE__ */ new Map();
  const selectionSetStarts = [];
  const names = /* @__PURE__ */ new Set();
  let hasSubscription = false;
  const peek = /* @__PURE__ */ __name(() => tokens[i], "peek");
  const isPunct = /* @__PURE__ */ __name((v) => i < tokens.length && tokens[i].kind === "punct" && tokens[i].value === v, "isPunct");
  const expectPunct = /* @__PURE__ */ __name((v) => {
    if (!isPunct(v)) throw new GraphQLSyntaxError(`Expected "${v}", found ${describe(peek())}`);
    i++;
  }, "expectPunct");
  const expectName = /* @__PURE__ */ __name(() => {
    const t = peek();
    if (!t || t.kind !== "name") throw new GraphQLSyntaxError(`Expected Name, found ${describe(t)}`);
    if (t.value === INJECTED_TYPENAME) throw reserved();
    i++;
    return t.value;
  }, "expectName");
  const skipBalanced = /* @__PURE__ */ __name(() => {
    const stack = [];
    for (; i < tokens.length; i++) {
      const t = tokens[i];
      if (t.kind === "name" && t.value === INJECTED_TYPENAME) throw reserved();
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
  }, "skipBalanced");
  const directives = /* @__PURE__ */ __name(() => {
    while (isPunct("@")) {
      i++;
      expectName();
      if (isPunct("(")) skipBalanced();
    }
  }, "directives");
  const selectionSet = /* @__PURE__ */ __name((depth) => {
    if (depth > LIMITS.maxSelectionDepth) throw new ClientError(400, "Document nested too deeply", "BAD_REQUEST");
    selectionSetStarts.push(i);
    expectPunct("{");
    const selections = [];
    while (!isPunct("}")) {
      if (i >= tokens.length) throw new GraphQLSyntaxError("Unbalanced brackets");
      nodes++;
      if (isPunct("...")) {
        i++;
        const t = peek();
        if (t && t.kind === "name" && t.value !== "on") {
          selections.push({ kind: "spread", name: expectName() });
          directives();
        } else {
          let on = null;
          if (t && t.kind === "name" && t.value === "on") {
            i++;
            on = expectName();
          }
          directives();
          selections.push({ kind: "inline", on, selections: selectionSet(depth + 1) });
        }
        continue;
      }
      const key = expectName();
      let name = key;
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
  }, "selectionSet");
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
      const keyword = expectName();
      if (keyword !== "on") throw new GraphQLSyntaxError(`Expected "on", found Name "${keyword}"`);
      const on = expectName();
      directives();
      if (fragments.has(name)) throw new ClientError(400, `There can be only one fragment named "${name}".`, "BAD_REQUEST");
      fragments.set(name, { on, selections: selectionSet(0) });
    } else if (t.kind === "name" && TYPE_SYSTEM_KEYWORDS.has(t.value) || t.kind === "string") {
      throw new ClientError(400, "Only executable definitions (operations and fragments) may be sent", "BAD_REQUEST");
    } else {
      throw new GraphQLSyntaxError(`Unexpected ${describe(t)}`);
    }
  }
  return { operations, fragments, selectionSetStarts, hasSubscription, nodes: nodes + selectionSetStarts.length };
}
__name(parseDocument, "parseDocument");
function describe(token) {
  if (!token) return "<EOF>";
  return token.kind === "name" ? `Name "${token.value}"` : JSON.stringify(token.value);
}
__name(describe, "describe");
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
__name(selectOperation, "selectOperation");

// src/graphql/document.js
var INJECTION = `${INJECTED_TYPENAME}:__typename`;
var NODE_BYTES = 64;
function analyzeDocument(text) {
  const memo = documentMemo.get(text);
  if (memo) return memo;
  const doc = parseText(text);
  const bytes = NODE_BYTES * doc.nodes + stringBytes(doc.normalized) + stringBytes(doc.injected);
  documentMemo.set(text, doc, bytes);
  return doc;
}
__name(analyzeDocument, "analyzeDocument");
function parseText(text) {
  const tokens = tokenize(text);
  const doc = parseDocument(tokens);
  doc.normalized = printTokens(tokens, null);
  doc.injected = printTokens(tokens, new Set(doc.selectionSetStarts), INJECTION);
  doc.selectionSetStarts = null;
  return doc;
}
__name(parseText, "parseText");

// src/json.js
var RawNumber = class {
  static {
    __name(this, "RawNumber");
  }
  constructor(raw) {
    this.raw = raw;
  }
  toJSON() {
    return typeof JSON.rawJSON === "function" ? JSON.rawJSON(this.raw) : Number(this.raw);
  }
};
function parseJsonExact(text) {
  return JSON.parse(
    text,
    (_key, value, context) => typeof value === "number" ? new RawNumber(context && context.source !== void 0 ? context.source : String(value)) : value
  );
}
__name(parseJsonExact, "parseJsonExact");
function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof RawNumber);
}
__name(isPlainObject, "isPlainObject");
function canonicalJson(value, depth, stats) {
  if (depth > LIMITS.maxJsonNesting) throw new ClientError(400, "JSON nested too deeply", "BAD_REQUEST");
  if (depth > stats.max) stats.max = depth;
  if (value instanceof RawNumber) return value.raw;
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v, depth + 1, stats)).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k], depth + 1, stats)}`).join(",")}}`;
}
__name(canonicalJson, "canonicalJson");
var encoder = new TextEncoder();
async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  let hex = "";
  for (const byte of new Uint8Array(digest)) hex += byte.toString(16).padStart(2, "0");
  return hex;
}
__name(sha256Hex, "sha256Hex");
function utf8Length(text) {
  return encoder.encode(text).byteLength;
}
__name(utf8Length, "utf8Length");

// src/canonical.js
var GRAPHQL_PARAMS = ["query", "operationName", "variables", "extensions"];
var KEY_PREFIX = "/__fraiseql-cache/";
var KEY_VERSION = "v3";
function canonicalBase(cfg, request, url) {
  const params = [];
  for (const [k, v] of url.searchParams) {
    if (GRAPHQL_PARAMS.includes(k) || cfg.strippedParams.matches(k.toLowerCase())) continue;
    params.push([k, v]);
  }
  params.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
  const h = request.headers;
  const keyed = [];
  for (const name of cfg.keyedHeaders) {
    const v = h.get(name);
    if (v !== null) keyed.push([name, v]);
  }
  const credentials = [];
  let routingCookies = [];
  const cookieHeader = h.get("cookie");
  if (cookieHeader) {
    const split = splitCookies(cfg, cookieHeader);
    routingCookies = split.routing;
    if (cfg.credentialHeaders.includes("cookie") && split.credentials.length > 0) {
      credentials.push(["cookie", split.credentials.join("; ")]);
    }
  }
  for (const name of cfg.credentialHeaders) {
    if (name === "cookie") continue;
    const v = h.get(name);
    if (v) credentials.push([name, v]);
  }
  const unkeyed = [];
  for (const name of cfg.forwardedHeaders) {
    const v = h.get(name);
    if (v !== null) unkeyed.push([name, v]);
  }
  const address = h.get("cf-connecting-ip") || "unknown";
  return { url, host: url.host, path: url.pathname, params, keyed, credentials, unkeyed, routingCookies, address };
}
__name(canonicalBase, "canonicalBase");
function normalizeParams(raw) {
  if (!isPlainObject(raw)) throw new ClientError(400, "Request body must be a JSON object", "BAD_REQUEST");
  const { query = null, operationName = null, variables = null, extensions = null } = raw;
  if (query !== null && typeof query !== "string") throw new ClientError(400, `"query" must be a string`, "BAD_REQUEST");
  if (operationName !== null && typeof operationName !== "string") {
    throw new ClientError(400, `"operationName" must be a string`, "BAD_REQUEST");
  }
  if (variables !== null && !isPlainObject(variables)) throw new ClientError(400, `"variables" must be an object`, "BAD_REQUEST");
  if (extensions !== null && !isPlainObject(extensions)) throw new ClientError(400, `"extensions" must be an object`, "BAD_REQUEST");
  let apqHash = null;
  let otherExtensions = null;
  if (extensions) {
    const { persistedQuery, ...rest } = extensions;
    if (persistedQuery !== void 0) {
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
    apqHash
  };
}
__name(normalizeParams, "normalizeParams");
function canonicalOperation(params, queryText) {
  const doc = analyzeDocument(queryText);
  const op = selectOperation(doc, params.operationName);
  const depth = { max: 0 };
  const variables = params.variables === null || Object.keys(params.variables).length === 0 ? null : canonicalJson(params.variables, 0, depth);
  const extensions = params.extensions === null ? null : canonicalJson(params.extensions, 0, depth);
  const injected = !doc.hasSubscription;
  return {
    type: op.type,
    name: op.name,
    selections: op.selections,
    fragments: doc.fragments,
    query: doc.normalized,
    forwardQuery: injected ? doc.injected : doc.normalized,
    injected,
    variables,
    extensions,
    cacheable: depth.max <= LIMITS.maxCacheableJsonDepth
  };
}
__name(canonicalOperation, "canonicalOperation");
async function cacheKeyUrl(base, op) {
  const scope = await credentialScope(base);
  const material = JSON.stringify([KEY_VERSION, base.path, base.params, op.query, op.name, op.variables, op.extensions, base.keyed, scope]);
  return `${base.url.origin}${KEY_PREFIX}${await sha256Hex(material)}`;
}
__name(cacheKeyUrl, "cacheKeyUrl");
async function credentialScope(base) {
  if (base.credentials.length === 0) return "";
  if (base.scope === void 0) base.scope = await sha256Hex(JSON.stringify(base.credentials));
  return base.scope;
}
__name(credentialScope, "credentialScope");

// src/apq.js
async function lookupApq(env, hash) {
  const memo = apqMemo.get(hash);
  if (memo !== void 0) return memo;
  const kv = env.PERSISTED_QUERIES;
  if (!kv) return null;
  let text = null;
  try {
    text = await kv.get(hash, { cacheTtl: 3600 });
  } catch (err) {
    log("warn", "apq_lookup_failed", { message: String(err && err.message) });
    return null;
  }
  if (typeof text !== "string" || await sha256Hex(text) !== hash) return null;
  apqMemo.set(hash, text, stringBytes(text));
  return text;
}
__name(lookupApq, "lookupApq");
async function resolveOperation(env, ctx, raw) {
  const params = normalizeParams(raw);
  if (params.query === null) {
    if (!params.apqHash) throw new ClientError(400, "Must provide query string.", "BAD_REQUEST");
    const text = await lookupApq(env, params.apqHash);
    if (text === null) throw new ClientError(200, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND");
    return canonicalOperation(params, text);
  }
  if (params.apqHash) await checkApqHash(params.query, params.apqHash);
  const op = canonicalOperation(params, params.query);
  if (params.apqHash) learnApq(env, ctx, params.apqHash, params.query);
  return op;
}
__name(resolveOperation, "resolveOperation");
async function checkApqHash(text, hash) {
  if (await sha256Hex(text) !== hash) throw new ClientError(400, "provided sha does not match query", "BAD_REQUEST");
}
__name(checkApqHash, "checkApqHash");
function learnApq(env, ctx, hash, text) {
  const cap = LIMITS.apqMaxBytes;
  if (apqMemo.has(hash) || text.length > cap || text.length * 3 > cap && utf8Length(text) > cap) return;
  apqMemo.set(hash, text, stringBytes(text));
  const kv = env.PERSISTED_QUERIES;
  if (!kv) return;
  ctx.waitUntil(
    (async () => {
      try {
        if (await kv.get(hash) === null) await kv.put(hash, text, { expirationTtl: LIMITS.apqTtlSeconds });
      } catch (err) {
        log("warn", "apq_store_failed", { message: String(err && err.message) });
      }
    })()
  );
}
__name(learnApq, "learnApq");

// src/http/request.js
var JSON_MEDIA_TYPES = /* @__PURE__ */ new Set(["application/json", "application/graphql+json"]);
var GRAPHQL_MEDIA_TYPE = "application/graphql";
var decoder = new TextDecoder();
var ACCEPTED_POST_TYPES = "application/json, application/graphql+json, application/graphql";
function mediaTypeOf(value) {
  if (!value) return null;
  const [type, ...params] = value.split(";");
  let charset = null;
  for (const p of params) {
    const eq = p.indexOf("=");
    if (eq > 0 && p.slice(0, eq).trim().toLowerCase() === "charset") {
      charset = p.slice(eq + 1).trim().replace(/^"|"$/g, "").toLowerCase();
    }
  }
  return { type: type.trim().toLowerCase(), charset };
}
__name(mediaTypeOf, "mediaTypeOf");
async function readPostBody(cfg, request) {
  const media = mediaTypeOf(request.headers.get("content-type"));
  const known = media && (JSON_MEDIA_TYPES.has(media.type) || media.type === GRAPHQL_MEDIA_TYPE);
  if (!known || media.charset !== null && media.charset !== "utf-8") {
    throw new ClientError(415, "Unsupported Media Type: send application/json", "UNSUPPORTED_MEDIA_TYPE", {
      "accept-post": ACCEPTED_POST_TYPES
    });
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > cfg.maxBodyBytes) throw tooLarge(cfg);
  const text = declared !== null ? await request.text() : await readLimited(request.body, cfg.maxBodyBytes);
  if (text === null) throw tooLarge(cfg);
  return { type: media.type, text };
}
__name(readPostBody, "readPostBody");
function tooLarge(cfg) {
  return new ClientError(413, `Request body exceeds ${cfg.maxBodyBytes} bytes`, "PAYLOAD_TOO_LARGE");
}
__name(tooLarge, "tooLarge");
async function readLimited(body, limit) {
  if (!body) return "";
  const reader = body.getReader();
  const chunks = [];
  let total = 0;
  for (; ; ) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {
      });
      return null;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return decoder.decode(chunks[0]);
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return decoder.decode(bytes);
}
__name(readLimited, "readLimited");
function parseJsonParam(raw, name) {
  if (raw === null || raw === "") return null;
  try {
    return parseJsonExact(raw);
  } catch {
    throw new ClientError(400, `The "${name}" parameter is not valid JSON`, "BAD_REQUEST");
  }
}
__name(parseJsonParam, "parseJsonParam");
function graphqlParams(method, url, body) {
  const sp = url.searchParams;
  const fromUrl = /* @__PURE__ */ __name((query) => ({
    query,
    operationName: sp.get("operationName"),
    variables: parseJsonParam(sp.get("variables"), "variables"),
    extensions: parseJsonParam(sp.get("extensions"), "extensions")
  }), "fromUrl");
  if (method === "GET") return fromUrl(sp.get("query"));
  if (body.type === GRAPHQL_MEDIA_TYPE) return fromUrl(body.text);
  try {
    return parseJsonExact(body.text);
  } catch {
    throw new ClientError(400, "Request body is not valid JSON", "BAD_REQUEST");
  }
}
__name(graphqlParams, "graphqlParams");

// src/http/origin.js
var CORS_PREFLIGHT_HEADERS = ["access-control-request-method", "access-control-request-headers"];
var WEBSOCKET_HEADERS = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"];
var RESPONSE_WIRE_HEADERS = ["content-encoding", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "trailer"];
var OriginFailure = class extends Error {
  static {
    __name(this, "OriginFailure");
  }
  constructor(reason, message) {
    super(message);
    this.reason = reason;
  }
};
function originTarget(cfg, base) {
  const origin = cfg.originUrl;
  const prefix = origin.pathname.replace(/\/+$/, "");
  const search = base.params.length ? `?${new URLSearchParams(base.params)}` : "";
  return `${origin.origin}${prefix}${base.path}${search}`;
}
__name(originTarget, "originTarget");
function originHeaders(cfg, base, extra = []) {
  const headers = new Headers();
  for (const [k, v] of base.keyed) headers.set(k, v);
  for (const [k, v] of base.unkeyed) headers.set(k, v);
  let cookie = null;
  for (const [k, v] of base.credentials) {
    if (k === "cookie") cookie = v;
    else headers.set(k, v);
  }
  const cookies = [...cookie ? [cookie] : [], ...base.routingCookies];
  if (cookies.length) headers.set("cookie", cookies.join("; "));
  for (const [k, v] of extra) headers.set(k, v);
  headers.set("x-forwarded-host", base.host);
  headers.delete(cfg.originAuthHeader);
  if (cfg.originAuthToken) headers.set(cfg.originAuthHeader, cfg.originAuthToken);
  return headers;
}
__name(originHeaders, "originHeaders");
function operationBody(op) {
  let out = `{"query":${JSON.stringify(op.forwardQuery)}`;
  if (op.name !== null) out += `,"operationName":${JSON.stringify(op.name)}`;
  if (op.variables !== null) out += `,"variables":${op.variables}`;
  if (op.extensions !== null) out += `,"extensions":${op.extensions}`;
  return `${out}}`;
}
__name(operationBody, "operationBody");
function originRequest(cfg, base, ops, batched) {
  const body = batched ? `[${ops.map(operationBody).join(",")}]` : operationBody(ops[0]);
  const headers = originHeaders(cfg, base, [["content-type", "application/json"]]);
  return new Request(originTarget(cfg, base), { method: "POST", headers, body, redirect: "manual" });
}
__name(originRequest, "originRequest");
async function fetchAnswer(cfg, originReq, { wholeDeadline = true } = {}) {
  const controller = new AbortController();
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const failure = new OriginFailure("timeout", `origin answer not complete within ${cfg.originTimeoutMs} ms`);
      controller.abort(failure);
      reject(failure);
    }, cfg.originTimeoutMs);
  });
  expired.catch(() => {
  });
  try {
    const response = await Promise.race([fetch(originReq, { signal: controller.signal }), expired]);
    if (!wholeDeadline) clearTimeout(timer);
    const text = await (wholeDeadline ? Promise.race([readCapped(cfg, response), expired]) : readCapped(cfg, response));
    return { response, text };
  } catch (err) {
    if (err instanceof OriginFailure) throw err;
    throw new OriginFailure("network", String(err && err.message));
  } finally {
    clearTimeout(timer);
  }
}
__name(fetchAnswer, "fetchAnswer");
async function readCapped(cfg, response) {
  const declared = response.headers.get("content-length");
  const encoded = response.headers.has("content-encoding");
  if (declared !== null && Number(declared) > cfg.maxResponseBytes && !encoded) {
    await response.body?.cancel();
    throw tooLarge2(cfg);
  }
  const text = declared !== null && !encoded ? await response.text() : await readLimited(response.body, cfg.maxResponseBytes);
  if (text === null) throw tooLarge2(cfg);
  return text;
}
__name(readCapped, "readCapped");
function tooLarge2(cfg) {
  return new OriginFailure("too_large", `origin answer exceeds MAX_RESPONSE_BYTES (${cfg.maxResponseBytes})`);
}
__name(tooLarge2, "tooLarge");
async function fetchHeaders(cfg, originReq) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error("origin timeout")), cfg.originTimeoutMs);
  try {
    return await fetch(originReq, { signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}
__name(fetchHeaders, "fetchHeaders");
function passThrough(cfg, request, base, extraHeaderNames = []) {
  const extra = [];
  for (const name of extraHeaderNames) {
    const v = request.headers.get(name);
    if (v !== null) extra.push([name, v]);
  }
  const make = /* @__PURE__ */ __name(() => new Request(originTarget(cfg, base), { method: request.method, headers: originHeaders(cfg, base, extra), redirect: "manual" }), "make");
  return passThroughRequest(cfg, make);
}
__name(passThrough, "passThrough");
var preflight = /* @__PURE__ */ __name((cfg, request, base) => passThrough(cfg, request, base, CORS_PREFLIGHT_HEADERS), "preflight");
async function passThroughRequest(cfg, makeRequest) {
  let response;
  try {
    response = await fetchHeaders(cfg, makeRequest());
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  const out = new Response(response.body, response);
  out.headers.delete(cfg.originAuthHeader);
  out.headers.set(CACHE_STATUS_HEADER, "BYPASS");
  return out;
}
__name(passThroughRequest, "passThroughRequest");
async function forwardWebSocket(cfg, request, base) {
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
__name(forwardWebSocket, "forwardWebSocket");
function clientHeaders(cfg, originHeadersIn, status) {
  const headers = new Headers(originHeadersIn);
  for (const name of RESPONSE_WIRE_HEADERS) headers.delete(name);
  headers.delete("cache-tag");
  headers.delete(cfg.originAuthHeader);
  if (status) headers.set(CACHE_STATUS_HEADER, status);
  return headers;
}
__name(clientHeaders, "clientHeaders");

// src/invalidation.js
var LOCAL_INVALIDATIONS_PATH = `${KEY_PREFIX}local-invalidations`;
var tombstones = { tags: /* @__PURE__ */ new Map(), readAt: -Infinity, pending: null };
function recordKey(url) {
  return new Request(`${url.origin}${LOCAL_INVALIDATIONS_PATH}`);
}
__name(recordKey, "recordKey");
function mergeTombstones(target, source, now, horizonMs) {
  for (const [tag, at] of source) {
    if (now - at > horizonMs) continue;
    const prev = target.get(tag);
    if (prev === void 0 || at > prev) target.set(tag, at);
  }
  for (const [tag, at] of target) if (now - at > horizonMs) target.delete(tag);
  if (target.size > LIMITS.maxLocalTombstones) {
    const sorted = [...target].sort((a, b) => a[1] - b[1]);
    for (const [tag] of sorted.slice(0, target.size - LIMITS.maxLocalTombstones)) target.delete(tag);
  }
}
__name(mergeTombstones, "mergeTombstones");
async function readStored(url) {
  const res = await caches.default.match(recordKey(url));
  if (!res) return /* @__PURE__ */ new Map();
  try {
    return new Map(Object.entries(JSON.parse(await res.text())));
  } catch {
    return /* @__PURE__ */ new Map();
  }
}
__name(readStored, "readStored");
async function invalidateLocally(cfg, url, tags, now = Date.now()) {
  const horizonMs = cfg.localInvalidationSeconds * 1e3;
  const mine = new Map(tags.map((t) => [t, now]));
  mergeTombstones(tombstones.tags, mine, now, horizonMs);
  try {
    const stored = await readStored(url);
    mergeTombstones(stored, mine, now, horizonMs);
    await caches.default.put(
      recordKey(url),
      new Response(JSON.stringify(Object.fromEntries(stored)), {
        headers: { "content-type": "application/json", "cache-control": `max-age=${Math.ceil(cfg.localInvalidationSeconds)}` }
      })
    );
  } catch (err) {
    log("error", "local_invalidation_failed", { message: String(err && err.message) });
  }
}
__name(invalidateLocally, "invalidateLocally");
function refreshIfDue(cfg, url) {
  const now = Date.now();
  if (now - tombstones.readAt < cfg.localRefreshMs) return tombstones.pending;
  tombstones.readAt = now;
  const pending = readStored(url).then(
    (stored) => mergeTombstones(tombstones.tags, stored, now, cfg.localInvalidationSeconds * 1e3),
    (err) => log("warn", "local_invalidation_read_failed", { message: String(err && err.message) })
  ).finally(() => {
    if (tombstones.pending === pending) tombstones.pending = null;
  });
  tombstones.pending = pending;
  return pending;
}
__name(refreshIfDue, "refreshIfDue");
function invalidatedSince(tagHeader, fetchedAt) {
  if (tombstones.tags.size === 0 || !tagHeader) return false;
  for (const tag of tagHeader.split(",")) {
    const at = tombstones.tags.get(tag);
    if (at !== void 0 && at >= fetchedAt) return true;
  }
  return false;
}
__name(invalidatedSince, "invalidatedSince");

// src/tags.js
var TYPE_TAG_PREFIX = "gql-type:";
var NOID_TAG_PREFIX = "gql-noid:";
function encodeTagPart(value) {
  return encodeURIComponent(value.toWellFormed());
}
__name(encodeTagPart, "encodeTagPart");
var typeTag = /* @__PURE__ */ __name((typename) => `${TYPE_TAG_PREFIX}${encodeTagPart(typename)}`, "typeTag");
var noidTag = /* @__PURE__ */ __name((typename) => `${NOID_TAG_PREFIX}${encodeTagPart(typename)}`, "noidTag");
var operationTag = /* @__PURE__ */ __name((name) => name ? `gql-op:${encodeTagPart(name)}` : "gql-op-anonymous", "operationTag");
function collectTags(data, op) {
  const entities = [];
  const seen = /* @__PURE__ */ new Set();
  const allTypes = /* @__PURE__ */ new Set();
  const typesWithoutId = /* @__PURE__ */ new Set();
  const resolver = new FieldResolver(op);
  const stack = [[data, [op.selections], true]];
  while (stack.length > 0) {
    const [node, selectionSets, root] = stack.pop();
    if (node === null || typeof node !== "object" || node instanceof RawNumber) continue;
    if (Array.isArray(node)) {
      for (let i = node.length - 1; i >= 0; i--) stack.push([node[i], selectionSets, false]);
      continue;
    }
    const candidates = resolver.candidates(selectionSets);
    const typename = typenameOf(node, candidates, op);
    let id = null;
    const children = [];
    for (const [key, field] of resolver.resolve(selectionSets, candidates, typename)) {
      if (!Object.hasOwn(node, key)) continue;
      const value = node[key];
      if (field.name === "id" && id === null) {
        if (typeof value === "string") id = value;
        else if (value instanceof RawNumber) id = value.raw;
      }
      if (field.subs.length > 0 && value !== null && typeof value === "object") children.push([value, field.subs, false]);
    }
    if (typename !== null && !root) {
      allTypes.add(typename);
      const tag = id === null ? null : `${encodeTagPart(typename)}:${encodeTagPart(id)}`;
      if (tag !== null && tag.length <= LIMITS.tagMaxChars) {
        if (!seen.has(tag)) {
          seen.add(tag);
          entities.push(tag);
        }
      } else {
        typesWithoutId.add(typename);
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
  }
  return { entities, allTypes, typesWithoutId };
}
__name(collectTags, "collectTags");
function entryTags(op, found) {
  return [
    operationTag(op.name),
    ...found.entities,
    ...[...found.allTypes].map(typeTag),
    ...[...found.typesWithoutId].map(noidTag)
  ].filter((t) => t.length <= LIMITS.tagMaxChars);
}
__name(entryTags, "entryTags");
function typenameOf(node, candidates, op) {
  if (op.injected) {
    const v = node[INJECTED_TYPENAME];
    if (typeof v === "string" && v !== "") return v;
  }
  for (const [key, list] of candidates) {
    if (list.every((c) => c.name === "__typename") && typeof node[key] === "string" && node[key] !== "") return node[key];
  }
  return null;
}
__name(typenameOf, "typenameOf");
var FieldResolver = class {
  static {
    __name(this, "FieldResolver");
  }
  constructor(op) {
    this.op = op;
    this.flat = /* @__PURE__ */ new Map();
    this.resolved = /* @__PURE__ */ new Map();
  }
  // responseKey -> [{name, on, subs}] for every field under that key, with the
  // nearest type condition above it (null: the parent field's own type).
  candidates(selectionSets) {
    let out = this.flat.get(selectionSets);
    if (out) return out;
    out = /* @__PURE__ */ new Map();
    const fragments = this.op.fragments;
    const expanded = /* @__PURE__ */ new Set();
    const walk = /* @__PURE__ */ __name((selections, on) => {
      for (const sel of selections) {
        if (sel.kind === "field") {
          let list = out.get(sel.key);
          if (!list) out.set(sel.key, list = []);
          list.push({ name: sel.name, on, subs: sel.selections });
        } else if (sel.kind === "inline") {
          walk(sel.selections, sel.on ?? on);
        } else if (!expanded.has(sel.name) && fragments.has(sel.name)) {
          expanded.add(sel.name);
          const fragment = fragments.get(sel.name);
          walk(fragment.selections, fragment.on);
        }
      }
    }, "walk");
    for (const selections of selectionSets) walk(selections, null);
    if (this.op.injected) out.set(INJECTED_TYPENAME, [{ name: "__typename", on: null, subs: null }]);
    this.flat.set(selectionSets, out);
    return out;
  }
  // responseKey -> {name, subs} for an object of `typename`. In a valid
  // document, fields that share a key but not a name sit under distinct
  // object types: the ones under no condition or under `typename` itself
  // apply; the others only if they agree with them. name is null when that
  // does not settle it.
  resolve(selectionSets, candidates, typename) {
    let byType = this.resolved.get(selectionSets);
    if (!byType) this.resolved.set(selectionSets, byType = /* @__PURE__ */ new Map());
    let out = byType.get(typename);
    if (out) return out;
    out = /* @__PURE__ */ new Map();
    for (const [key, list] of candidates) {
      const names = new Set(list.map((c) => c.name));
      const sure = new Set(list.filter((c) => c.on === null || c.on === typename).map((c) => c.name));
      let name = null;
      if (sure.size === 1) name = [...sure][0];
      else if (sure.size === 0 && names.size === 1) name = [...names][0];
      const subs = [];
      for (const c of list) if (c.subs && (name === null || c.name === name)) subs.push(c.subs);
      out.set(key, { name, subs });
    }
    byType.set(typename, out);
    return out;
  }
};

// src/cache/policy.js
function parseCacheControl(value) {
  const directives = /* @__PURE__ */ new Map();
  for (const part of (value || "").split(",")) {
    const eq = part.indexOf("=");
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (!name) continue;
    directives.set(name, eq < 0 ? "" : part.slice(eq + 1).trim().replace(/^"|"$/g, ""));
  }
  return directives;
}
__name(parseCacheControl, "parseCacheControl");
function seconds(directives, name) {
  if (!directives.has(name)) return null;
  const n = Number.parseInt(directives.get(name), 10);
  return Number.isFinite(n) && n >= 0 ? n : 0;
}
__name(seconds, "seconds");
function isPrivate(cfg, headers) {
  const cc = parseCacheControl(headers.get("cache-control"));
  if (cc.has("private") || cc.has("no-store") || cc.has("no-cache")) return true;
  return !onlyRoutingCookies(cfg, headers.getSetCookie());
}
__name(isPrivate, "isPrivate");
function storagePolicy(cfg, response, payload) {
  if (response.status !== 200) return null;
  if (isPrivate(cfg, response.headers)) return null;
  const cc = parseCacheControl(response.headers.get("cache-control"));
  const ttl = seconds(cc, "s-maxage") ?? seconds(cc, "max-age") ?? cfg.ttl;
  if (ttl <= 0) return null;
  const varyOk = /* @__PURE__ */ new Set(["accept-encoding", ...cfg.keyedHeaders, ...cfg.credentialHeaders]);
  const vary = (response.headers.get("vary") || "").split(",").map((v) => v.trim().toLowerCase()).filter(Boolean);
  if (vary.some((v) => !varyOk.has(v))) return null;
  if (!(response.headers.get("content-type") || "").toLowerCase().includes("json")) return null;
  if (!isPlainObject(payload)) return null;
  if (payload.errors !== void 0 && !(Array.isArray(payload.errors) && payload.errors.length === 0)) return null;
  if (!isPlainObject(payload.data)) return null;
  const noStale = cc.has("must-revalidate") || cc.has("proxy-revalidate");
  return boundedLifetime(cfg, {
    ttl,
    swr: noStale ? 0 : seconds(cc, "stale-while-revalidate") ?? cfg.swr,
    sie: noStale ? 0 : seconds(cc, "stale-if-error") ?? cfg.sie
  });
}
__name(storagePolicy, "storagePolicy");
function boundedLifetime(cfg, { ttl, swr, sie }) {
  const horizon = cfg.localInvalidationSeconds;
  const t = Math.min(ttl, horizon);
  return { ttl: t, swr: Math.min(swr, horizon - t), sie: Math.min(sie, horizon - t) };
}
__name(boundedLifetime, "boundedLifetime");

// src/cache/entry.js
var META_HEADER = "x-fraiseql-meta";
var ORIGIN_CACHE_CONTROL_HEADER = "x-fraiseql-origin-cache-control";
function rewriteResponse(text, ops, batched) {
  let payload;
  try {
    payload = parseJsonExact(text);
  } catch {
    return { body: text, results: ops.map(() => null) };
  }
  const results = batched ? Array.isArray(payload) ? payload : [] : [payload];
  const body = ops.some((op) => op.injected) && text.includes(INJECTED_TYPENAME) ? JSON.stringify(payload, withoutInjected) : text;
  return { body, results: ops.map((_, i) => results[i] ?? null) };
}
__name(rewriteResponse, "rewriteResponse");
function withoutInjected(key, value) {
  return key === INJECTED_TYPENAME ? void 0 : value;
}
__name(withoutInjected, "withoutInjected");
function stripInjected(payload) {
  return JSON.stringify(payload, withoutInjected);
}
__name(stripInjected, "stripInjected");
function prepareEntry(cfg, response, text, op, fetchedAt) {
  const { body, results } = rewriteResponse(text, [op], false);
  return prepareFromPayload(cfg, response, body, results[0], op, fetchedAt);
}
__name(prepareEntry, "prepareEntry");
function prepareFromPayload(cfg, response, body, payload, op, fetchedAt) {
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
    fetchedAt
  };
  const policy = storagePolicy(cfg, response, payload);
  if (policy === null) return out;
  const tagHeader = entryTags(op, collectTags(payload.data, op)).join(",");
  if (tagHeader.length > LIMITS.cacheTagMaxBytes) {
    log("warn", "cache_tags_overflow", { bytes: tagHeader.length });
    return out;
  }
  out.tagHeader = tagHeader;
  const stored = new Headers(headers);
  stored.delete("set-cookie");
  const originCacheControl = response.headers.get("cache-control");
  if (originCacheControl) stored.set(ORIGIN_CACHE_CONTROL_HEADER, originCacheControl);
  stored.set("cache-control", `max-age=${Math.max(1, Math.ceil(policy.ttl + Math.max(policy.swr, policy.sie)))}`);
  stored.set("cache-tag", tagHeader);
  stored.set(META_HEADER, `${fetchedAt},${policy.ttl},${policy.swr},${policy.sie}`);
  out.entry = { status: response.status, headers: [...stored], body, fetchedAt, ...policy, tagHeader };
  return out;
}
__name(prepareFromPayload, "prepareFromPayload");
function storedResponse(entry) {
  return new Response(entry.body, { status: entry.status, headers: entry.headers });
}
__name(storedResponse, "storedResponse");
function entryState(headers) {
  const [fetchedAt, ttl, swr, sie] = (headers.get(META_HEADER) || "").split(",").map(Number);
  return { fetchedAt: fetchedAt > 0 ? fetchedAt : 0, ttl: ttl || 0, swr: swr || 0, sie: sie || 0 };
}
__name(entryState, "entryState");
var ageOf = /* @__PURE__ */ __name((fetchedAt, now = Date.now()) => fetchedAt > 0 ? Math.max(0, now - fetchedAt) / 1e3 : Infinity, "ageOf");
function servedHeaders(storedHeaders) {
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
__name(servedHeaders, "servedHeaders");
function fromCache(cached, status, ageSeconds) {
  const headers = servedHeaders(cached.headers);
  headers.set(CACHE_STATUS_HEADER, status);
  headers.set("age", String(Math.floor(ageSeconds)));
  return new Response(cached.body, { status: cached.status, statusText: cached.statusText, headers });
}
__name(fromCache, "fromCache");

// src/cache/memory.js
var memory = new BudgetMap(LIMITS.responseMemoryBytes);
function remember(keyUrl, entry, now = Date.now()) {
  const served = [...servedHeaders(entry.headers)];
  let bytes = stringBytes(entry.body);
  for (const [k, v] of served) bytes += stringBytes(k) + stringBytes(v);
  memory.set(keyUrl, { ...entry, served, checkedAt: now }, bytes);
}
__name(remember, "remember");
function recall(keyUrl, now = Date.now()) {
  const copy = memory.get(keyUrl);
  if (copy === void 0) return void 0;
  if (now - copy.checkedAt >= LIMITS.responseMemoryTrustMs) return void 0;
  return copy;
}
__name(recall, "recall");
function confirm(keyUrl, fetchedAt, now = Date.now()) {
  const copy = memory.peek(keyUrl);
  if (copy === void 0 || copy.fetchedAt !== fetchedAt) return void 0;
  copy.checkedAt = now;
  return copy;
}
__name(confirm, "confirm");
function forget(keyUrl) {
  memory.delete(keyUrl);
}
__name(forget, "forget");

// src/cache/serve.js
var CACHE_KEY_HEADER = "x-fraiseql-cache-key";
var STORE_AFTER_ANSWER_MS = 25;
var revalidating = /* @__PURE__ */ new Set();
var inflight = /* @__PURE__ */ new Map();
async function serveQuery(cfg, ctx, keyUrl, base, getOp) {
  const response = await lookupOrFetch(cfg, ctx, keyUrl, base, getOp);
  if (!response.headers.has(CACHE_KEY_HEADER)) response.headers.set(CACHE_KEY_HEADER, keyId(keyUrl));
  return response;
}
__name(serveQuery, "serveQuery");
async function lookupOrFetch(cfg, ctx, keyUrl, base, getOp) {
  const found = await lookup(cfg, ctx, keyUrl, base, getOp);
  if (found.response) return found.response;
  let handedOver;
  const answered = new Promise((resolve) => handedOver = resolve);
  const { outcome, shared } = await fetchShared(cfg, ctx, keyUrl, base, await getOp(), answered);
  return finish(found.miss, outcome, shared, handedOver);
}
__name(lookupOrFetch, "lookupOrFetch");
async function lookup(cfg, ctx, keyUrl, base, getOp) {
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
__name(lookup, "lookup");
async function finish(miss, outcome, shared, handedOver = () => {
}) {
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
__name(finish, "finish");
var keyId = /* @__PURE__ */ __name((keyUrl) => keyUrl.slice(keyUrl.lastIndexOf("/") + 1), "keyId");
function fromMemory(keyUrl, copy, ageSeconds) {
  const headers = [...copy.served, [CACHE_STATUS_HEADER, "HIT"], ["age", String(Math.floor(ageSeconds))], [CACHE_KEY_HEADER, keyId(keyUrl)]];
  return new Response(copy.body, { status: copy.status, headers });
}
__name(fromMemory, "fromMemory");
function answer(outcome, status, handedOver = () => {
}) {
  const headers = new Headers(outcome.headers);
  if (status === "COALESCED") headers.delete("set-cookie");
  headers.set(CACHE_STATUS_HEADER, status);
  headers.set("age", "0");
  if (outcome.tagHeader) headers.set("cache-tag", outcome.tagHeader);
  return new Response(bodyThen(outcome.body, handedOver), { status: outcome.status, statusText: outcome.statusText, headers });
}
__name(answer, "answer");
var encoder2 = new TextEncoder();
function bodyThen(text, taken) {
  const bytes = encoder2.encode(text);
  const { readable, writable } = new FixedLengthStream(bytes.byteLength);
  const writer = writable.getWriter();
  writer.write(bytes).then(() => writer.close()).then(taken, taken);
  return readable;
}
__name(bodyThen, "bodyThen");
async function revalidate(cfg, ctx, keyUrl, base, getOp) {
  const { outcome } = await fetchShared(cfg, ctx, keyUrl, base, await getOp());
  if (outcome.error || outcome.status >= 500) log("warn", "revalidate_failed", { status: outcome.status || 0 });
}
__name(revalidate, "revalidate");
async function fetchShared(cfg, ctx, keyUrl, base, op, answered = null) {
  const pending = inflight.get(keyUrl);
  if (pending) {
    const outcome = await pending;
    const reusable = outcome.error || outcome.shareable && !invalidatedSince(outcome.tagHeader, outcome.fetchedAt);
    if (reusable) return { outcome, shared: true };
    if (!outcome.shareable) return { outcome: await fill(cfg, base, op), shared: false };
  }
  const promise = fill(cfg, base, op);
  inflight.set(keyUrl, promise);
  settle(cfg, ctx, keyUrl, promise, await promise, answered);
  return { outcome: await promise, shared: false };
}
__name(fetchShared, "fetchShared");
function settle(cfg, ctx, keyUrl, promise, outcome, answered = null) {
  const release = /* @__PURE__ */ __name(() => {
    if (inflight.get(keyUrl) === promise) inflight.delete(keyUrl);
  }, "release");
  if (!outcome.entry) return release();
  if (Date.now() - outcome.fetchedAt > cfg.originTimeoutMs + 250) {
    log("warn", "fill_too_late", { ms: Date.now() - outcome.fetchedAt });
    return release();
  }
  remember(keyUrl, outcome.entry);
  const ready = (answered ? Promise.race([answered, sleep(200)]) : Promise.resolve()).then(() => sleep(STORE_AFTER_ANSWER_MS));
  ctx.waitUntil(ready.then(() => putEntry(keyUrl, outcome.entry)).finally(release));
}
__name(settle, "settle");
function register(keyUrl, promise) {
  inflight.set(keyUrl, promise);
}
__name(register, "register");
function pendingFill(keyUrl) {
  return inflight.get(keyUrl);
}
__name(pendingFill, "pendingFill");
async function putEntry(keyUrl, entry) {
  try {
    await caches.default.put(new Request(keyUrl), storedResponse(entry));
  } catch (err) {
    log("error", "cache_put_failed", { message: String(err && err.message) });
  }
}
__name(putEntry, "putEntry");
async function fill(cfg, base, op) {
  const fetchedAt = Date.now();
  try {
    const { response, text } = await fetchAnswer(cfg, originRequest(cfg, base, [op], false));
    return prepareEntry(cfg, response, text, op, fetchedAt);
  } catch (error) {
    return { error, fetchedAt, shareable: true };
  }
}
__name(fill, "fill");
async function fillBatch(cfg, base, ops) {
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
__name(fillBatch, "fillBatch");

// src/limits.js
async function limitMutations(env, base, count) {
  const limiter = env.MUTATION_LIMITER;
  if (!limiter || count === 0) return;
  const scope = await credentialScope(base);
  const keys = [`ip:${base.address}`, ...scope ? [`c:${scope}`] : []];
  for (let i = 0; i < count; i++) {
    for (const key of keys) {
      if (!await allowed(limiter, key)) {
        throw new ClientError(429, "Too many mutations; slow down", "RATE_LIMITED", {
          "retry-after": String(LIMITS.mutationRetryAfterSeconds)
        });
      }
    }
  }
}
__name(limitMutations, "limitMutations");
async function allowed(limiter, key) {
  try {
    const { success } = await limiter.limit({ key });
    return success;
  } catch (err) {
    log("warn", "rate_limiter_failed", { message: String(err && err.message) });
    return true;
  }
}
__name(allowed, "allowed");

// src/mutations.js
async function serveMutations(cfg, env, ctx, base, ops, batched) {
  await limitMutations(env, base, ops.filter((o) => o.type === "mutation").length);
  let answered;
  try {
    answered = await fetchAnswer(cfg, originRequest(cfg, base, ops, batched), { wholeDeadline: false });
  } catch (err) {
    if (err.reason !== "network") log("error", "mutation_answer_unread", { reason: err.reason });
    return originUnreachable(err, "BYPASS");
  }
  const { response, text } = answered;
  const { body, results } = rewriteResponse(text, ops, batched);
  const tags = mutationTags(cfg, ops, results);
  if (tags.length > 0) {
    const at = Date.now();
    await invalidateLocally(cfg, base.url, tags, at);
    ctx.waitUntil(enqueuePurge(env, cfg, tags, at));
  }
  return new Response(body, { status: response.status, statusText: response.statusText, headers: clientHeaders(cfg, response.headers, "BYPASS") });
}
__name(serveMutations, "serveMutations");
function mutationTags(cfg, ops, results) {
  const entities = /* @__PURE__ */ new Set();
  const types = /* @__PURE__ */ new Set();
  const withoutId = /* @__PURE__ */ new Set();
  ops.forEach((op, i) => {
    if (op.type !== "mutation" || !isPlainObject(results[i])) return;
    const found = collectTags(results[i].data, op);
    for (const t of found.entities) entities.add(t);
    for (const t of found.allTypes) types.add(t);
    for (const t of found.typesWithoutId) withoutId.add(t);
  });
  const noid = [...types].filter((t) => !withoutId.has(t)).map(noidTag);
  const tags = [...entities, ...noid, ...[...withoutId].map(typeTag)];
  if (tags.length <= cfg.maxTagsPerMutation) return tags;
  let collapsed = [...types].map(typeTag);
  log("warn", "purge_tags_collapsed", { entities: entities.size, types: collapsed.length });
  if (collapsed.length > cfg.maxTagsPerMutation) {
    log("warn", "purge_tags_truncated", { dropped: collapsed.length - cfg.maxTagsPerMutation });
    collapsed = collapsed.slice(0, cfg.maxTagsPerMutation);
  }
  return collapsed;
}
__name(mutationTags, "mutationTags");

// src/batch.js
async function serveBatch(cfg, env, ctx, base, items) {
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
__name(serveBatch, "serveBatch");
async function serveQueries(cfg, ctx, base, ops) {
  const keys = await Promise.all(ops.map((op) => cacheKeyUrl(base, op)));
  const unique = /* @__PURE__ */ new Map();
  keys.forEach((keyUrl, i) => unique.has(keyUrl) || unique.set(keyUrl, ops[i]));
  const answers = /* @__PURE__ */ new Map();
  const misses = [];
  await Promise.all(
    [...unique].map(async ([keyUrl, op]) => {
      const found = await lookup(cfg, ctx, keyUrl, base, () => op);
      if (found.response) answers.set(keyUrl, found.response);
      else misses.push({ keyUrl, op, miss: found.miss });
    })
  );
  const joining = misses.filter((m) => pendingFill(m.keyUrl));
  const fetching = misses.filter((m) => !pendingFill(m.keyUrl));
  const outcomes = fetching.length > 0 ? startFills(cfg, ctx, base, fetching) : [];
  await Promise.all([
    ...joining.map(async (m) => {
      const { outcome, shared } = await fetchShared(cfg, ctx, m.keyUrl, base, m.op);
      answers.set(m.keyUrl, await finish(m.miss, outcome, shared));
    }),
    ...fetching.map(async (m, i) => answers.set(m.keyUrl, await finish(m.miss, await outcomes[i], false)))
  ]);
  return assemble(keys.map((k) => answers.get(k)), keys);
}
__name(serveQueries, "serveQueries");
function startFills(cfg, ctx, base, misses) {
  const all = misses.length === 1 ? fill(cfg, base, misses[0].op).then((o) => [o]) : fillBatch(cfg, base, misses.map((m) => m.op));
  return misses.map((m, i) => {
    const promise = all.then((outcomes) => outcomes[i]);
    register(m.keyUrl, promise);
    promise.then((outcome) => settle(cfg, ctx, m.keyUrl, promise, outcome));
    return promise;
  });
}
__name(startFills, "startFills");
var ITEM_HEADERS = ["age", "cache-tag", "content-length", "etag", "last-modified", "set-cookie", CACHE_STATUS_HEADER, CACHE_KEY_HEADER];
async function assemble(responses, keys) {
  const template = responses.find((r) => r.status === 200) ?? responses[0];
  const headers = new Headers(template.headers);
  for (const name of ITEM_HEADERS) headers.delete(name);
  headers.set("content-type", "application/json");
  headers.set("cache-control", "no-store");
  const texts = /* @__PURE__ */ new Map();
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
__name(assemble, "assemble");
function isJson(text) {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
__name(isJson, "isJson");

// src/router.js
var MAX_FINGERPRINT_BODY = 16384;
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
  if (upgrade === "websocket" && method === "GET" && !hasGraphQLParams) return forwardWebSocket(cfg, request, canonicalBase(cfg, request, url));
  if (method === "OPTIONS") return preflight(cfg, request, canonicalBase(cfg, request, url));
  if (method === "GET" && !hasGraphQLParams) return passThrough(cfg, request, canonicalBase(cfg, request, url));
  const body = method === "POST" ? await readPostBody(cfg, request) : null;
  const base = canonicalBase(cfg, request, url);
  const parse = /* @__PURE__ */ __name(() => graphqlParams(method, url, body), "parse");
  let fingerprint = null;
  if (base.credentials.length === 0 && (body === null || body.text.length <= MAX_FINGERPRINT_BODY)) {
    fingerprint = `${method}
${body ? `${body.type}
${body.text}` : ""}
${url.pathname}${url.search}
${JSON.stringify(base.keyed)}`;
    const keyUrl2 = requestMemo.get(fingerprint);
    if (keyUrl2) return serveQuery(cfg, ctx, keyUrl2, base, () => resolveOperation(env, ctx, parse()));
  }
  const raw = parse();
  if (Array.isArray(raw)) {
    if (method === "GET") throw new ClientError(400, "Batched requests must use POST", "BAD_REQUEST");
    return serveBatch(cfg, env, ctx, base, raw);
  }
  const op = await resolveOperation(env, ctx, raw);
  if (method === "GET" && op.type === "mutation") {
    throw new ClientError(405, "Mutations must use POST", "METHOD_NOT_ALLOWED", { allow: "POST" });
  }
  if (op.type === "mutation") return serveMutations(cfg, env, ctx, base, [op], false);
  if (op.type === "subscription") return passThroughRequest(cfg, () => originRequest(cfg, base, [op], false));
  if (base.credentials.length > 0 && cfg.authMode === "bypass" || !op.cacheable) return forwardUncached(cfg, base, op);
  const keyUrl = await cacheKeyUrl(base, op);
  if (fingerprint !== null) requestMemo.set(fingerprint, keyUrl, stringBytes(keyUrl));
  return serveQuery(cfg, ctx, keyUrl, base, () => op);
}
__name(handle, "handle");
async function forwardUncached(cfg, base, op) {
  let answered;
  try {
    answered = await fetchAnswer(cfg, originRequest(cfg, base, [op], false));
  } catch (err) {
    return originUnreachable(err, "BYPASS");
  }
  const { response, text } = answered;
  const { body } = rewriteResponse(text, [op], false);
  return new Response(body, { status: response.status, statusText: response.statusText, headers: clientHeaders(cfg, response.headers, "BYPASS") });
}
__name(forwardUncached, "forwardUncached");

// src/worker.js
var worker_default = {
  async fetch(request, env, ctx) {
    try {
      return await handle(request, env, ctx);
    } catch (err) {
      if (err instanceof ClientError) return errorResponse(request, err.status, err.message, err.code, err.headers);
      log("error", "unhandled", { message: String(err && err.message), stack: err && err.stack });
      return errorResponse(request, 500, "Internal edge error", "INTERNAL_SERVER_ERROR");
    }
  },
  async queue(batch, env) {
    await consumePurgeBatch(batch, env, readConfig(env));
  }
};
export {
  worker_default as default
};
//# sourceMappingURL=worker.js.map
