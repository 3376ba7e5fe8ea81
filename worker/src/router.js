// A client's request, routed: pass-through, preflight, WebSocket, or GraphQL
// (a query through the cache, a mutation to the origin, or a batch).
import { resolveOperation } from "./apq.js";
import { serveBatch } from "./batch.js";
import { cacheKeyUrl, canonicalBase, GRAPHQL_PARAMS } from "./canonical.js";
import { readConfig } from "./config.js";
import { serveQuery } from "./cache/serve.js";
import { rewriteResponse } from "./cache/entry.js";
import { ClientError, errorResponse, log, originUnreachable } from "./http/errors.js";
import { clientHeaders, fetchAnswer, forwardWebSocket, originRequest, passThrough, passThroughRequest, preflight } from "./http/origin.js";
import { graphqlParams, readPostBody } from "./http/request.js";
import { requestMemo, stringBytes } from "./memo.js";
import { serveMutations } from "./mutations.js";

// Anonymous request bodies up to this size are remembered with their key.
const MAX_FINGERPRINT_BODY = 16384;

export async function handle(request, env, ctx) {
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
  // graphql-ws subscriptions: the handshake goes through with the same header
  // policy as everything else; any other Upgrade is simply dropped.
  if (upgrade === "websocket" && method === "GET" && !hasGraphQLParams) return forwardWebSocket(cfg, request, canonicalBase(cfg, request, url));
  if (method === "OPTIONS") return preflight(cfg, request, canonicalBase(cfg, request, url));
  if (method === "GET" && !hasGraphQLParams) return passThrough(cfg, request, canonicalBase(cfg, request, url));

  const body = method === "POST" ? await readPostBody(cfg, request) : null;
  const base = canonicalBase(cfg, request, url);
  const parse = () => graphqlParams(method, url, body);

  // A repeat of an anonymous request already classified as a cacheable query
  // skips parsing and hashing: the key is a function of exactly these inputs.
  let fingerprint = null;
  if (base.credentials.length === 0 && (body === null || body.text.length <= MAX_FINGERPRINT_BODY)) {
    fingerprint = `${method}\n${body ? `${body.type}\n${body.text}` : ""}\n${url.pathname}${url.search}\n${JSON.stringify(base.keyed)}`;
    const keyUrl = requestMemo.get(fingerprint);
    if (keyUrl) return serveQuery(cfg, ctx, keyUrl, base, () => resolveOperation(env, ctx, parse()));
  }

  const raw = parse();
  if (Array.isArray(raw)) {
    if (method === "GET") throw new ClientError(400, "Batched requests must use POST", "BAD_REQUEST");
    return serveBatch(cfg, env, ctx, base, raw);
  }
  const op = await resolveOperation(env, ctx, raw);
  if (method === "GET" && op.type === "mutation") {
    // GraphQL over HTTP: GET is for queries only (a link with the victim's
    // cookies must never write).
    throw new ClientError(405, "Mutations must use POST", "METHOD_NOT_ALLOWED", { allow: "POST" });
  }
  if (op.type === "mutation") return serveMutations(cfg, env, ctx, base, [op], false);
  if (op.type === "subscription") return passThroughRequest(cfg, () => originRequest(cfg, base, [op], false));
  if ((base.credentials.length > 0 && cfg.authMode === "bypass") || !op.cacheable) return forwardUncached(cfg, base, op);
  const keyUrl = await cacheKeyUrl(base, op);
  if (fingerprint !== null) requestMemo.set(fingerprint, keyUrl, stringBytes(keyUrl));
  return serveQuery(cfg, ctx, keyUrl, base, () => op);
}

// Not cacheable but parsed: forwarded in canonical form, the injected
// __typename stripped from the answer.
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
