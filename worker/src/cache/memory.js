// Answers kept in isolate memory, so a hit usually skips the Cache API. A
// copy is trusted for at most LIMITS.responseMemoryTrustMs before the Cache
// API is asked again (a purge from elsewhere reaches it that much later); the
// local invalidation record is checked on every hit, like for the Cache API.
import { LIMITS } from "../config.js";
import { BudgetMap, stringBytes } from "../memo.js";
import { servedHeaders } from "./entry.js";

const memory = new BudgetMap(LIMITS.responseMemoryBytes);

// `entry`: {status, headers (stored), body, fetchedAt, ttl, swr, sie, tagHeader}.
export function remember(keyUrl, entry, now = Date.now()) {
  const served = [...servedHeaders(entry.headers)];
  let bytes = stringBytes(entry.body);
  for (const [k, v] of served) bytes += stringBytes(k) + stringBytes(v);
  memory.set(keyUrl, { ...entry, served, checkedAt: now }, bytes);
}

// A copy still inside its trust window, or undefined.
export function recall(keyUrl, now = Date.now()) {
  const copy = memory.get(keyUrl);
  if (copy === undefined) return undefined;
  if (now - copy.checkedAt >= LIMITS.responseMemoryTrustMs) return undefined;
  return copy;
}

// The Cache API still holds the entry this copy came from.
export function confirm(keyUrl, fetchedAt, now = Date.now()) {
  const copy = memory.peek(keyUrl);
  if (copy === undefined || copy.fetchedAt !== fetchedAt) return undefined;
  copy.checkedAt = now;
  return copy;
}

export function forget(keyUrl) {
  memory.delete(keyUrl);
}
