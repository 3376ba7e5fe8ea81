// Origin authentication: the ALBs accept only requests that carry the edge's
// secret header, so the worker adds it to every origin request, and nowhere
// else.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  startFakeOrigin,
  startFakeCloudflareApi,
  startWorker,
  gqlPost,
  gqlGetPath,
  waitFor,
} from "../test-support/harness.mjs";

const TOKEN = "edge-secret-4f9c2a";
const HEADER = "x-fraiseql-origin-auth";
const Q = 'query A { user(id: "1") { __typename id name } }';

describe("origin authentication header", () => {
  let origin;
  let api;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({
      vars: { CF_API_BASE: api.url },
      bindings: { ORIGIN_URL: origin.url, ZONE_ID: "z", PURGE_API_TOKEN: "purge", ORIGIN_AUTH_TOKEN: TOKEN },
    });
  });
  after(async () => {
    await worker?.dispose();
    await api?.close();
    await origin?.close();
  });
  beforeEach(() => {
    origin.reset();
    api.reset();
  });

  it("is on every request the origin receives, whatever the route through the worker", async () => {
    await worker.fetch("/graphql", gqlPost(Q));
    await worker.fetch(gqlGetPath({ query: 'query B { user(id: "2") { id } }' }));
    await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "1", name: "x") { id } }'));
    await worker.fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify([{ query: Q }, { query: "{ ping }" }]),
    });
    await worker.fetch("/graphql", gqlPost("subscription S { userChanged { id } }"));
    await worker.fetch("/graphql", { method: "OPTIONS", headers: { origin: "https://app.example", "access-control-request-method": "POST" } });
    await worker.fetch("/healthz");
    const ws = await worker.fetch("/graphql", { headers: { upgrade: "websocket", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" } });
    ws.webSocket?.accept();
    ws.webSocket?.close();
    await waitFor(() => origin.upgrades.length === 1);

    assert.equal(origin.requests.length, 7);
    for (const r of [...origin.requests, ...origin.upgrades]) assert.equal(r.headers[HEADER], TOKEN, `${r.method} ${r.url}`);
    assert.equal(origin.requests[5].headers["access-control-request-method"], "POST");
  });

  it("replaces a value the client sent", async () => {
    await worker.fetch("/graphql", gqlPost('query Forged { user(id: "f") { id } }', { headers: { [HEADER]: "forged" } }));
    assert.equal(origin.requests[0].headers[HEADER], TOKEN);
  });

  it("never reaches the client, the cache key, the purge API or the logs", async () => {
    origin.setHandler((req) => ({
      status: 200,
      headers: { [HEADER]: req.headers[HEADER] },
      body: { data: { user: { __typename: "User", id: "1", name: "n" } } },
    }));
    const miss = await worker.fetch("/graphql", gqlPost('query Leak { user(id: "9") { __typename id name } }'));
    assert.equal(miss.headers.get(HEADER), null);
    await worker.stored(miss);
    const hit = await worker.fetch("/graphql", gqlPost('query Leak { user(id: "9") { __typename id name } }'));
    assert.equal(hit.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(hit.headers.get(HEADER), null);

    // The same request through a worker with another token lands on the same key.
    const other = await startWorker({ bindings: { ORIGIN_URL: origin.url, ORIGIN_AUTH_TOKEN: "another-token" } });
    try {
      const res = await other.fetch("/graphql", gqlPost('query Leak { user(id: "9") { __typename id name } }'));
      assert.equal(res.headers.get("x-fraiseql-cache-key"), miss.headers.get("x-fraiseql-cache-key"));
    } finally {
      await other.dispose();
    }

    api.state.failWith = 500;
    await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "1", name: "x") { __typename id } }'));
    await waitFor(() => api.purges.length >= 1);
    await waitFor(() => worker.logs.some((l) => l.includes("purge_failed")));
    await origin.close();
    await worker.fetch("/graphql", gqlPost('query Down { user(id: "7") { id } }'));
    await waitFor(() => worker.logs.some((l) => l.includes("origin_unreachable")));
    assert.ok(worker.logs.every((l) => !l.includes(TOKEN)), "never logged");
    assert.ok(api.purges.every((p) => !JSON.stringify(p).includes(TOKEN)), "never sent to the API");
    origin = await startFakeOrigin();
  });

  it("takes its header name from ORIGIN_AUTH_HEADER, and is absent when no token is bound", async () => {
    const renamed = await startWorker({ vars: { ORIGIN_AUTH_HEADER: "X-Edge-Secret" }, bindings: { ORIGIN_URL: origin.url, ORIGIN_AUTH_TOKEN: TOKEN } });
    const tokenless = await startWorker({ bindings: { ORIGIN_URL: origin.url } });
    try {
      await renamed.fetch("/graphql", gqlPost(Q));
      assert.equal(origin.requests[0].headers["x-edge-secret"], TOKEN);
      assert.equal(origin.requests[0].headers[HEADER], undefined);
      await tokenless.fetch("/graphql", gqlPost('query T { user(id: "t") { id } }', { headers: { [HEADER]: "forged" } }));
      assert.equal(origin.requests[1].headers[HEADER], undefined, "a client's value is never passed on");
    } finally {
      await renamed.dispose();
      await tokenless.dispose();
    }
  });
});
