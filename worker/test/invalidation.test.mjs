// What a mutation invalidates, and that nothing it made stale can come back:
// entries without a selected id, entries whose id hides behind an alias that
// type conditions disambiguate, and fills that race the purge.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { startFakeOrigin, startFakeCloudflareApi, startWorker, gqlPost, sleep, waitFor } from "../test-support/harness.mjs";

const deployment = (origin) => ({ ORIGIN_URL: origin.url, ZONE_ID: "zone-inv", PURGE_API_TOKEN: "purge-token" });
const statusOf = (res) => res.headers.get("x-fraiseql-cache");
const purgedTags = (api) => api.purges.filter((p) => p.status === 200).flatMap((p) => p.body.tags);

describe("a mutation reaches every entry that shows what it changed", () => {
  let origin;
  let api;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({ vars: { CF_API_BASE: api.url }, bindings: deployment(origin) });
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

  it("an entry that never selected id is invalidated here at once and purged everywhere", async () => {
    const READ = 'query Name { user(id: "n1") { name } }';
    const first = await worker.fetch("/graphql", gqlPost(READ));
    const oldName = (await first.json()).data.user.name;
    await worker.stored(first);
    assert.equal(statusOf(await worker.fetch("/graphql", gqlPost(READ))), "HIT");

    await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "n1", name: "New") { id name } }'));

    const after = await worker.fetch("/graphql", gqlPost(READ));
    assert.notEqual(statusOf(after), "HIT", "the same data center must not serve the old name");
    assert.notEqual((await after.json()).data.user.name, oldName);
    const entryTags = first.headers.get("cache-tag").split(",");
    assert.ok(await waitFor(() => purgedTags(api).some((t) => entryTags.includes(t))), `purged ${purgedTags(api)} vs entry ${entryTags}`);
    assert.ok(!purgedTags(api).includes("gql-op:Name"), "queries never purge");
  });

  it("an id behind an alias that only another type's fragment reuses still tags the entry", async () => {
    // `id` is User.id on a User and Post.authorId on a Post: valid GraphQL, and
    // the type conditions say which applies to the object in the answer.
    const READ = 'query Amb { node(id: "u5") { ... on User { id name } ... on Post { id: authorId } } }';
    const first = await worker.fetch("/graphql", gqlPost(READ));
    const body = await first.json();
    assert.equal(body.errors, undefined);
    assert.match(first.headers.get("cache-tag"), /(^|,)User:u5(,|$)/);
    await worker.stored(first);
    await worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "u5", name: "New") { id } }'));
    const after = await worker.fetch("/graphql", gqlPost(READ));
    assert.notEqual(statusOf(after), "HIT");
  });
});

describe("a fill that races the mutation", () => {
  let origin;
  let api;
  let worker;
  // The slowest fill the worker stores: ORIGIN_TIMEOUT_MS bounds the whole answer.
  const FILL_MS = 1500;
  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({
      // PURGE_REPEAT_AFTER_SECONDS 0: the repeat comes at the worker's floor,
      // ORIGIN_TIMEOUT_MS plus a second.
      vars: { CF_API_BASE: api.url, ORIGIN_TIMEOUT_MS: String(FILL_MS), LOCAL_INVALIDATION_SECONDS: "2", PURGE_REPEAT_AFTER_SECONDS: "0" },
      bindings: deployment(origin),
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

  // The query reads the old row and answers late; the mutation commits and
  // answers in between, so the fill is stored after the first purge was sent.
  // Later reads see the new row.
  async function raceOneFill(id, cacheControl) {
    let reads = 0;
    origin.setHandler((req) => {
      if (req.params.query.startsWith("mutation")) {
        return { body: { data: { updateUser: { _fraiseqlEdgeTypename: "User", id, name: "new" } } } };
      }
      reads += 1;
      return {
        delayMs: reads === 1 ? 500 : 0,
        headers: cacheControl ? { "cache-control": cacheControl } : {},
        body: { data: { user: { _fraiseqlEdgeTypename: "User", id, name: reads === 1 ? "old" : "new" } } },
      };
    });
    const READ = `query Race { user(id: "${id}") { id name } }`;
    const fill = worker.fetch("/graphql", gqlPost(READ));
    await waitFor(() => origin.requests.length >= 1, { intervalMs: 5 });
    const write = await worker.fetch("/graphql", gqlPost(`mutation { updateUser(id: "${id}", name: "new") { id name } }`));
    assert.equal(write.status, 200);
    const filled = await fill;
    assert.equal((await filled.json()).data.user.name, "old");
    await worker.stored(filled);
    return { READ, storedAt: performance.now() };
  }

  it("is purged a second time, after it can have been stored", async () => {
    const { storedAt } = await raceOneFill("race1");
    const late = await waitFor(
      () => api.purges.find((p) => p.status === 200 && p.at > storedAt && p.body.tags.includes("User:race1")),
      { timeoutMs: 8000 },
    );
    assert.ok(late, `purges at ${api.purges.map((p) => Math.round(p.at - storedAt))} ms from the store`);
  });

  it("never outlives the data center's own invalidation record", async () => {
    const { READ } = await raceOneFill("race2", "public, s-maxage=3600");
    // LOCAL_INVALIDATION_SECONDS=2: past it, the record that hides the old
    // copy here is gone, and the old copy must be gone too.
    await sleep(2300);
    const later = await worker.fetch("/graphql", gqlPost(READ));
    const name = (await later.json()).data.user.name;
    assert.ok(!(statusOf(later) === "HIT" && name === "old"), `${statusOf(later)} ${name}`);
  });
});
