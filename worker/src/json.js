// JSON with exact numbers, canonical JSON, and SHA-256.
import { LIMITS } from "./config.js";
import { ClientError } from "./http/errors.js";

// A JSON number kept as its source text, so 9007199254740993 survives.
export class RawNumber {
  constructor(raw) {
    this.raw = raw;
  }
  toJSON() {
    // workerd has JSON.rawJSON; Node 20 (the unit tests) does not.
    return typeof JSON.rawJSON === "function" ? JSON.rawJSON(this.raw) : Number(this.raw);
  }
}

export function parseJsonExact(text) {
  return JSON.parse(text, (_key, value, context) =>
    typeof value === "number" ? new RawNumber(context && context.source !== undefined ? context.source : String(value)) : value,
  );
}

export function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof RawNumber);
}

// Sorted keys, no whitespace, numbers as the client wrote them. `stats.max`
// records the deepest nesting seen.
export function canonicalJson(value, depth, stats) {
  if (depth > LIMITS.maxJsonNesting) throw new ClientError(400, "JSON nested too deeply", "BAD_REQUEST");
  if (depth > stats.max) stats.max = depth;
  if (value instanceof RawNumber) return value.raw;
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v, depth + 1, stats)).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k], depth + 1, stats)}`).join(",")}}`;
}

const encoder = new TextEncoder();

export async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  let hex = "";
  for (const byte of new Uint8Array(digest)) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

export function utf8Length(text) {
  return encoder.encode(text).byteLength;
}
