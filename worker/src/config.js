// The worker's configuration: the vars wrangler.jsonc declares (with the
// fallbacks below when a value is missing or invalid) and the fixed limits.

// Every var of wrangler.jsonc except the per-deployment ones (ORIGIN_URL,
// ZONE_ID); test/config.test.mjs keeps the two equal.
export const DEFAULTS = {
  CACHE_TTL_SECONDS: 60,
  STALE_WHILE_REVALIDATE_SECONDS: 30,
  STALE_IF_ERROR_SECONDS: 300,
  MAX_BODY_BYTES: 1048576,
  MAX_RESPONSE_BYTES: 8388608,
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
  IGNORED_COOKIES: "_ga,_ga_*,_gid,_gat,_gat_*,_gcl_au,_fbp,_fbc,_hjSessionUser_*,_hjSession_*,_clck,_clsk,_uetsid,_uetvid,__cf_bm,cf_clearance,__cfruid,_cfuvid,__cfwaitingroom",
  STRIPPED_QUERY_PARAMS: "utm_*,fbclid,gclid",
  ORIGIN_AUTH_HEADER: "x-fraiseql-origin-auth",
  LOCAL_INVALIDATION_SECONDS: 300,
  LOCAL_INVALIDATION_REFRESH_MS: 250,
  PURGE_REPEAT_AFTER_SECONDS: 12,
};

// Cloudflare's purge limits for tag purges (per account, token bucket). The
// consumer paces calls at the sustained rate and never spends the burst.
const PURGE_PLANS = {
  free: { perSecond: 5 / 60 },
  pro: { perSecond: 5 },
  business: { perSecond: 10 },
  enterprise: { perSecond: 50 },
};

export const LIMITS = {
  // Cloudflare: the Cache-Tag header may not exceed 16 KB, a purged tag 1,024 characters.
  cacheTagMaxBytes: 16 * 1024,
  tagMaxChars: 1024,
  // Variables nested deeper than this are forwarded but not cached; deeper
  // than maxJsonNesting they are refused (the canonical printer recurses).
  maxCacheableJsonDepth: 64,
  maxJsonNesting: 1000,
  maxSelectionDepth: 200,
  maxBatchItems: 50,
  // Parsed documents, request fingerprints and persisted queries share one
  // byte budget; answers kept in isolate memory have their own. 128 MB a isolate.
  memoBudgetBytes: 8 * 1024 * 1024,
  responseMemoryBytes: 16 * 1024 * 1024,
  // An answer in isolate memory is served without asking the Cache API for at
  // most this long: a purge from elsewhere is seen this much later here.
  responseMemoryTrustMs: 1000,
  // Persisted-query registry: largest text learned, and how long KV keeps it.
  apqMaxBytes: 64 * 1024,
  apqTtlSeconds: 30 * 24 * 3600,
  maxLocalTombstones: 5000,
  mutationRetryAfterSeconds: 60,
  purgeRetryMaxSeconds: 300,
};

const configMemo = new WeakMap();

export function readConfig(env) {
  const memo = configMemo.get(env);
  if (memo) return memo;
  const num = (name, min) => {
    const raw = env[name];
    const value = typeof raw === "number" ? raw : Number.parseFloat(raw);
    return Number.isFinite(value) && value >= min ? value : DEFAULTS[name];
  };
  const list = (name, lower = true) =>
    String(env[name] ?? DEFAULTS[name])
      .split(",")
      .map((s) => (lower ? s.trim().toLowerCase() : s.trim()))
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
  const planName = String(env.PURGE_PLAN || "").toLowerCase();
  const plan = Object.hasOwn(PURGE_PLANS, planName) ? planName : DEFAULTS.PURGE_PLAN;
  const originTimeoutMs = num("ORIGIN_TIMEOUT_MS", 1);
  const localInvalidationSeconds = num("LOCAL_INVALIDATION_SECONDS", 1);
  // The second purge of a mutation's tags comes after the slowest fill that
  // can still be stored (one that started before the mutation committed):
  // never sooner than ORIGIN_TIMEOUT_MS plus a second.
  const purgeRepeatAfterSeconds = Math.max(num("PURGE_REPEAT_AFTER_SECONDS", 0), Math.ceil(originTimeoutMs / 1000) + 1);
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
    purgeIntervalMs: 1000 / PURGE_PLANS[plan].perSecond,
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
    purgeMootAfterMs: (localInvalidationSeconds + purgeRepeatAfterSeconds) * 1000,
    originUrl,
    zoneId: env.ZONE_ID || "",
    purgeToken: env.PURGE_API_TOKEN || "",
  };
  configMemo.set(env, cfg);
  return cfg;
}

// "name" matches itself, "prefix*" every name that starts with prefix.
function namePatterns(patterns) {
  const exact = new Set();
  const prefixes = [];
  for (const p of patterns) {
    if (p.endsWith("*")) prefixes.push(p.slice(0, -1));
    else exact.add(p);
  }
  return { exact, prefixes, matches: (name) => exact.has(name) || prefixes.some((p) => name.startsWith(p)) };
}
