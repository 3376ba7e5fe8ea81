// Isolate memory that no client can grow without bound: maps with a byte
// budget that forget their least recently used entries. Sizes are estimates,
// on the generous side (a string is counted at two bytes a character).
import { LIMITS } from "./config.js";

const ENTRY_OVERHEAD = 96;

export class BudgetMap {
  constructor(maxBytes) {
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.entries = new Map();
  }

  get(key) {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    // Most recently used last: Map keeps insertion order.
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
    if (entry === undefined) return;
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
}

export function stringBytes(s) {
  return typeof s === "string" ? 2 * s.length : 0;
}

// The memos of this isolate. Nothing here is authoritative: the Cache API,
// KV and the purge queue are; these only save work.
const share = LIMITS.memoBudgetBytes / 4;
export const documentMemo = new BudgetMap(2 * share);
export const requestMemo = new BudgetMap(share);
export const apqMemo = new BudgetMap(share);
