// The canonical request: everything the origin is sent and everything the
// cache key is made of come from here, so the two cannot disagree.
import { LIMITS } from "./config.js";
import { splitCookies } from "./cookies.js";
import { analyzeDocument } from "./graphql/document.js";
import { selectOperation } from "./graphql/parser.js";
import { ClientError } from "./http/errors.js";
import { canonicalJson, isPlainObject, sha256Hex } from "./json.js";

export const GRAPHQL_PARAMS = ["query", "operationName", "variables", "extensions"];
export const KEY_PREFIX = "/__fraiseql-cache/";
const KEY_VERSION = "v3";

// What is the same for every operation of one HTTP request: path, the query
// parameters the origin may read, and the header sets.
export function canonicalBase(cfg, request, url) {
  const params = [];
  for (const [k, v] of url.searchParams) {
    if (GRAPHQL_PARAMS.includes(k) || cfg.strippedParams.matches(k.toLowerCase())) continue;
    params.push([k, v]);
  }
  params.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const h = request.headers;
  const keyed = [];
  for (const name of cfg.keyedHeaders) {
    const v = h.get(name);
    if (v !== null) keyed.push([name, v]);
  }
  const credentials = [];
  let routingCookies = [];
  const cookieHeader = h.get("cookie");
  if (cookieHeader) {
    const split = splitCookies(cfg, cookieHeader);
    routingCookies = split.routing;
    if (cfg.credentialHeaders.includes("cookie") && split.credentials.length > 0) {
      credentials.push(["cookie", split.credentials.join("; ")]);
    }
  }
  for (const name of cfg.credentialHeaders) {
    if (name === "cookie") continue;
    const v = h.get(name);
    if (v) credentials.push([name, v]);
  }
  const unkeyed = [];
  for (const name of cfg.forwardedHeaders) {
    const v = h.get(name);
    if (v !== null) unkeyed.push([name, v]);
  }
  const address = h.get("cf-connecting-ip") || "unknown";
  return { url, host: url.host, path: url.pathname, params, keyed, credentials, unkeyed, routingCookies, address };
}

// A GraphQL request's parameters, checked. `raw` is a parsed JSON body (or
// the GET parameters).
export function normalizeParams(raw) {
  if (!isPlainObject(raw)) throw new ClientError(400, "Request body must be a JSON object", "BAD_REQUEST");
  const { query = null, operationName = null, variables = null, extensions = null } = raw;
  if (query !== null && typeof query !== "string") throw new ClientError(400, `"query" must be a string`, "BAD_REQUEST");
  if (operationName !== null && typeof operationName !== "string") {
    throw new ClientError(400, `"operationName" must be a string`, "BAD_REQUEST");
  }
  if (variables !== null && !isPlainObject(variables)) throw new ClientError(400, `"variables" must be an object`, "BAD_REQUEST");
  if (extensions !== null && !isPlainObject(extensions)) throw new ClientError(400, `"extensions" must be an object`, "BAD_REQUEST");
  let apqHash = null;
  let otherExtensions = null;
  if (extensions) {
    const { persistedQuery, ...rest } = extensions;
    if (persistedQuery !== undefined) {
      const pq = persistedQuery;
      if (!isPlainObject(pq) || typeof pq.sha256Hash !== "string" || !/^[0-9a-fA-F]{64}$/.test(pq.sha256Hash)) {
        throw new ClientError(400, "Invalid persistedQuery extension", "BAD_REQUEST");
      }
      apqHash = pq.sha256Hash.toLowerCase();
    }
    if (Object.keys(rest).length > 0) otherExtensions = rest;
  }
  return {
    query: query === "" ? null : query,
    operationName: operationName === "" ? null : operationName,
    variables,
    extensions: otherExtensions,
    apqHash,
  };
}

// One operation, classified and in canonical form, from its document text.
export function canonicalOperation(params, queryText) {
  const doc = analyzeDocument(queryText);
  const op = selectOperation(doc, params.operationName);
  const depth = { max: 0 };
  const variables = params.variables === null || Object.keys(params.variables).length === 0 ? null : canonicalJson(params.variables, 0, depth);
  const extensions = params.extensions === null ? null : canonicalJson(params.extensions, 0, depth);
  // Subscription roots take no __typename, so a document with one is sent as written.
  const injected = !doc.hasSubscription;
  return {
    type: op.type,
    name: op.name,
    selections: op.selections,
    fragments: doc.fragments,
    query: doc.normalized,
    forwardQuery: injected ? doc.injected : doc.normalized,
    injected,
    variables,
    extensions,
    cacheable: depth.max <= LIMITS.maxCacheableJsonDepth,
  };
}

export async function cacheKeyUrl(base, op) {
  const scope = await credentialScope(base);
  const material = JSON.stringify([KEY_VERSION, base.path, base.params, op.query, op.name, op.variables, op.extensions, base.keyed, scope]);
  // Same hostname as the Worker, as Cloudflare recommends for Cache API keys.
  return `${base.url.origin}${KEY_PREFIX}${await sha256Hex(material)}`;
}

export async function credentialScope(base) {
  if (base.credentials.length === 0) return "";
  if (base.scope === undefined) base.scope = await sha256Hex(JSON.stringify(base.credentials));
  return base.scope;
}
