// Reading a client's request: the POST body (media type, size cap) and the
// GraphQL parameters of a GET or a POST.
import { ClientError } from "./errors.js";
import { parseJsonExact } from "../json.js";

const JSON_MEDIA_TYPES = new Set(["application/json", "application/graphql+json"]);
const GRAPHQL_MEDIA_TYPE = "application/graphql";
const decoder = new TextDecoder();
const ACCEPTED_POST_TYPES = "application/json, application/graphql+json, application/graphql";

function mediaTypeOf(value) {
  if (!value) return null;
  const [type, ...params] = value.split(";");
  let charset = null;
  for (const p of params) {
    const eq = p.indexOf("=");
    if (eq > 0 && p.slice(0, eq).trim().toLowerCase() === "charset") {
      charset = p
        .slice(eq + 1)
        .trim()
        .replace(/^"|"$/g, "")
        .toLowerCase();
    }
  }
  return { type: type.trim().toLowerCase(), charset };
}

// Only the media types GraphQL over HTTP names are read; text/plain, form
// encodings and anything else a browser may send cross-site without a CORS
// preflight are refused before the body is touched.
export async function readPostBody(cfg, request) {
  const media = mediaTypeOf(request.headers.get("content-type"));
  const known = media && (JSON_MEDIA_TYPES.has(media.type) || media.type === GRAPHQL_MEDIA_TYPE);
  if (!known || (media.charset !== null && media.charset !== "utf-8")) {
    throw new ClientError(415, "Unsupported Media Type: send application/json", "UNSUPPORTED_MEDIA_TYPE", {
      "accept-post": ACCEPTED_POST_TYPES,
    });
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > cfg.maxBodyBytes) throw tooLarge(cfg);
  // A declared length bounds the body already; only chunked bodies are counted.
  const text = declared !== null ? await request.text() : await readLimited(request.body, cfg.maxBodyBytes);
  if (text === null) throw tooLarge(cfg);
  return { type: media.type, text };
}

function tooLarge(cfg) {
  return new ClientError(413, `Request body exceeds ${cfg.maxBodyBytes} bytes`, "PAYLOAD_TOO_LARGE");
}

// The body as text, or null past `limit` bytes (the rest is not read).
export async function readLimited(body, limit) {
  if (!body) return "";
  const reader = body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return decoder.decode(chunks[0]);
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return decoder.decode(bytes);
}

function parseJsonParam(raw, name) {
  if (raw === null || raw === "") return null;
  try {
    return parseJsonExact(raw);
  } catch {
    throw new ClientError(400, `The "${name}" parameter is not valid JSON`, "BAD_REQUEST");
  }
}

// The GraphQL parameters: an object, or an array for a batch.
export function graphqlParams(method, url, body) {
  const sp = url.searchParams;
  const fromUrl = (query) => ({
    query,
    operationName: sp.get("operationName"),
    variables: parseJsonParam(sp.get("variables"), "variables"),
    extensions: parseJsonParam(sp.get("extensions"), "extensions"),
  });
  if (method === "GET") return fromUrl(sp.get("query"));
  if (body.type === GRAPHQL_MEDIA_TYPE) return fromUrl(body.text);
  try {
    return parseJsonExact(body.text);
  } catch {
    throw new ClientError(400, "Request body is not valid JSON", "BAD_REQUEST");
  }
}
