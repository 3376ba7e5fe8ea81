// Shared by the tests and the benchmark: loopback fakes for the origin and the
// Cloudflare API, and Miniflare started from wrangler's own reading of
// wrangler.jsonc (the file `wrangler dev` and the Pulumi component use).
// Lives outside test/ because `node --test test/` would run it as a test file.
import http from "node:http";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { Miniflare } from "miniflare";
import WebSocket from "ws";
import { buildSchema, graphql } from "graphql";

// wrangler warns about its experimental `secrets` field on every read.
process.env.WRANGLER_LOG ??= "error";
const { unstable_readConfig, unstable_getMiniflareWorkerOptions } = await import("wrangler");

export const WORKER_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
export const CONFIG_PATH = join(WORKER_DIR, "wrangler.jsonc");
export const BASE_URL = "https://api.example.test";
export const config = unstable_readConfig({ config: CONFIG_PATH });
export const INJECTED_TYPENAME = "_fraiseqlEdgeTypename";
// What the suites run: the bundle `npm run build` makes of src/, which is the
// file the Pulumi Edge component uploads (test/config.test.mjs keeps it fresh).
export const BUNDLE_PATH = join(WORKER_DIR, "dist", "worker.js");

async function listen(handler, onUpgrade) {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 1000;
  if (onUpgrade) server.on("upgrade", onUpgrade);
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

function parseBody(body) {
  try {
    return JSON.parse(body);
  } catch {
    return null;
  }
}

// A small real GraphQL server (graphql-js), so documents the worker rewrites
// are parsed, validated and executed the way FraiseQL would.
export const SCHEMA = buildSchema(`
  interface Node { id: ID! }
  type User implements Node { id: ID! name: String bio: String posts: [Post!]! }
  type Post implements Node { id: ID! title: String author: User authorId: ID! }
  type CreatePostPayload { ok: Boolean post: Post }
  type Query { user(id: ID!): User users(ids: [ID!]!): [User!]! node(id: ID!): Node big(n: String!): String }
  type Mutation {
    updateUser(id: ID!, name: String!): User
    createPost(title: String!): CreatePostPayload
    bulk(n: Int!): [User!]!
    ping: Boolean
  }
`);

function schemaRoot(seq) {
  const user = (id) => ({
    __typename: "User",
    id,
    name: `v${seq}`,
    bio: `bio-of-${id}`,
    posts: () => [{ id: `${id}-p1`, title: "t", authorId: id, author: () => user(id) }],
  });
  return {
    user: ({ id }) => user(id),
    users: ({ ids }) => ids.map(user),
    node: ({ id }) => user(id),
    big: ({ n }) => n,
    updateUser: ({ id, name }) => ({ ...user(id), name }),
    createPost: ({ title }) => ({ ok: true, post: { id: "p-new", title, author: () => user("u1") } }),
    bulk: ({ n }) => Array.from({ length: n }, (_, i) => user(`b${i}`)),
    ping: () => true,
  };
}

export async function executeAgainstSchema(req) {
  const one = async (p) =>
    graphql({
      schema: SCHEMA,
      source: p.query,
      rootValue: schemaRoot(req.seq),
      variableValues: p.variables,
      operationName: p.operationName,
    });
  const body = Array.isArray(req.params) ? await Promise.all(req.params.map(one)) : await one(req.params || {});
  return { status: 200, body };
}

/**
 * Fake FraiseQL origin. `handler(req)` returns {status, headers, body} where a
 * non-string body is JSON-encoded (it may return a promise), plus optionally
 * `delayMs` (before the headers) and `trickleMs` (the body sent in `pieces`
 * parts, this long apart, after the headers); the default
 * answers a User object whose name carries a counter so tests can tell fresh
 * from cached responses. `useSchema()` switches to the real graphql-js server.
 */
export async function startFakeOrigin() {
  const requests = [];
  const upgrades = [];
  const state = { handler: null, counter: 0, delayMs: 0 };
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
  const srv = await listen(
    async (req, res) => {
      const body = await readBody(req);
      state.counter += 1;
      const record = {
        seq: state.counter,
        method: req.method,
        url: req.url,
        headers: req.headers,
        body,
        params: parseBody(body),
        at: performance.now(),
      };
      requests.push(record);
      if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
      const out = await (state.handler || defaultHandler)(record);
      if (out.delayMs) await new Promise((r) => setTimeout(r, out.delayMs));
      const payload = typeof out.body === "string" ? out.body : JSON.stringify(out.body);
      res.writeHead(out.status ?? 200, { "content-type": "application/json", ...(out.headers || {}) });
      if (out.trickleMs) {
        // Headers at once, then the body a piece at a time: a slow body.
        const pieces = out.pieces ?? 10;
        const size = Math.ceil(payload.length / pieces);
        for (let i = 0; i < payload.length && !res.destroyed; i += size) {
          res.write(payload.slice(i, i + size));
          await new Promise((r) => setTimeout(r, out.trickleMs));
        }
      }
      res.end(out.trickleMs ? undefined : payload);
    },
    (req, socket) => {
      // Enough of a WebSocket handshake for the worker to hand a socket back.
      upgrades.push({ url: req.url, headers: req.headers });
      const accept = createHash("sha1")
        .update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest("base64");
      const protocol = req.headers["sec-websocket-protocol"];
      socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n${protocol ? `Sec-WebSocket-Protocol: ${protocol.split(",")[0].trim()}\r\n` : ""}\r\n`,
      );
      socket.on("error", () => {});
      setTimeout(() => socket.destroy(), 200);
    },
  );
  return {
    url: srv.url,
    requests,
    upgrades,
    state,
    setHandler(fn) {
      state.handler = fn;
    },
    useSchema() {
      state.handler = executeAgainstSchema;
    },
    reset() {
      requests.length = 0;
      upgrades.length = 0;
      state.handler = null;
      state.delayMs = 0;
    },
    close: srv.close,
  };
}

/**
 * Fake Cloudflare API: records purge_cache calls (with their arrival time and
 * the status answered). `state.failWith` fails every call with that status;
 * `state.failTimes` fails only the next N calls; `state.retryAfter` adds a
 * Retry-After header; `state.refuses(tag)` answers 400 to any call carrying
 * such a tag, as Cloudflare refuses a whole call for one bad tag. With
 * `state.only(tag)`, failWith and failTimes apply only to calls carrying such
 * a tag: a test that follows its own mutation's purge is not disturbed by an
 * earlier test's repeated purge (PURGE_REPEAT_AFTER_SECONDS later).
 */
export async function startFakeCloudflareApi() {
  const purges = [];
  const state = { failWith: null, failTimes: 0, retryAfter: null, refuses: null, only: null };
  const srv = await listen(async (req, res) => {
    const body = await readBody(req);
    const record = {
      method: req.method,
      url: req.url,
      authorization: req.headers.authorization,
      body: parseBody(body),
      at: performance.now(),
      status: 200,
    };
    purges.push(record);
    const refused = state.refuses && (record.body?.tags ?? []).some((t) => state.refuses(t)) ? 400 : null;
    const chosen = !state.only || (record.body?.tags ?? []).some((t) => state.only(t));
    const failing = refused ?? (chosen ? (state.failWith ?? (state.failTimes > 0 ? 500 : null)) : null);
    if (!refused && chosen && state.failTimes > 0) state.failTimes -= 1;
    if (failing) record.status = failing;
    if (failing) {
      const headers = { "content-type": "application/json" };
      if (state.retryAfter !== null) headers["retry-after"] = String(state.retryAfter);
      res.writeHead(failing, headers);
      res.end(JSON.stringify({ success: false, errors: [{ code: 1000, message: "nope" }], messages: [], result: null }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ success: true, errors: [], messages: [], result: { id: "purge-id" } }));
  });
  return {
    url: srv.url,
    purges,
    state,
    close: srv.close,
    reset() {
      purges.length = 0;
      state.failWith = null;
      state.failTimes = 0;
      state.retryAfter = null;
      state.refuses = null;
      state.only = null;
    },
  };
}

/**
 * Starts the worker in workerd with the Miniflare options wrangler derives
 * from wrangler.jsonc. `vars` and `bindings` override plain-text bindings
 * (deployment values and secrets go in `bindings`); `kvPersist` shares the
 * persisted-query KV between instances (two data centers); `workerOverrides`
 * replace Miniflare worker options (queue consumer settings, rate limits);
 * `secondIsolate` runs a second copy of the worker sharing the cache (another
 * isolate of the same data center), with `secondIsolate` as its extra vars;
 * `extraWorkers` run in the same workerd (the benchmark's floor); `inspector`
 * opens workerd's inspector so `heapUsed()` can read the isolate's heap.
 */
export async function startWorker({
  vars = {},
  bindings = {},
  kvPersist,
  workerOverrides = {},
  secondIsolate = null,
  extraWorkers = [],
  inspector = false,
} = {}) {
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
  const { workerOptions } = unstable_getMiniflareWorkerOptions(CONFIG_PATH);
  const main = {
    ...workerOptions,
    name: config.name,
    modules: true,
    scriptPath: BUNDLE_PATH,
    bindings: { ...workerOptions.bindings, ...vars, ...bindings },
    routes: [`${new URL(BASE_URL).host}/*`],
    ...workerOverrides,
  };
  const others = [...extraWorkers];
  if (secondIsolate) {
    others.unshift({
      ...main,
      name: `${config.name}-second`,
      routes: [],
      queueConsumers: {},
      bindings: { ...main.bindings, ...secondIsolate },
    });
  }
  const mf = new Miniflare({
    workers: [main, ...others],
    cf: false,
    ...(kvPersist ? { kvPersist } : {}),
    ...(inspector ? { inspectorPort: 0 } : {}),
    handleRuntimeStdio(stdout, stderr) {
      collect(stdout);
      collect(stderr);
    },
  });
  await mf.ready;
  const caches = await mf.getCaches();
  const kv = await mf.getKVNamespace("PERSISTED_QUERIES", config.name);
  const entryFor = (keyId) => caches.default.match(`${BASE_URL}/__fraiseql-cache/${keyId}`);
  const second = secondIsolate ? await mf.getWorker(`${config.name}-second`) : null;
  let heap = null;
  return {
    mf,
    logs,
    kv,
    fetch: (path, init) => mf.dispatchFetch(new URL(path, BASE_URL).toString(), init),
    fetchSecond: (path, init) => second.fetch(new URL(path, BASE_URL).toString(), init),
    /**
     * The worker stores entries in ctx.waitUntil, after responding. Resolves
     * once the entry behind `res` (its x-fraiseql-cache-key) is in the cache
     * and, if given, `accept(storedBodyText)`.
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
    /** Resolves once the persisted-query registry holds `hash`. */
    async registered(hash, timeoutMs = 5000) {
      const ok = await waitFor(async () => (await kv.get(hash)) !== null, { timeoutMs });
      if (!ok) throw new Error(`persisted query ${hash} not registered within ${timeoutMs} ms`);
    },
    /**
     * Delivers `bodies` as one batch of `queue` straight to the worker's queue
     * handler (`second`: to the second isolate's) and resolves when it returns.
     */
    async deliver(queue, bodies, { second: toSecond = false, attempts = 1 } = {}) {
      const target = toSecond ? second : await mf.getWorker(config.name);
      const messages = bodies.map((body, i) => ({ id: `m${Date.now()}-${i}`, timestamp: new Date(), body, attempts }));
      return target.queue(queue, messages);
    },
    /** The worker isolate's used heap after a full garbage collection (needs `inspector`). */
    async heapUsed() {
      heap ??= await openInspector(mf, `core:user:${config.name}`);
      await heap.call("HeapProfiler.collectGarbage");
      return (await heap.call("Runtime.getHeapUsage")).usedSize;
    },
    async dispose() {
      heap?.close();
      await mf.dispose();
    },
  };
}

// workerd answers inspector messages from its event loop: a request now and
// then makes sure it turns while a call is pending.
async function openInspector(mf, target) {
  const ws = new WebSocket(new URL(`/${target}`, await mf.getInspectorURL()).href);
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const pending = new Map();
  let next = 0;
  ws.on("message", (raw) => {
    const msg = JSON.parse(raw);
    pending.get(msg.id)?.(msg.result);
    pending.delete(msg.id);
  });
  return {
    async call(method, params = {}) {
      const id = ++next;
      let done = false;
      const answer = new Promise((resolve) => pending.set(id, resolve)).then((r) => {
        done = true;
        return r;
      });
      ws.send(JSON.stringify({ id, method, params }));
      while (!done) {
        await Promise.race([answer, sleep(50)]);
        if (!done) await (await mf.dispatchFetch("http://inspector.invalid/__poke", { method: "PUT" })).arrayBuffer();
      }
      return answer;
    },
    close: () => ws.close(),
  };
}

/** The purge queue consumer's Miniflare options as wrangler derives them from wrangler.jsonc. */
export function configuredConsumers() {
  return structuredClone(unstable_getMiniflareWorkerOptions(CONFIG_PATH).workerOptions.queueConsumers ?? {});
}

/**
 * A request through Node's http client, for what fetch() refuses to send
 * (an Upgrade header on a POST, a Content-Length the body does not meet).
 * Resolves with the status, headers and body text.
 */
export async function rawRequest(worker, path, { method = "GET", headers = {}, body = "" } = {}) {
  const target = await worker.mf.ready;
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, target), { method, headers });
    req.on("response", (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end(body);
  });
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

export const sha256 = (s) => createHash("sha256").update(s).digest("hex");

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
