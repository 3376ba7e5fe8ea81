import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  startFakeOrigin,
  startFakeCloudflareApi,
  startWorker,
  gqlPost,
  gqlGetPath,
  sleep,
  waitFor,
} from "../test-support/harness.mjs";

const settle = () => sleep(100);

const UPDATE = `mutation UpdateUser($id: ID!, $name: String!) {
  updateUser(id: $id, name: $name) { __typename id name posts { __typename id } }
}`;

const updateReply = {
  status: 200,
  body: {
    data: {
      updateUser: {
        __typename: "User",
        id: "u1",
        name: "Ada",
        posts: [
          { __typename: "Post", id: "p10", author: { __typename: "User", id: "u1" } },
          { __typename: "Post", id: "p11" },
        ],
      },
    },
  },
};

describe("mutations and purge by tag", () => {
  let origin;
  let api;
  let worker;
  let smallBatches;
  let unconfigured;

  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    const bindings = { ORIGIN_URL: origin.url, ZONE_ID: "zone-abc", PURGE_API_TOKEN: "purge-token" };
    worker = await startWorker({ vars: { CF_API_BASE: `${api.url}/client/v4` }, bindings });
    smallBatches = await startWorker({ vars: { CF_API_BASE: `${api.url}/client/v4`, PURGE_BATCH_SIZE: "2" }, bindings });
    unconfigured = await startWorker({ vars: { CF_API_BASE: api.url }, bindings: { ORIGIN_URL: origin.url } });
  });
  after(async () => {
    await worker?.dispose();
    await smallBatches?.dispose();
    await unconfigured?.dispose();
    await api?.close();
    await origin?.close();
  });
  beforeEach(() => {
    origin.reset();
    api.purges.length = 0;
    api.state.failWith = null;
  });

  it("never caches a mutation, even when repeated", async () => {
    origin.setHandler(() => updateReply);
    for (let i = 0; i < 3; i++) {
      const res = await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
      assert.equal(res.headers.get("cache-tag"), null);
      assert.deepEqual(await res.json(), updateReply.body);
      await settle();
    }
    assert.equal(origin.requests.length, 3);
    assert.ok(origin.requests.every((r) => r.method === "POST" && r.params.query === UPDATE));
  });

  it("purges exactly the Type:id tags of the mutation result", async () => {
    origin.setHandler(() => updateReply);
    const res = await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    assert.equal(res.status, 200);
    await waitFor(() => api.purges.length >= 1);
    await sleep(50);
    assert.equal(api.purges.length, 1);
    const [purge] = api.purges;
    assert.equal(purge.method, "POST");
    assert.equal(purge.url, "/client/v4/zones/zone-abc/purge_cache");
    assert.equal(purge.authorization, "Bearer purge-token");
    assert.deepEqual(purge.body, { tags: ["User:u1", "Post:p10", "Post:p11"] });
  });

  it("purges tags that match the Cache-Tag of a cached query about the same objects", async () => {
    origin.setHandler((req) =>
      req.params.query.startsWith("mutation")
        ? updateReply
        : { status: 200, body: { data: { user: { __typename: "User", id: "u1", name: "old" } } } },
    );
    const q = await worker.fetch("/graphql", gqlPost("query U { user(id: \"u1\") { __typename id name } }"));
    const cachedTags = q.headers.get("cache-tag").split(",");
    assert.equal(api.purges.length, 0, "queries never purge");
    await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    await waitFor(() => api.purges.length >= 1);
    assert.ok(api.purges[0].body.tags.some((t) => cachedTags.includes(t)));
  });

  it("splits purges into PURGE_BATCH_SIZE batches", async () => {
    origin.setHandler(() => ({
      status: 200,
      body: {
        data: {
          bulk: ["a", "b", "c", "d", "e"].map((id) => ({ __typename: "Item", id })),
        },
      },
    }));
    const res = await smallBatches.fetch("/graphql", gqlPost("mutation Bulk { bulk { __typename id } }"));
    assert.equal(res.status, 200);
    await waitFor(() => api.purges.length >= 3);
    await sleep(50);
    assert.deepEqual(
      api.purges.map((p) => p.body.tags),
      [["Item:a", "Item:b"], ["Item:c", "Item:d"], ["Item:e"]],
    );
  });

  it("uses 100 tags per purge request by default (Cloudflare's per-request limit)", async () => {
    origin.setHandler(() => ({
      status: 200,
      body: { data: { bulk: Array.from({ length: 150 }, (_, i) => ({ __typename: "Item", id: i })) } },
    }));
    await worker.fetch("/graphql", gqlPost("mutation Bulk { bulk { __typename id } }"));
    await waitFor(() => api.purges.length >= 2);
    await sleep(50);
    assert.deepEqual(
      api.purges.map((p) => p.body.tags.length),
      [100, 50],
    );
  });

  it("returns the mutation response even when the purge API fails, and logs it", async () => {
    api.state.failWith = 500;
    origin.setHandler(() => updateReply);
    const res = await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), updateReply.body);
    await waitFor(() => worker.logs.some((l) => l.includes("purge_failed")));
    assert.ok(worker.logs.some((l) => l.includes("purge_failed") && l.includes('"status":500')));
  });

  it("purges even when the mutation response also carries errors", async () => {
    origin.setHandler(() => ({ status: 200, body: { ...updateReply.body, errors: [{ message: "partial" }] } }));
    await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    await waitFor(() => api.purges.length >= 1);
    assert.deepEqual(api.purges[0].body.tags, ["User:u1", "Post:p10", "Post:p11"]);
  });

  it("does not purge when the mutation result has no Type:id objects", async () => {
    origin.setHandler(() => ({ status: 200, body: { data: { ping: true } } }));
    const res = await worker.fetch("/graphql", gqlPost("mutation { ping }"));
    assert.equal(res.status, 200);
    await sleep(200);
    assert.equal(api.purges.length, 0);
  });

  it("skips the purge (and warns) when ZONE_ID / PURGE_API_TOKEN are not set", async () => {
    origin.setHandler(() => updateReply);
    const res = await unconfigured.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    assert.equal(res.status, 200);
    await waitFor(() => unconfigured.logs.some((l) => l.includes("purge_not_configured")));
    assert.equal(api.purges.length, 0);
  });

  it("treats the selected mutation of a mixed document as a mutation", async () => {
    origin.setHandler(() => updateReply);
    const doc = `query Read { user(id: "u1") { __typename id } } ${UPDATE}`;
    for (let i = 0; i < 2; i++) {
      const res = await worker.fetch("/graphql", gqlPost(doc, { operationName: "UpdateUser", variables: { id: "u1", name: "A" } }));
      assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
      await settle();
    }
    assert.equal(origin.requests.length, 2);
    await waitFor(() => api.purges.length >= 2);
  });

  it("forwards a mutation sent over GET to the origin and still purges", async () => {
    origin.setHandler(() => updateReply);
    const res = await worker.fetch(gqlGetPath({ query: UPDATE, variables: { id: "u1", name: "A" } }));
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    assert.equal(origin.requests[0].method, "GET");
    await waitFor(() => api.purges.length >= 1);
  });

  it("recognises a hash-only persisted mutation once its text was registered", async () => {
    origin.setHandler(() => updateReply);
    const pq = { persistedQuery: { version: 1, sha256Hash: createHash("sha256").update(UPDATE).digest("hex") } };
    await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "A" }, extensions: pq }));
    await waitFor(() => api.purges.length >= 1);
    await worker.stored(`apq/${pq.persistedQuery.sha256Hash}`);
    api.purges.length = 0;
    for (let i = 0; i < 2; i++) {
      const res = await worker.fetch("/graphql", gqlPost(undefined, { variables: { id: "u1", name: "B" }, extensions: pq }));
      assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    }
    await waitFor(() => api.purges.length >= 2);
    assert.equal(origin.requests.length, 3);
    assert.equal(origin.requests[2].params.query, UPDATE);
    assert.deepEqual(api.purges[1].body.tags, ["User:u1", "Post:p10", "Post:p11"]);
  });

  it("purges for a mutation inside a batched (array) request", async () => {
    origin.setHandler(() => ({ status: 200, body: [{ data: { a: 1 } }, updateReply.body] }));
    const res = await worker.fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify([{ query: "{ a }" }, { query: UPDATE, variables: { id: "u1", name: "A" } }]),
    });
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    await waitFor(() => api.purges.length >= 1);
    assert.deepEqual(api.purges[0].body.tags, ["User:u1", "Post:p10", "Post:p11"]);
  });

  it("never caches subscriptions", async () => {
    const sub = "subscription OnUser { userChanged { __typename id } }";
    for (let i = 0; i < 2; i++) {
      const res = await worker.fetch("/graphql", gqlPost(sub));
      assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
      await res.arrayBuffer();
      await settle();
    }
    assert.equal(origin.requests.length, 2);
    assert.equal(api.purges.length, 0);
  });
});
