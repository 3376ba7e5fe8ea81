// Documents and registrations built to exhaust the edge: CPU in tag
// collection, heap in the memos, KV in the persisted-query registry.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startFakeCloudflareApi, startWorker, gqlPost, gqlGetPath, sha256, sleep, waitFor } from "../test-support/harness.mjs";

// `levels` fragments, each spreading the next one twice: a naive expansion
// visits the last one 2^levels times.
function doublySpreadChain(root, levels) {
  const fragments = Array.from({ length: levels }, (_, i) => `fragment F${i} on User { ...F${i + 1} ...F${i + 1} }`);
  return `${root} ${fragments.join(" ")} fragment F${levels} on User { id name }`;
}

const pq = (hash) => ({ persistedQuery: { version: 1, sha256Hash: hash } });
const codeOf = async (res) => (await res.json()).errors?.[0]?.extensions?.code;

describe("hostile documents", () => {
  let origin;
  let api;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({
      vars: { CF_API_BASE: api.url },
      bindings: { ORIGIN_URL: origin.url, ZONE_ID: "zone-h", PURGE_API_TOKEN: "t" },
      inspector: true,
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

  // 2^32 expansions would take hours; linear work takes milliseconds. The
  // timeout is the assertion, with a margin no machine load can eat.
  it("a chain of doubly spread fragments is tagged in linear time, on queries and mutations", { timeout: 30000 }, async () => {
    const user = { _fraiseqlEdgeTypename: "User", id: "chain", name: "n" };
    origin.setHandler((req) => ({ body: { data: req.params.query.startsWith("mutation") ? { updateUser: user } : { user } } }));
    const query = doublySpreadChain('query Chain { user(id: "chain") { ...F0 } }', 32);
    assert.ok(query.length < 2048, `${query.length} bytes`);
    const read = await worker.fetch("/graphql", gqlPost(query));
    assert.equal(read.status, 200);
    assert.match(read.headers.get("cache-tag"), /(^|,)User:chain(,|$)/);

    const write = await worker.fetch("/graphql", gqlPost(doublySpreadChain('mutation Chain { updateUser(id: "chain", name: "x") { ...F0 } }', 32)));
    assert.equal(write.status, 200);
    assert.ok(await waitFor(() => api.purges.some((p) => p.body.tags.includes("User:chain")), { timeoutMs: 10000 }));
  });

  it("memos stay inside their byte budget whatever documents arrive", { timeout: 120000 }, async (t) => {
    origin.setHandler(() => ({ body: { data: {} } }));
    // Distinct documents just under 16 KB, each with ~4,000 selection sets
    // (about 0.8 MiB of parsed form each, measured on workerd).
    const doc = (n) => {
      let text = `query Big${n} {`;
      while (text.length < 16300) text += "a{b}";
      return `${text} }`;
    };
    await worker.fetch("/graphql", gqlPost(doc(-1)));
    const before = await worker.heapUsed();
    for (let n = 0; n < 100; n++) {
      const res = await worker.fetch("/graphql", gqlPost(doc(n)));
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    const grown = (await worker.heapUsed()) - before;
    t.diagnostic(`heap grew by ${(grown / 1048576).toFixed(1)} MiB`);
    // The memos' budget is 8 MiB and the response cache's 16 MiB.
    assert.ok(grown < 32 * 1024 * 1024, `the heap grew by ${(grown / 1048576).toFixed(1)} MiB`);
  });

  it("a persisted-query hash is learned only for text that parses, with an expiry, and within the size cap", async () => {
    const bad = 'query Broken { user(id: "1") { id ';
    const refused = await worker.fetch("/graphql", gqlPost(bad, { extensions: pq(sha256(bad)) }));
    assert.equal(refused.status, 400);
    const probe = await worker.fetch(gqlGetPath({ extensions: pq(sha256(bad)) }));
    assert.equal(await codeOf(probe), "PERSISTED_QUERY_NOT_FOUND", "the unparseable text was never learned");

    const good = 'query Learned { user(id: "1") { id } }';
    await worker.fetch("/graphql", gqlPost(good, { extensions: pq(sha256(good)) }));
    await worker.registered(sha256(good));
    const { keys } = await worker.kv.list({ prefix: sha256(good) });
    assert.ok(keys[0].expiration > Date.now() / 1000, "registered with an expiry");
    await sleep(200);
    assert.equal(await worker.kv.get(sha256(bad)), null, "never written to KV");

    // Valid, but larger than any registry entry may be: answered, not learned.
    let huge = "query Huge {";
    while (huge.length < 70 * 1024) huge += " a";
    huge += " }";
    const answered = await worker.fetch("/graphql", gqlPost(huge, { extensions: pq(sha256(huge)) }));
    assert.equal(answered.status, 200);
    await sleep(300);
    assert.equal(await worker.kv.get(sha256(huge)), null);
    assert.equal(await codeOf(await worker.fetch(gqlGetPath({ extensions: pq(sha256(huge)) }))), "PERSISTED_QUERY_NOT_FOUND");
  });
});
