// The global purge is never lost quietly: a refused tag does not take its
// neighbours down, exhausted retries go through the dead letter queue, and
// the pacing holds from one consumer invocation (and isolate) to the next.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startFakeCloudflareApi, startWorker, configuredConsumers, gqlPost, waitFor } from "../test-support/harness.mjs";

const deployment = (origin) => ({ ORIGIN_URL: origin.url, ZONE_ID: "zone-p", PURGE_API_TOKEN: "purge-token" });
const purgedTags = (api) => api.purges.filter((p) => p.status === 200).flatMap((p) => p.body.tags);
const users = (ids) => ({ body: { data: { bulk: ids.map((id) => ({ _fraiseqlEdgeTypename: "User", id })) } } });

describe("purges that fail", () => {
  let origin;
  let api;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    // The consumers wrangler.jsonc declares, with one retry so the test is short.
    const consumers = configuredConsumers();
    consumers["fraiseql-purge"] = { ...consumers["fraiseql-purge"], maxRetries: 1 };
    worker = await startWorker({ vars: { CF_API_BASE: api.url }, bindings: deployment(origin), workerOverrides: { queueConsumers: consumers } });
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

  it("a tag the API refuses does not take the other tags of its call down with it", async () => {
    api.state.refuses = (tag) => tag === "User:bad";
    origin.setHandler(() => users(["good1", "good2", "bad", "good3"]));
    await worker.fetch("/graphql", gqlPost("mutation { bulk(n: 4) { id } }"));
    const wanted = ["User:good1", "User:good2", "User:good3"];
    assert.ok(await waitFor(() => wanted.every((t) => purgedTags(api).includes(t)), { timeoutMs: 8000 }), `purged ${purgedTags(api)}`);
    assert.ok(await waitFor(() => worker.logs.some((l) => l.includes("purge_tag_refused") && l.includes("User:bad"))));
  });

  it("a purge whose retries ran out goes through the dead letter queue and is still made", async () => {
    api.state.failTimes = 2;
    origin.setHandler(() => users(["dlq"]));
    await worker.fetch("/graphql", gqlPost("mutation { bulk(n: 1) { id } }"));
    assert.ok(await waitFor(() => purgedTags(api).includes("User:dlq"), { timeoutMs: 15000 }), `calls: ${api.purges.map((p) => p.status)}`);
  });
});

describe("purge pacing", () => {
  it("holds across consumer invocations in different isolates (Pro: one call every 200 ms)", async () => {
    const origin = await startFakeOrigin();
    const api = await startFakeCloudflareApi();
    const worker = await startWorker({
      vars: { CF_API_BASE: api.url, PURGE_PLAN: "pro" },
      bindings: deployment(origin),
      secondIsolate: {},
    });
    try {
      await worker.deliver("fraiseql-purge", [{ tags: ["User:pace1"], at: Date.now() }]);
      await worker.deliver("fraiseql-purge", [{ tags: ["User:pace2"], at: Date.now() }], { second: true });
      assert.equal(api.purges.length, 2);
      const gap = api.purges[1].at - api.purges[0].at;
      assert.ok(gap >= 190, `second call ${Math.round(gap)} ms after the first`);
    } finally {
      await worker.dispose();
      await api.close();
      await origin.close();
    }
  });
});
