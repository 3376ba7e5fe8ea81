// Batches: a batch of queries is served item by item through the cache, so
// it neither bypasses the cache nor multiplies the origin's work.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startWorker, gqlPost } from "../test-support/harness.mjs";

const Q = "query B($id: ID!) { user(id: $id) { id name } }";
const post = (items) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(items) });
// How many operations the origin executed, batched or not.
const executed = (origin) => origin.requests.reduce((n, r) => n + (Array.isArray(r.params) ? r.params.length : 1), 0);

describe("batches of queries", () => {
  let origin;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    worker = await startWorker({ bindings: { ORIGIN_URL: origin.url } });
  });
  after(async () => {
    await worker?.dispose();
    await origin?.close();
  });
  beforeEach(() => {
    origin.reset();
    origin.useSchema();
  });

  it("are cached item by item: each distinct query runs once, and a repeat runs none", async () => {
    const batch = [
      { query: Q, variables: { id: "b1" } },
      { query: Q, variables: { id: "b2" } },
      { query: Q, variables: { id: "b1" } },
    ];
    const first = await worker.fetch("/graphql", post(batch));
    assert.equal(first.status, 200);
    const body = await first.json();
    assert.equal(body.length, 3);
    assert.deepEqual(body.map((r) => r.data.user.id), ["b1", "b2", "b1"]);
    assert.deepEqual(body[0], body[2]);
    assert.equal(executed(origin), 2, "the duplicate item is not executed twice");

    const keys = first.headers.get("x-fraiseql-cache-key").split(",");
    assert.equal(keys.length, 3);
    for (const key of new Set(keys)) await worker.stored(key);
    origin.reset();
    origin.useSchema();
    const second = await worker.fetch("/graphql", post(batch));
    assert.deepEqual(await second.json(), body);
    assert.equal(executed(origin), 0);
    assert.deepEqual(second.headers.get("x-fraiseql-cache").split(","), ["HIT", "HIT", "HIT"]);

    // A single request and a batch item are one entry.
    const single = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "b2" } }));
    assert.equal(single.headers.get("x-fraiseql-cache"), "HIT");
    assert.deepEqual(await single.json(), body[1]);
  });

  it("carry the origin's headers (CORS) as single answers do, and are never stored downstream", async () => {
    origin.setHandler((req) => ({
      headers: { "access-control-allow-origin": "https://app.example", vary: "Origin" },
      body: (Array.isArray(req.params) ? req.params : [req.params]).map((p) => ({ data: { user: { __typename: "User", id: p.variables.id, name: "n" } } })),
    }));
    const cors = [{ query: Q, variables: { id: "c1" } }, { query: Q, variables: { id: "c2" } }];
    for (let i = 0; i < 2; i++) {
      const res = await worker.fetch("/graphql", { ...post(cors), headers: { "content-type": "application/json", origin: "https://app.example" } });
      assert.equal(res.headers.get("access-control-allow-origin"), "https://app.example", `round ${i}`);
      assert.equal(res.headers.get("cache-control"), "no-store");
      assert.equal(res.headers.get("cache-tag"), null);
      const keys = res.headers.get("x-fraiseql-cache-key").split(",");
      if (i === 0) for (const key of keys) await worker.stored(key);
      else assert.deepEqual(res.headers.get("x-fraiseql-cache").split(","), ["HIT", "HIT"]);
    }
  });

  it("answer each item as its own request would be answered, errors included", async () => {
    const res = await worker.fetch("/graphql", post([{ query: Q, variables: { id: "e1" } }, { query: "query Bad { nope }" }]));
    assert.equal(res.status, 200);
    const [ok, bad] = await res.json();
    assert.equal(ok.data.user.id, "e1");
    assert.match(bad.errors[0].message, /nope/);
    assert.equal(executed(origin), 2);
  });
});
