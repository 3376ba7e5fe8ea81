// Shared by the tests and the benchmark: loopback fakes for the origin and the
// Cloudflare API, and a Miniflare instance configured from worker.config.json.
// Lives outside test/ because `node --test test/` would run it as a test file.
import http from "node:http";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

export const WORKER_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
const BASE_URL = "https://api.example.test";
export const config = JSON.parse(readFileSync(join(WORKER_DIR, "worker.config.json"), "utf8"));

async function listen(handler) {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 1000;
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  let closed = false;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    async close() {
      if (closed) return;
      closed = true;
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

// Parses the GraphQL request the way a server would, for the canned handlers.
function graphqlParams(method, url, body) {
  if (method === "GET") {
    const sp = new URL(url, "http://origin").searchParams;
    const parse = (v) => (v ? JSON.parse(v) : null);
    return {
      query: sp.get("query"),
      operationName: sp.get("operationName"),
      variables: parse(sp.get("variables")),
      extensions: parse(sp.get("extensions")),
    };
  }
  try {
    return JSON.parse(body);
  } catch {
    return null;
  }
}

/**
 * Fake FraiseQL origin. `handler(req)` returns {status, headers, body} where a
 * non-string body is JSON-encoded; the default answers a User object whose
 * name carries a counter so tests can tell fresh from cached responses.
 */
export async function startFakeOrigin() {
  const requests = [];
  const state = {
    handler: null,
    counter: 0,
    delayMs: 0,
  };
  const defaultHandler = (req) => {
    const vars = (req.params && req.params.variables) || {};
    return {
      status: 200,
      headers: { "content-type": "application/json" },
      body: {
        data: { user: { __typename: "User", id: String(vars.id ?? "1"), name: `v${req.seq}` } },
      },
    };
  };
  const srv = await listen(async (req, res) => {
    const body = await readBody(req);
    state.counter += 1;
    const record = {
      seq: state.counter,
      method: req.method,
      url: req.url,
      headers: req.headers,
      body,
      params: graphqlParams(req.method, req.url, body),
    };
    requests.push(record);
    if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
    const out = (state.handler || defaultHandler)(record);
    const payload = typeof out.body === "string" ? out.body : JSON.stringify(out.body);
    res.writeHead(out.status ?? 200, { "content-type": "application/json", ...(out.headers || {}) });
    res.end(payload);
  });
  return {
    url: srv.url,
    requests,
    state,
    setHandler(fn) {
      state.handler = fn;
    },
    reset() {
      requests.length = 0;
      state.handler = null;
      state.delayMs = 0;
    },
    close: srv.close,
  };
}

/** Fake Cloudflare API: records purge_cache calls, can be told to fail. */
export async function startFakeCloudflareApi() {
  const purges = [];
  const state = { failWith: null };
  const srv = await listen(async (req, res) => {
    const body = await readBody(req);
    let json = null;
    try {
      json = JSON.parse(body);
    } catch {
      json = null;
    }
    purges.push({ method: req.method, url: req.url, authorization: req.headers.authorization, body: json });
    if (state.failWith) {
      res.writeHead(state.failWith, { "content-type": "application/json" });
      res.end(JSON.stringify({ success: false, errors: [{ code: 1000, message: "nope" }], messages: [], result: null }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ success: true, errors: [], messages: [], result: { id: "purge-id" } }));
  });
  return { url: srv.url, purges, state, close: srv.close };
}

/**
 * Starts the worker in workerd from worker.config.json; `vars` override the
 * config's plain-text vars, `bindings` supply the per-deployment values.
 */
export async function startWorker({ vars = {}, bindings = {} } = {}) {
  const logs = [];
  const collect = (stream) => {
    let buffered = "";
    stream.on("data", (chunk) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) if (line.trim()) logs.push(line);
    });
  };
  const mf = new Miniflare({
    name: config.name,
    modules: true,
    scriptPath: join(WORKER_DIR, config.main),
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags,
    bindings: { ...config.vars, ...vars, ...bindings },
    cf: false,
    handleRuntimeStdio(stdout, stderr) {
      collect(stdout);
      collect(stderr);
    },
  });
  await mf.ready;
  const caches = await mf.getCaches();
  const entryFor = (keyId) => caches.default.match(`${BASE_URL}/__fraiseql-cache/${keyId}`);
  return {
    mf,
    logs,
    fetch: (path, init) => mf.dispatchFetch(new URL(path, BASE_URL).toString(), init),
    /**
     * The worker stores entries in ctx.waitUntil, after responding. Resolves
     * once the entry behind `res` (its x-fraiseql-cache-key, or a key path such
     * as "apq/<hash>") is in the cache and, if given, `accept(storedBodyText)`.
     */
    async stored(res, accept = () => true, timeoutMs = 5000) {
      const keyId = typeof res === "string" ? res : res.headers.get("x-fraiseql-cache-key");
      if (!keyId) throw new Error("response has no x-fraiseql-cache-key");
      const ok = await waitFor(
        async () => {
          const entry = await entryFor(keyId);
          return entry ? accept(await entry.text()) : false;
        },
        { timeoutMs },
      );
      if (!ok) throw new Error(`entry ${keyId} not stored within ${timeoutMs} ms`);
    },
    dispose: () => mf.dispose(),
  };
}

/** Polls `predicate` until it is truthy or `timeoutMs` passes. */
export async function waitFor(predicate, { timeoutMs = 3000, intervalMs = 20 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function gqlPost(query, { variables, operationName, extensions, headers = {} } = {}) {
  return {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ query, variables, operationName, extensions }),
  };
}

export function gqlGetPath(params, path = "/graphql") {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    sp.set(k, typeof v === "string" ? v : JSON.stringify(v));
  }
  return `${path}?${sp}`;
}
