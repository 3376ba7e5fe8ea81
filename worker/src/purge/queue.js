// The global purge, through the PURGE_QUEUE queue. Each mutation's tags are
// sent twice: at once, and again after PURGE_REPEAT_AFTER_SECONDS, later than
// any fill that started before the mutation can be stored (a fill is stored
// only within ORIGIN_TIMEOUT_MS of its start), so a fill that raced the first
// purge is caught by the second. The consumer (max_concurrency 1) merges the
// tags of a batch, purges them (purge/api.js) and retries with backoff.
// Messages whose retries run out go to the dead letter queue, whose consumer
// (this worker) sends them back; a purge older than every entry it could
// reach (lifetimes are capped at LOCAL_INVALIDATION_SECONDS) is moot and dropped.
import { LIMITS } from "../config.js";
import { log, sleep } from "../http/errors.js";
import { purgeTags, restAfterLastCall } from "./api.js";

function isDeadLetterQueue(name) {
  return /-dlq(-|$)/.test(name);
}

export async function enqueuePurge(env, cfg, tags, at) {
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

function tagsOf(message) {
  const tags = message.body && Array.isArray(message.body.tags) ? message.body.tags : [];
  return tags.filter((t) => typeof t === "string" && t.length > 0 && t.length <= LIMITS.tagMaxChars);
}

// Acks (and reports) the messages that no longer matter; returns the others.
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

export async function consumePurgeBatch(batch, env, cfg) {
  if (isDeadLetterQueue(batch.queue)) return resend(batch, env, cfg);
  if (!cfg.zoneId || !cfg.purgeToken) {
    log("warn", "purge_not_configured", { messages: batch.messages.length });
    for (const m of batch.messages) m.ack();
    return;
  }
  const messages = dropMoot(cfg, batch.messages);
  const owners = new Map();
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

// Dead letters go back to the purge queue (one purger keeps the pacing) until
// they are moot.
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
