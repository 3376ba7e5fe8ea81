// Mutations (and batches that hold one): rate limit, forward, invalidate here
// before answering, then queue the global purge.
import { rewriteResponse } from "./cache/entry.js";
import { log, originUnreachable } from "./http/errors.js";
import { clientHeaders, fetchAnswer, originRequest } from "./http/origin.js";
import { invalidateLocally } from "./invalidation.js";
import { isPlainObject } from "./json.js";
import { limitMutations } from "./limits.js";
import { enqueuePurge } from "./purge/queue.js";
import { collectTags, noidTag, typeTag } from "./tags.js";

export async function serveMutations(cfg, env, ctx, base, ops, batched) {
  await limitMutations(env, base, ops.filter((o) => o.type === "mutation").length);
  let answered;
  try {
    // The deadline covers the headers only: the mutation may have committed,
    // and its answer is what names the entries to purge.
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

// Only the mutations' own results are tagged, through the document's real
// field names (aliases cannot forge an `id` or a `__typename`): Type:id and
// gql-noid:Type for what they return with an id, gql-type:Type for what they
// return without one. Past the cap, everything collapses into type tags:
// coarser, never missing.
export function mutationTags(cfg, ops, results) {
  const entities = new Set();
  const types = new Set();
  const withoutId = new Set();
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
