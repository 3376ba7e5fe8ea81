// Errors the worker answers itself, in GraphQL shape, and its log lines.

export const CACHE_STATUS_HEADER = "x-fraiseql-cache";
const GRAPHQL_RESPONSE_TYPE = "application/graphql-response+json";

export class ClientError extends Error {
  constructor(status, message, code, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

export class GraphQLSyntaxError extends ClientError {
  constructor(message) {
    super(400, `Syntax Error: ${message}`, "GRAPHQL_PARSE_FAILED");
  }
}

export function errorBody(message, code) {
  return JSON.stringify({ errors: [{ message, extensions: { code } }] });
}

// GraphQL over HTTP: errors in the media type the client accepts.
export function errorResponse(request, status, message, code, extraHeaders = {}) {
  const accept = request ? (request.headers.get("accept") || "").toLowerCase() : "";
  const type = accept.includes(GRAPHQL_RESPONSE_TYPE) ? GRAPHQL_RESPONSE_TYPE : "application/json";
  return new Response(errorBody(message, code), {
    status,
    headers: {
      "content-type": `${type}; charset=utf-8`,
      "cache-control": "no-store",
      [CACHE_STATUS_HEADER]: "BYPASS",
      ...extraHeaders,
    },
  });
}

const FAILURE_MESSAGES = { timeout: "Origin timed out", too_large: "Origin answer too large" };

export function originUnreachable(err, status) {
  log("error", "origin_unreachable", { reason: err?.reason ?? "network", message: String(err && err.message) });
  const message = FAILURE_MESSAGES[err?.reason] ?? "Origin unreachable";
  return errorResponse(null, 502, message, "BAD_GATEWAY", { [CACHE_STATUS_HEADER]: status });
}

export function log(level, event, fields) {
  const line = JSON.stringify({ level, event, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
