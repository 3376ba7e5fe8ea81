// Calls to Cloudflare's purge-by-tag API: chunked, paced at the plan's
// sustained rate, and bisected when the API refuses a call, so one tag it
// will not take does not take the others of its call down with it.
import { LIMITS } from "../config.js";
import { log, sleep } from "../http/errors.js";

let lastCallAt = -Infinity;

// Purges `tags`. Returns the tags still to purge (to retry) and the
// Retry-After the API asked for, if any. Refused single tags are dropped and
// logged: retrying a malformed request cannot help.
export async function purgeTags(cfg, tags) {
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

// Calls are spaced by the plan's sustained interval.
async function paced(cfg, call) {
  const wait = lastCallAt + cfg.purgeIntervalMs - Date.now();
  if (wait > 0) await sleep(wait);
  try {
    return await call();
  } finally {
    lastCallAt = Date.now();
  }
}

// With one consumer invocation at a time, an invocation that ends no sooner
// than one interval after its last call keeps the rate across invocations,
// whichever isolate runs the next one.
export async function restAfterLastCall(cfg) {
  const wait = lastCallAt + cfg.purgeIntervalMs - Date.now();
  if (wait > 0) await sleep(wait);
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
    return { ok: false, retryAfter: Number.isFinite(after) && after > 0 ? Math.min(after, LIMITS.purgeRetryMaxSeconds) : 1 };
  }
  return { ok: false, refused: res.status === 400 };
}
