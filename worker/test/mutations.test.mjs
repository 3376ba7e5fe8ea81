import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  startFakeOrigin,
  startFakeCloudflareApi,
  startWorker,
  gqlPost,
  gqlGetPath,
  sleep,
  sha256,
  waitFor,
  INJECTED_TYPENAME,
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
          { __typename: "Post", id: "p10" },
          { __typename: "Post", id: "p11" },
        ],
      },
    },
  },
};
// Each object, and every entry that shows one of its types without an id.
const UPDATE_TAGS = ["User:u1", "Post:p10", "Post:p11", "gql-noid:User", "gql-noid:Post"];

// The repeated purge of each mutation (after the slowest fill) is out of these
// tests' way; test/invalidation.test.mjs covers it.
const apiVars = (api) => ({ CF_API_BASE: `${api.url}/client/v4`, PURGE_REPEAT_AFTER_SECONDS: "600" });
const deployment = (origin) => ({ ORIGIN_URL: origin.url, ZONE_ID: "zone-abc", PURGE_API_TOKEN: "purge-token" });
const allPurgedTags = (api) => api.purges.flatMap((p) => p.body.tags);

describe("mutations and purge by tag", () => {
  let origin;
  let api;
  let worker;
  let smallBatches;
  let unconfigured;

  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({ vars: apiVars(api), bindings: deployment(origin) });
    smallBatches = await startWorker({ vars: { ...apiVars(api), PURGE_BATCH_SIZE: "2" }, bindings: deployment(origin) });
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
    api.reset();
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
    assert.ok(origin.requests.every((r) => r.method === "POST" && r.params.operationName === "UpdateUser"));
  });

  it("purges exactly the Type:id and gql-noid:Type tags of the mutation result", async () => {
    origin.setHandler(() => updateReply);
    const res = await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    assert.equal(res.status, 200);
    await waitFor(() => api.purges.length >= 1);
    await sleep(100);
    assert.equal(api.purges.length, 1);
    const [purge] = api.purges;
    assert.equal(purge.method, "POST");
    assert.equal(purge.url, "/client/v4/zones/zone-abc/purge_cache");
    assert.equal(purge.authorization, "Bearer purge-token");
    assert.deepEqual(purge.body, { tags: UPDATE_TAGS });
  });

  it("purges tags that match the Cache-Tag of a cached query about the same objects", async () => {
    origin.setHandler((req) =>
      req.params.query.startsWith("mutation")
        ? updateReply
        : { status: 200, body: { data: { user: { __typename: "User", id: "u1", name: "old" } } } },
    );
    const q = await worker.fetch("/graphql", gqlPost('query U { user(id: "u1") { __typename id name } }'));
    const cachedTags = q.headers.get("cache-tag").split(",");
    await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    await waitFor(() => api.purges.length >= 1);
    assert.ok(api.purges[0].body.tags.some((t) => cachedTags.includes(t)));
    assert.ok(!api.purges[0].body.tags.includes("gql-op:U"), "queries never purge");
  });

  it("splits purges into PURGE_BATCH_SIZE batches", async () => {
    origin.setHandler(() => ({
      status: 200,
      body: { data: { bulk: ["a", "b", "c", "d", "e"].map((id) => ({ __typename: "Item", id })) } },
    }));
    const res = await smallBatches.fetch("/graphql", gqlPost("mutation Bulk { bulk { __typename id } }"));
    assert.equal(res.status, 200);
    await waitFor(() => api.purges.length >= 3);
    await sleep(100);
    assert.deepEqual(
      api.purges.map((p) => p.body.tags),
      [
        ["Item:a", "Item:b"],
        ["Item:c", "Item:d"],
        ["Item:e", "gql-noid:Item"],
      ],
    );
  });

  it("returns the mutation response even when the purge API fails, and logs it", async () => {
    api.state.failWith = 400;
    origin.setHandler(() => updateReply);
    const res = await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), updateReply.body);
    await waitFor(() => worker.logs.some((l) => l.includes("purge_failed") && l.includes('"status":400')));
    // A refused call is split until each refused tag is known (and logged).
    const refused = () => UPDATE_TAGS.filter((t) => worker.logs.some((l) => l.includes("purge_tag_refused") && l.includes(`"${t}"`)));
    assert.ok(await waitFor(() => refused().length === UPDATE_TAGS.length), `refused: ${refused()}`);
    assert.ok(worker.logs.every((l) => !l.includes("purge-token")), "the purge token is never logged");
  });

  it("purges even when the mutation response also carries errors", async () => {
    origin.setHandler(() => ({ status: 200, body: { ...updateReply.body, errors: [{ message: "partial" }] } }));
    await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "Ada" } }));
    await waitFor(() => api.purges.length >= 1);
    assert.deepEqual(api.purges[0].body.tags, UPDATE_TAGS);
  });

  it("does not purge when the mutation result has no objects", async () => {
    origin.setHandler(() => ({ status: 200, body: { data: { ping: true } } }));
    const res = await worker.fetch("/graphql", gqlPost("mutation { ping }"));
    assert.equal(res.status, 200);
    await sleep(300);
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
    await waitFor(() => allPurgedTags(api).length >= 3);
  });

  it("recognises a hash-only persisted mutation once its text was registered", async () => {
    origin.setHandler(() => updateReply);
    const pq = { persistedQuery: { version: 1, sha256Hash: sha256(UPDATE) } };
    await worker.fetch("/graphql", gqlPost(UPDATE, { variables: { id: "u1", name: "A" }, extensions: pq }));
    await worker.registered(pq.persistedQuery.sha256Hash);
    await waitFor(() => api.purges.length >= 1);
    api.reset();
    const res = await worker.fetch("/graphql", gqlPost(undefined, { variables: { id: "u1", name: "B" }, extensions: pq }));
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    await waitFor(() => api.purges.length >= 1);
    assert.equal(origin.requests.length, 2);
    assert.match(origin.requests[1].params.query, /^mutation UpdateUser/);
    assert.deepEqual(api.purges[0].body.tags, UPDATE_TAGS);
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
    assert.doesNotMatch(origin.requests[0].params.query, new RegExp(INJECTED_TYPENAME), "subscription roots take no __typename");
    assert.equal(api.purges.length, 0);
  });
});

describe("invalidation is visible at once", () => {
  let origin;
  let api;
  let worker;

  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({
      vars: apiVars(api),
      bindings: deployment(origin),
      secondIsolate: { LOCAL_INVALIDATION_REFRESH_MS: "0" },
      // A wide batching window, so the test can place two mutations inside it.
      workerOverrides: { queueConsumers: { "fraiseql-purge": { maxBatchSize: 100, maxBatchTimeout: 0.4, maxRetries: 10 } } },
    });
  });
  after(async () => {
    await worker?.dispose();
    await api?.close();
    await origin?.close();
  });
  beforeEach(() => {
    origin.reset();
    origin.useSchema();
    api.reset();
  });

  // The client never selects __typename: the edge adds it on the way to the
  // origin (so entities are recognised) and removes it on the way back.
  const READ = 'query Read { user(id: "u7") { id name } }';
  const WRITE = 'mutation Write { updateUser(id: "u7", name: "Grace") { id name } }';

  it("a re-query right after a mutation, in the same data center, gets fresh data", async () => {
    const first = await worker.fetch("/graphql", gqlPost(READ));
    assert.equal(first.headers.get("x-fraiseql-cache"), "MISS");
    assert.deepEqual(await first.json(), { data: { user: { id: "u7", name: `v${origin.requests[0].seq}` } } });
    await worker.stored(first);
    assert.equal((await worker.fetch("/graphql", gqlPost(READ))).headers.get("x-fraiseql-cache"), "HIT");

    const write = await worker.fetch("/graphql", gqlPost(WRITE));
    assert.deepEqual(await write.json(), { data: { updateUser: { id: "u7", name: "Grace" } } });

    // No purge has reached this data center's cache (the fake API purges
    // nothing): only the local invalidation can make this a miss.
    const after = await worker.fetch("/graphql", gqlPost(READ));
    assert.equal(after.headers.get("x-fraiseql-cache"), "MISS");
    assert.deepEqual(await after.json(), { data: { user: { id: "u7", name: `v${origin.requests[2].seq}` } } });
    assert.equal(origin.requests.length, 3);
  });

  it("another isolate of the same data center sees the invalidation too", async () => {
    const read = 'query ReadOther { user(id: "u8") { id name } }';
    const first = await worker.fetchSecond("/graphql", gqlPost(read));
    await worker.stored(first);
    assert.equal((await worker.fetchSecond("/graphql", gqlPost(read))).headers.get("x-fraiseql-cache"), "HIT");
    await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "u8", name: "Z") { id } }'));
    const after = await worker.fetchSecond("/graphql", gqlPost(read));
    assert.equal(after.headers.get("x-fraiseql-cache"), "MISS");
  });

  it("adds __typename to every selection set for the origin and strips it where the client did not ask", async () => {
    const doc = `
      query Deep($id: ID!, $skip: Boolean = false) {
        node(id: $id) { ... on User { id posts { id author { name } } } }
        again: user(id: $id) @include(if: true) { ...Who bio @skip(if: $skip) }
      }
      fragment Who on User { __typename name }
    `;
    const res = await worker.fetch("/graphql", gqlPost(doc, { variables: { id: "u9" } }));
    const body = await res.json();
    assert.equal(body.errors, undefined, "the origin (graphql-js) accepted the rewritten document");
    const name = `v${origin.requests[0].seq}`;
    assert.deepEqual(body.data, {
      node: { id: "u9", posts: [{ id: "u9-p1", author: { name } }] },
      again: { __typename: "User", name, bio: "bio-of-u9" },
    });
    const sent = origin.requests[0].params.query;
    // root, node, the inline fragment, posts, author, again, and the fragment Who
    assert.equal(sent.split(`${INJECTED_TYPENAME}:__typename`).length - 1, 7, sent);
    assert.match(res.headers.get("cache-tag"), /(^|,)User:u9(,|$)/);
    assert.match(res.headers.get("cache-tag"), /(^|,)Post:u9-p1(,|$)/);
  });

  // Earlier tests' mutations are purged again PURGE_REPEAT_AFTER_SECONDS later, which may land in
  // the middle of these two: each follows a tag of its own, and only calls carrying it fail.
  it("retries a failed purge with growing delays until it succeeds", async () => {
    const tag = "User:u7-retried";
    api.state.only = (t) => t === tag;
    api.state.failTimes = 2;
    await worker.fetch("/graphql", gqlPost('mutation Write { updateUser(id: "u7-retried", name: "Grace") { id name } }'));
    // as an earlier test's repeated purge would: it neither uses up a failure nor counts as an attempt
    await fetch(`${api.url}/client/v4/zones/z/purge_cache`, { method: "POST", body: JSON.stringify({ tags: ["User:u7"] }) });
    // Another purge may join a retry's batch: follow this mutation's tag.
    const attempts = () => api.purges.filter((p) => p.body.tags.includes(tag));
    assert.ok(await waitFor(() => attempts().length >= 3, { timeoutMs: 8000 }), "three attempts");
    const [a, b, c] = attempts();
    assert.deepEqual([a.status, b.status, c.status], [500, 500, 200]);
    assert.ok(b.at - a.at >= 900, `first retry after ${b.at - a.at} ms`);
    assert.ok(c.at - b.at >= 1900, `second retry after ${c.at - b.at} ms`);
  });

  it("waits for Retry-After when the purge API rate-limits it", async () => {
    const tag = "User:u7-limited";
    const calls = () => api.purges.filter((p) => p.body.tags.includes(tag));
    api.state.only = (t) => t === tag;
    api.state.failWith = 429;
    api.state.retryAfter = 2;
    await worker.fetch("/graphql", gqlPost('mutation Write { updateUser(id: "u7-limited", name: "Grace") { id name } }'));
    await waitFor(() => calls().length >= 1);
    api.state.failWith = null;
    assert.ok(await waitFor(() => calls().length >= 2, { timeoutMs: 6000 }));
    const [first, second] = calls();
    assert.equal(first.status, 429);
    assert.ok(second.at - first.at >= 1900, `retried after ${second.at - first.at} ms`);
  });

  it("batches the tags of mutations made within the window into one purge call", async () => {
    await Promise.all([
      worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "a1", name: "x") { id } }')),
      worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "a2", name: "y") { id } }')),
    ]);
    await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "a3", name: "z") { id } }'));
    // only the calls carrying these mutations' tags: an earlier test's late purge may arrive meanwhile
    const ours = (t) => /^User:a[123]$/.test(t);
    const calls = () => api.purges.filter((p) => p.body.tags.some(ours));
    await waitFor(() => calls().length >= 1);
    await sleep(600);
    assert.equal(calls().length, 1);
    assert.deepEqual(calls()[0].body.tags.filter((t) => ours(t) || t === "gql-noid:User").sort(),
      ["User:a1", "User:a2", "User:a3", "gql-noid:User"]);
  });
});

describe("purge rate limits", () => {
  it("paces purge calls at the plan's sustained rate (Pro: 5 a second)", async () => {
    const origin = await startFakeOrigin();
    const api = await startFakeCloudflareApi();
    const worker = await startWorker({
      vars: { ...apiVars(api), PURGE_PLAN: "pro" },
      bindings: deployment(origin),
      workerOverrides: { queueConsumers: { "fraiseql-purge": { maxBatchSize: 100, maxBatchTimeout: 0.4, maxRetries: 10 } } },
    });
    try {
      // Three mutations of 90 distinct users each: 270 tags and gql-noid:User, three calls.
      origin.setHandler((req) => ({
        status: 200,
        body: { data: { bulk: Array.from({ length: 90 }, (_, i) => ({ [INJECTED_TYPENAME]: "User", id: `s${req.seq}-${i}` })) } },
      }));
      await Promise.all([0, 1, 2].map(() => worker.fetch("/graphql", gqlPost("mutation { bulk(n: 90) { id } }"))));
      assert.ok(await waitFor(() => api.purges.length >= 3, { timeoutMs: 4000 }));
      const gaps = api.purges.slice(1).map((p, i) => p.at - api.purges[i].at);
      assert.ok(gaps.every((g) => g >= 190), `gaps ${gaps.map(Math.round)} ms`);
      assert.deepEqual(api.purges.map((p) => p.body.tags.length), [100, 100, 71]);
    } finally {
      await worker.dispose();
      await api.close();
      await origin.close();
    }
  });
});

describe("purge abuse limits", () => {
  let origin;
  let api;
  let worker;

  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({
      vars: { ...apiVars(api), MAX_TAGS_PER_MUTATION: "10" },
      bindings: deployment(origin),
      workerOverrides: { ratelimits: { MUTATION_LIMITER: { simple: { limit: 3, period: 60 } } } },
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
  let client = 0;
  // A client is a credential and an address.
  const asNewClient = () => {
    client += 1;
    return { headers: { authorization: `Bearer client-${client}`, "cf-connecting-ip": `198.51.100.${client}` } };
  };

  it("purges only the mutation's own result in a [query, mutation] batch", async () => {
    origin.setHandler(() => ({
      status: 200,
      body: [
        { data: { users: Array.from({ length: 5 }, (_, i) => ({ __typename: "User", id: `q${i}` })) } },
        updateReply.body,
      ],
    }));
    const res = await worker.fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", ...asNewClient().headers },
      body: JSON.stringify([{ query: "{ users { __typename id } }" }, { query: UPDATE, variables: { id: "u1", name: "A" } }]),
    });
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    await waitFor(() => api.purges.length >= 1);
    await sleep(150);
    assert.deepEqual(allPurgedTags(api), UPDATE_TAGS);
  });

  it("resolves aliases to real field names: a client cannot pick the tags", async () => {
    origin.useSchema();
    const forged = 'mutation { updateUser(id: "u1", name: "N") { id: bio realId: id __typename: name } }';
    const res = await worker.fetch("/graphql", gqlPost(forged, asNewClient()));
    assert.deepEqual((await res.json()).data, { updateUser: { id: "bio-of-u1", realId: "u1", __typename: "N" } });
    await waitFor(() => api.purges.length >= 1);
    assert.deepEqual(allPurgedTags(api), ["User:u1", "gql-noid:User"]);
  });

  it("caps the tags of one mutation: past the cap, entities collapse into their types' tags", async () => {
    origin.useSchema();
    const res = await worker.fetch("/graphql", gqlPost("mutation { bulk(n: 3000) { id } }", asNewClient()));
    assert.equal(res.status, 200);
    await waitFor(() => api.purges.length >= 1);
    await sleep(150);
    assert.deepEqual(allPurgedTags(api), ["gql-type:User"]);
  });

  it("limits mutations per client and refuses the excess before the origin", async () => {
    origin.useSchema();
    const me = asNewClient();
    const statuses = [];
    for (let i = 0; i < 5; i++) {
      const res = await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "r", name: "r") { id } }', me));
      statuses.push(res.status);
      if (res.status === 429) {
        assert.equal((await res.json()).errors[0].extensions.code, "RATE_LIMITED");
        assert.ok(Number(res.headers.get("retry-after")) > 0);
      }
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.equal(origin.requests.length, 3);
    const other = await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "r", name: "r") { id } }', asNewClient()));
    assert.equal(other.status, 200, "another client is not affected");
    const query = await worker.fetch("/graphql", gqlPost('{ user(id: "r") { id } }', me));
    assert.equal(query.status, 200, "queries are not limited");
  });

  it("limits mutations per address too: a fresh credential on each request buys no fresh budget", async () => {
    origin.useSchema();
    const statuses = [];
    for (let i = 0; i < 5; i++) {
      const forged = { headers: { authorization: `Bearer random-${i}-${Math.random()}`, cookie: `junk=${i}`, "cf-connecting-ip": "203.0.113.77" } };
      statuses.push((await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "r", name: "r") { id } }', forged))).status);
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.equal(origin.requests.length, 3);
  });
});

describe("persisted queries across data centers", () => {
  it("a data center that never saw the text still classifies, caches and purges", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fraiseql-kv-"));
    const origin = await startFakeOrigin();
    const api = await startFakeCloudflareApi();
    origin.useSchema();
    const write = "mutation Rename($id: ID!) { updateUser(id: $id, name: \"R\") { id name } }";
    const read = "query One($id: ID!) { user(id: $id) { id name } }";
    const pqOf = (text) => ({ persistedQuery: { version: 1, sha256Hash: sha256(text) } });
    const start = () => startWorker({ vars: apiVars(api), bindings: deployment(origin), kvPersist: dir });
    try {
      const first = await start();
      await first.fetch("/graphql", gqlPost(write, { variables: { id: "k1" }, extensions: pqOf(write) }));
      await first.fetch("/graphql", gqlPost(read, { variables: { id: "k1" }, extensions: pqOf(read) }));
      await first.registered(sha256(write));
      await first.registered(sha256(read));
      await waitFor(() => api.purges.length >= 1);
      await first.dispose();
      api.reset();
      origin.reset();
      origin.useSchema();

      // A fresh Miniflare: empty cache and memory, the same KV (another data center).
      const second = await start();
      try {
        const get = gqlGetPath({ variables: { id: "k2" }, extensions: pqOf(read) });
        const miss = await second.fetch(get);
        assert.equal(miss.headers.get("x-fraiseql-cache"), "MISS");
        await second.stored(miss);
        assert.equal((await second.fetch(get)).headers.get("x-fraiseql-cache"), "HIT");

        const res = await second.fetch("/graphql", gqlPost(undefined, { variables: { id: "k2" }, extensions: pqOf(write) }));
        assert.deepEqual((await res.json()).data, { updateUser: { id: "k2", name: "R" } });
        assert.match(origin.requests.at(-1).params.query, /^mutation Rename/);
        await waitFor(() => api.purges.length >= 1);
        assert.deepEqual(allPurgedTags(api), ["User:k2", "gql-noid:User"]);

        // And a hash-only GET of the mutation is refused, as its text is known.
        const viaGet = await second.fetch(gqlGetPath({ variables: { id: "k2" }, extensions: pqOf(write) }));
        assert.equal(viaGet.status, 405);
      } finally {
        await second.dispose();
      }
    } finally {
      await api.close();
      await origin.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
