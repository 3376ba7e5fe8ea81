import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startWorker, gqlPost, sleep } from "../test-support/harness.mjs";

const Q = "query GetUser($id: ID!) { user(id: $id) { __typename id name } }";
const nameOf = async (res) => (await res.json()).data.user.name;

describe("stale-while-revalidate", () => {
  let origin;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    worker = await startWorker({
      vars: { CACHE_TTL_SECONDS: "1", STALE_WHILE_REVALIDATE_SECONDS: "30", STALE_IF_ERROR_SECONDS: "0" },
      bindings: { ORIGIN_URL: origin.url },
    });
  });
  after(async () => {
    await worker?.dispose();
    await origin?.close();
  });

  it("serves stale within the window and refreshes in the background", async () => {
    const miss = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "1" } }));
    assert.equal(miss.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(await nameOf(miss), "v1");
    await worker.stored(miss);

    const fresh = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "1" } }));
    assert.equal(fresh.headers.get("x-fraiseql-cache"), "HIT");
    await sleep(1050);

    // Past the TTL: the old body comes back immediately, the origin is asked once in the background.
    origin.state.delayMs = 150;
    const stale = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "1" } }));
    assert.equal(stale.headers.get("x-fraiseql-cache"), "STALE");
    assert.equal(await nameOf(stale), "v1");
    assert.ok(Number(stale.headers.get("age")) >= 0);
    const staleAgain = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "1" } }));
    assert.equal(staleAgain.headers.get("x-fraiseql-cache"), "STALE");

    await worker.stored(stale, (text) => JSON.parse(text).data.user.name === "v2");
    origin.state.delayMs = 0;
    assert.equal(origin.requests.length, 2, "one background revalidation for the burst of STALE hits");

    const refreshed = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "1" } }));
    assert.equal(refreshed.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(await nameOf(refreshed), "v2");
  });
});

describe("stale-if-error", () => {
  let origin;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    worker = await startWorker({
      vars: {
        CACHE_TTL_SECONDS: "0.3",
        STALE_WHILE_REVALIDATE_SECONDS: "0",
        STALE_IF_ERROR_SECONDS: "60",
        ORIGIN_TIMEOUT_MS: "300",
      },
      bindings: { ORIGIN_URL: origin.url },
    });
  });
  after(async () => {
    await worker?.dispose();
    await origin?.close();
  });
  beforeEach(() => origin.reset());

  it("refetches synchronously once past TTL+SWR (REVALIDATED)", async () => {
    const firstRes = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "r" } }));
    const first = await nameOf(firstRes);
    await worker.stored(firstRes);
    await sleep(350);
    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "r" } }));
    assert.equal(res.headers.get("x-fraiseql-cache"), "REVALIDATED");
    assert.notEqual(await nameOf(res), first);
    assert.equal(origin.requests.length, 2);
  });

  it("serves the cached copy when the origin answers 5xx", async () => {
    const firstRes = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "5xx" } }));
    const first = await nameOf(firstRes);
    await worker.stored(firstRes);
    await sleep(350);
    origin.setHandler(() => ({ status: 503, body: { errors: [{ message: "down" }] } }));
    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "5xx" } }));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-fraiseql-cache"), "ERROR-STALE");
    assert.equal(await nameOf(res), first);
    assert.equal(origin.requests.length, 2);
  });

  it("passes a 5xx through when nothing is cached", async () => {
    origin.setHandler(() => ({ status: 503, body: { errors: [{ message: "down" }] } }));
    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "nothing" } }));
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("x-fraiseql-cache"), "MISS");
  });

  it("serves the cached copy when the origin times out", async () => {
    await worker.stored(await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "slow" } })));
    await sleep(350);
    // The origin holds its answer until the worker has answered the client: only ORIGIN_TIMEOUT_MS can
    // end the wait (no wall-clock bound to miss on a loaded machine).
    let release;
    const held = new Promise((resolve) => (release = resolve));
    const guard = setTimeout(() => release(), 30_000); // a worker that ignored the deadline fails here, not hangs
    let answered = false;
    origin.setHandler(async () => {
      await held;
      answered = true;
      return { status: 200, body: { data: null } };
    });
    const asked = origin.requests.length;
    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "slow" } }));
    assert.equal(res.headers.get("x-fraiseql-cache"), "ERROR-STALE");
    assert.equal(origin.requests.length, asked + 1, "the origin was asked");
    assert.equal(answered, false, "the stale copy came before the origin answered");
    clearTimeout(guard);
    release();
  });

  it("the deadline covers the whole answer: every caller waiting on a slow body gets the stale copy", async () => {
    const firstRes = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "dribble" } }));
    const first = await nameOf(firstRes);
    await worker.stored(firstRes);
    await sleep(350);
    // Headers at once, the body over 3 s: ten times ORIGIN_TIMEOUT_MS.
    origin.setHandler((req) => ({
      trickleMs: 300,
      pieces: 10,
      body: { data: { user: { __typename: "User", id: "dribble", name: `v${req.seq}` } } },
    }));
    const responses = await Promise.all([0, 1, 2].map(() => worker.fetch("/graphql", gqlPost(Q, { variables: { id: "dribble" } }))));
    for (const res of responses) {
      assert.equal(res.headers.get("x-fraiseql-cache"), "ERROR-STALE");
      assert.equal(await nameOf(res), first);
    }
  });

  // Runs last in this suite: it shuts the origin down for good.
  it("serves stale while the origin is down; 502 when nothing is cached and for mutations", async () => {
    const firstRes = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "down" } }));
    const first = await nameOf(firstRes);
    await worker.stored(firstRes);
    await sleep(350);
    await origin.close();

    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "down" } }));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-fraiseql-cache"), "ERROR-STALE");
    assert.equal(await nameOf(res), first);
    assert.ok(Number(res.headers.get("age")) >= 0);

    const missing = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "never-cached" } }));
    assert.equal(missing.status, 502);
    assert.equal(missing.headers.get("x-fraiseql-cache"), "MISS");
    assert.match(missing.headers.get("content-type"), /application\/json/);
    const body = await missing.json();
    assert.equal(body.errors[0].message, "Origin unreachable");
    assert.doesNotMatch(JSON.stringify(body), /worker\.js|\bat\b.*:\d+:\d+/);

    const mutation = await worker.fetch("/graphql", gqlPost("mutation M { touch { __typename id } }"));
    assert.equal(mutation.status, 502);
    assert.equal(mutation.headers.get("x-fraiseql-cache"), "BYPASS");
    assert.equal((await mutation.json()).errors[0].extensions.code, "BAD_GATEWAY");
  });
});

describe("the origin's answer has a size cap", () => {
  let origin;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    worker = await startWorker({
      vars: { CACHE_TTL_SECONDS: "0.3", STALE_WHILE_REVALIDATE_SECONDS: "0", STALE_IF_ERROR_SECONDS: "60", MAX_RESPONSE_BYTES: "65536" },
      bindings: { ORIGIN_URL: origin.url },
    });
  });
  after(async () => {
    await worker?.dispose();
    await origin?.close();
  });
  beforeEach(() => origin.reset());

  const big = (id) => () => ({ body: { data: { user: { __typename: "User", id, name: "x".repeat(100 * 1024) } } } });

  it("an answer over MAX_RESPONSE_BYTES is not buffered: 502 when nothing is cached", async () => {
    origin.setHandler(big("huge"));
    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "huge" } }));
    assert.equal(res.status, 502);
    assert.equal((await res.json()).errors[0].extensions.code, "BAD_GATEWAY");
  });

  it("an answer over MAX_RESPONSE_BYTES falls back to the stale copy", async () => {
    const firstRes = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "grows" } }));
    const first = await nameOf(firstRes);
    await worker.stored(firstRes);
    await sleep(350);
    origin.setHandler(big("grows"));
    const res = await worker.fetch("/graphql", gqlPost(Q, { variables: { id: "grows" } }));
    assert.equal(res.headers.get("x-fraiseql-cache"), "ERROR-STALE");
    assert.equal(await nameOf(res), first);
  });
});

describe("origin Cache-Control decides the edge lifetime", () => {
  let origin;
  let longTtl;
  let shortTtl;
  before(async () => {
    origin = await startFakeOrigin();
    longTtl = await startWorker({ vars: { CACHE_TTL_SECONDS: "60" }, bindings: { ORIGIN_URL: origin.url } });
    shortTtl = await startWorker({ vars: { CACHE_TTL_SECONDS: "1" }, bindings: { ORIGIN_URL: origin.url } });
  });
  after(async () => {
    await longTtl?.dispose();
    await shortTtl?.dispose();
    await origin?.close();
  });
  beforeEach(() => origin.reset());

  for (const [label, worker, cc, expected] of [
    ["s-maxage wins over max-age and CACHE_TTL_SECONDS=60", () => longTtl, "public, max-age=600, s-maxage=1", "STALE"],
    ["max-age when there is no s-maxage", () => longTtl, "public, max-age=1", "STALE"],
    ["an s-maxage longer than CACHE_TTL_SECONDS=1", () => shortTtl, "public, s-maxage=120", "HIT"],
  ]) {
    it(`${label} (${cc})`, async () => {
      origin.setHandler(() => ({ status: 200, headers: { "cache-control": cc }, body: { data: { user: { __typename: "User", id: label, name: "n" } } } }));
      const vars = { variables: { id: label } };
      const first = await worker().fetch("/graphql", gqlPost(Q, vars));
      await worker().stored(first);
      assert.equal((await worker().fetch("/graphql", gqlPost(Q, vars))).headers.get("x-fraiseql-cache"), "HIT");
      await sleep(1300);
      const later = await worker().fetch("/graphql", gqlPost(Q, vars));
      assert.equal(later.headers.get("x-fraiseql-cache"), expected);
      assert.equal(later.headers.get("cache-control"), cc, "clients still see the origin's Cache-Control");
    });
  }
});
