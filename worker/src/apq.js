// Persisted queries: hash -> text in a KV namespace, so every data center
// knows every document the edge has verified. A pair is learned only from
// text the edge hashed itself and parsed, within a size cap, with an expiry.
import { canonicalOperation, normalizeParams } from "./canonical.js";
import { LIMITS } from "./config.js";
import { ClientError, log } from "./http/errors.js";
import { apqMemo, stringBytes } from "./memo.js";
import { sha256Hex, utf8Length } from "./json.js";

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
  apqMemo.set(hash, text, stringBytes(text));
  return text;
}

// One operation, classified and normalized: its text from the request or the
// persisted-query registry. A hash is learned only once its text has parsed.
export async function resolveOperation(env, ctx, raw) {
  const params = normalizeParams(raw);
  if (params.query === null) {
    if (!params.apqHash) throw new ClientError(400, "Must provide query string.", "BAD_REQUEST");
    const text = await lookupApq(env, params.apqHash);
    // The edge is the registry: an unknown hash never reaches the origin
    // unclassified. APQ clients answer this by sending the text once.
    if (text === null) throw new ClientError(200, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND");
    return canonicalOperation(params, text);
  }
  if (params.apqHash) await checkApqHash(params.query, params.apqHash);
  const op = canonicalOperation(params, params.query);
  if (params.apqHash) learnApq(env, ctx, params.apqHash, params.query);
  return op;
}

async function checkApqHash(text, hash) {
  if ((await sha256Hex(text)) !== hash) throw new ClientError(400, "provided sha does not match query", "BAD_REQUEST");
}

// Call only once the text has parsed and named an operation.
function learnApq(env, ctx, hash, text) {
  const cap = LIMITS.apqMaxBytes;
  if (apqMemo.has(hash) || text.length > cap || (text.length * 3 > cap && utf8Length(text) > cap)) return;
  apqMemo.set(hash, text, stringBytes(text));
  const kv = env.PERSISTED_QUERIES;
  if (!kv) return;
  ctx.waitUntil(
    (async () => {
      try {
        if ((await kv.get(hash)) === null) await kv.put(hash, text, { expirationTtl: LIMITS.apqTtlSeconds });
      } catch (err) {
        log("warn", "apq_store_failed", { message: String(err && err.message) });
      }
    })(),
  );
}
