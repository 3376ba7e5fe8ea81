// Talking to the origin: the canonical request it is sent, the deadline and
// size cap on its answer, and the requests the worker passes through.
import { CACHE_STATUS_HEADER, originUnreachable } from "./errors.js";
import { readLimited } from "./request.js";

const CORS_PREFLIGHT_HEADERS = ["access-control-request-method", "access-control-request-headers"];
const WEBSOCKET_HEADERS = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"];
// The body is decoded (and maybe rewritten): headers describing the wire form go.
const RESPONSE_WIRE_HEADERS = ["content-encoding", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "trailer"];

class OriginFailure extends Error {
  constructor(reason, message) {
    super(message);
    this.reason = reason;
  }
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
export function originRequest(cfg, base, ops, batched) {
  const body = batched ? `[${ops.map(operationBody).join(",")}]` : operationBody(ops[0]);
  const headers = originHeaders(cfg, base, [["content-type", "application/json"]]);
  return new Request(originTarget(cfg, base), { method: "POST", headers, body, redirect: "manual" });
}

// The origin's whole answer, read as text within MAX_RESPONSE_BYTES and,
// with `wholeDeadline`, within ORIGIN_TIMEOUT_MS from the request to the last
// byte (otherwise the deadline covers the headers only). Throws OriginFailure.
export async function fetchAnswer(cfg, originReq, { wholeDeadline = true } = {}) {
  const controller = new AbortController();
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const failure = new OriginFailure("timeout", `origin answer not complete within ${cfg.originTimeoutMs} ms`);
      controller.abort(failure);
      reject(failure);
    }, cfg.originTimeoutMs);
  });
  expired.catch(() => {});
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

async function readCapped(cfg, response) {
  const declared = response.headers.get("content-length");
  const encoded = response.headers.has("content-encoding");
  if (declared !== null && Number(declared) > cfg.maxResponseBytes && !encoded) {
    await response.body?.cancel();
    throw tooLarge(cfg);
  }
  // A declared, unencoded length bounds the body already.
  const text = declared !== null && !encoded ? await response.text() : await readLimited(response.body, cfg.maxResponseBytes);
  if (text === null) throw tooLarge(cfg);
  return text;
}

function tooLarge(cfg) {
  return new OriginFailure("too_large", `origin answer exceeds MAX_RESPONSE_BYTES (${cfg.maxResponseBytes})`);
}

// Streams (pass-through, subscriptions over SSE) get a deadline on their
// headers only, so they are not cut off later.
async function fetchHeaders(cfg, originReq) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error("origin timeout")), cfg.originTimeoutMs);
  try {
    return await fetch(originReq, { signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

export function passThrough(cfg, request, base, extraHeaderNames = []) {
  const extra = [];
  for (const name of extraHeaderNames) {
    const v = request.headers.get(name);
    if (v !== null) extra.push([name, v]);
  }
  const make = () =>
    new Request(originTarget(cfg, base), { method: request.method, headers: originHeaders(cfg, base, extra), redirect: "manual" });
  return passThroughRequest(cfg, make);
}

export const preflight = (cfg, request, base) => passThrough(cfg, request, base, CORS_PREFLIGHT_HEADERS);

export async function passThroughRequest(cfg, makeRequest) {
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

export async function forwardWebSocket(cfg, request, base) {
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

export function clientHeaders(cfg, originHeadersIn, status) {
  const headers = new Headers(originHeadersIn);
  for (const name of RESPONSE_WIRE_HEADERS) headers.delete(name);
  headers.delete("cache-tag");
  headers.delete(cfg.originAuthHeader);
  if (status) headers.set(CACHE_STATUS_HEADER, status);
  return headers;
}

