import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startFakeOrigin, startWorker, gqlPost, gqlGetPath, sleep } from "../test-support/harness.mjs";

const MAX_BODY_BYTES = 2048;
const GOOD = "query Good($id: ID!) { user(id: $id) { __typename id name } }";

function jsonPost(body, headers = {}) {
  return { method: "POST", headers: { "content-type": "application/json", ...headers }, body };
}

function streamOf(text, chunkSize = 512) {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + chunkSize));
      offset += chunkSize;
    },
  });
}

const cases = [
  ["malformed JSON body", () => ["/graphql", jsonPost('{"query": "{ a }"')], 400],
  ["JSON body that is not an object", () => ["/graphql", jsonPost("42")], 400],
  ["non-string query", () => ["/graphql", jsonPost(JSON.stringify({ query: 7 }))], 400],
  ["variables that are not an object", () => ["/graphql", jsonPost(JSON.stringify({ query: "{ a }", variables: [1] }))], 400],
  ["missing query", () => ["/graphql", jsonPost(JSON.stringify({ variables: {} }))], 400],
  ["malformed variables in GET", () => ["/graphql?query=%7B%20a%20%7D&variables=%7Bnope", {}], 400],
  ["malformed persistedQuery extension", () => ["/graphql", jsonPost(JSON.stringify({ extensions: { persistedQuery: { sha256Hash: "xyz" } } }))], 400],
  ["unterminated string", () => ["/graphql", gqlPost('query Q { user(name: "abc) { id } }')], 400],
  ["unterminated block string", () => ["/graphql", gqlPost('query Q { user(bio: """abc) { id } }')], 400],
  ["unbalanced braces", () => ["/graphql", gqlPost("query Q { user { id }")], 400],
  ["mismatched brackets", () => ["/graphql", gqlPost("query Q { user(id: [1) { id } }")], 400],
  ["stray closing brace", () => ["/graphql", gqlPost("} query Q { a }")], 400],
  ["invalid character", () => ["/graphql", gqlPost("query Q { a ? b }")], 400],
  ["empty document", () => ["/graphql", gqlPost("   # only a comment\n")], 400],
  ["multiple operations without operationName", () => ["/graphql", gqlPost("query A { a } query B { b }")], 400],
  ["unknown operationName", () => ["/graphql", gqlPost("query A { a }", { operationName: "Z" })], 400],
  ["duplicate operation names", () => ["/graphql", gqlPost("query A { a } query A { b }", { operationName: "A" })], 400],
  ["duplicate fragment names", () => ["/graphql", gqlPost("query A { ...F } fragment F on Q { a } fragment F on Q { b }")], 400],
  ["the edge's reserved alias", () => ["/graphql", gqlPost("query A { _fraiseqlEdgeTypename: a }")], 400],
  ["an empty selection set", () => ["/graphql", gqlPost("query A { a {} }")], 400],
  ["malformed GraphQL over GET", () => [gqlGetPath({ query: "{ a " }), {}], 400],
  [
    "body over MAX_BODY_BYTES (Content-Length)",
    () => ["/graphql", gqlPost(`query Big { a } # ${"x".repeat(MAX_BODY_BYTES)}`)],
    413,
  ],
  [
    "body over MAX_BODY_BYTES without Content-Length (streamed)",
    () => [
      "/graphql",
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: streamOf(JSON.stringify({ query: `{ a } # ${"x".repeat(MAX_BODY_BYTES * 2)}` })),
        duplex: "half",
      },
    ],
    413,
  ],
  ["PUT", () => ["/graphql", { method: "PUT", body: "{}" }], 405],
  ["DELETE", () => ["/graphql", { method: "DELETE" }], 405],
  ["PATCH", () => ["/graphql", { method: "PATCH", body: "{}" }], 405],
  ["HEAD", () => ["/graphql", { method: "HEAD" }], 405],
];

describe("bad input", () => {
  let origin;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    worker = await startWorker({
      vars: { MAX_BODY_BYTES: String(MAX_BODY_BYTES) },
      bindings: { ORIGIN_URL: origin.url },
    });
  });
  after(async () => {
    await worker?.dispose();
    await origin?.close();
  });
  beforeEach(() => origin.reset());

  let goodId = 0;
  async function assertStillServes() {
    goodId += 1;
    const res = await worker.fetch("/graphql", gqlPost(GOOD, { variables: { id: `g${goodId}` } }));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await res.json()).data.user.id, `g${goodId}`);
  }

  for (const [label, make, status] of cases) {
    it(`${label} → ${status}, not cached, worker keeps serving`, async () => {
      for (let attempt = 0; attempt < 2; attempt++) {
        const [path, init] = make();
        const res = await worker.fetch(path, init);
        assert.equal(res.status, status);
        assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
        assert.equal(res.headers.get("cache-control"), "no-store");
        if (init.method !== "HEAD") {
          assert.match(res.headers.get("content-type"), /^application\/json/);
          const body = await res.json();
          assert.equal(typeof body.errors[0].message, "string");
          assert.doesNotMatch(body.errors[0].message, /worker\.js|\n\s+at /);
        }
        if (status === 405) assert.equal(res.headers.get("allow"), "GET, POST, OPTIONS");
        await sleep(20);
      }
      assert.equal(origin.requests.length, 0, "rejected input never reaches the origin");
      await assertStillServes();
    });
  }

  it("rejects on a declared Content-Length before reading the body", async () => {
    // The client announces a huge body and sends only a few bytes: a worker
    // that tried to read it all would hang instead of answering.
    const target = await worker.mf.ready;
    const status = await new Promise((resolve, reject) => {
      const req = http.request(new URL("/graphql", target), {
        method: "POST",
        headers: { "content-type": "application/json", "content-length": String(100 * 1024 * 1024) },
      });
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error("no response before the body was complete"));
      }, 3000);
      req.on("response", (res) => {
        clearTimeout(timer);
        res.resume();
        req.destroy();
        resolve(res.statusCode);
      });
      req.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.write('{"query": "{ a }"');
    });
    assert.equal(status, 413);
    assert.equal(origin.requests.length, 0);
  });

  it("reports GraphQL syntax errors with a parse-failed code", async () => {
    const res = await worker.fetch("/graphql", gqlPost('{ a(s: "oops) }'));
    const body = await res.json();
    assert.equal(body.errors[0].extensions.code, "GRAPHQL_PARSE_FAILED");
    assert.match(body.errors[0].message, /Unterminated string/);
  });

  it("forwards OPTIONS (CORS preflight) to the origin without caching", async () => {
    const res = await worker.fetch("/graphql", { method: "OPTIONS", headers: { origin: "https://app.example" } });
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    assert.equal(origin.requests.length, 1);
    assert.equal(origin.requests[0].method, "OPTIONS");
  });

  it("accepts a body exactly at MAX_BODY_BYTES", async () => {
    const base = JSON.stringify({ query: "{ a } # ", variables: { id: "edge" } });
    const padded = base.replace("# ", `# ${"x".repeat(MAX_BODY_BYTES - base.length)}`);
    assert.equal(Buffer.byteLength(padded), MAX_BODY_BYTES);
    const res = await worker.fetch("/graphql", jsonPost(padded));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-fraiseql-cache"), "MISS");
  });

  it("does not crash on deeply nested variables (not cached, forwarded)", async () => {
    let deep = {};
    for (let i = 0; i < 200; i++) deep = { d: deep };
    const res = await worker.fetch("/graphql", gqlPost(GOOD, { variables: { id: "deep", deep } }));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    await assertStillServes();
  });

  it("answers 500 without details when ORIGIN_URL is missing", async () => {
    const broken = await startWorker({ bindings: { ORIGIN_URL: "" } });
    try {
      const res = await broken.fetch("/graphql", gqlPost(GOOD, { variables: { id: "x" } }));
      assert.equal(res.status, 500);
      const body = await res.json();
      assert.equal(body.errors[0].message, "Edge worker is not configured");
    } finally {
      await broken.dispose();
    }
  });
});
