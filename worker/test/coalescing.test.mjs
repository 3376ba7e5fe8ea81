import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startWorker, gqlPost } from "../test-support/harness.mjs";

const Q = "query Hot($id: ID!) { user(id: $id) { __typename id name } }";

describe("request coalescing", () => {
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
  beforeEach(() => origin.reset());

  it("200 concurrent identical misses share one origin fetch", async () => {
    origin.state.delayMs = 100;
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => worker.fetch("/graphql", gqlPost(Q, { variables: { id: "hot" } }))),
    );
    const bodies = await Promise.all(responses.map((r) => r.text()));
    assert.ok(origin.requests.length <= 2, `${origin.requests.length} origin requests`);
    assert.ok(responses.every((r) => r.status === 200));
    // Under load a second fetch is allowed (above); each caller still gets an
    // answer the origin made, so there are no more answers than fetches.
    assert.ok(new Set(bodies).size <= origin.requests.length, `${new Set(bodies).size} answers from ${origin.requests.length} fetches`);
    // One MISS per origin fetch; everyone else shared it, or arrived after it
    // was stored and got a HIT: both are right.
    const statuses = responses.map((r) => r.headers.get("x-fraiseql-cache"));
    assert.equal(statuses.filter((s) => s === "MISS").length, origin.requests.length, statuses.join(","));
    assert.ok(statuses.every((s) => ["MISS", "COALESCED", "HIT"].includes(s)), statuses.join(","));
  });

  for (const [label, headers] of [
    ["Cache-Control: private", { "cache-control": "private, max-age=60" }],
    ["Cache-Control: no-store", { "cache-control": "no-store" }],
    ["Set-Cookie", { "set-cookie": "session=abc; HttpOnly" }],
  ]) {
    it(`never hands an answer with ${label} to the other callers waiting on it`, async () => {
      origin.state.delayMs = 150;
      origin.setHandler((req) => ({ status: 200, headers, body: { data: { user: { __typename: "User", id: "p", name: `for request ${req.seq}` } } } }));
      const responses = await Promise.all(
        Array.from({ length: 5 }, () => worker.fetch("/graphql", gqlPost(Q, { variables: { id: `private-${label}` } }))),
      );
      const names = await Promise.all(responses.map(async (r) => (await r.json()).data.user.name));
      assert.equal(new Set(names).size, 5, `each caller gets the answer made for it: ${names}`);
      assert.ok(responses.every((r) => r.headers.get("x-fraiseql-cache") !== "COALESCED"));
    });
  }

  it("shares an error only among callers with the same credentials", async () => {
    origin.state.delayMs = 100;
    origin.setHandler((req) =>
      req.headers.authorization === "Bearer bad"
        ? { status: 401, body: { errors: [{ message: "bad token" }] } }
        : { status: 200, body: { data: { user: { __typename: "User", id: "e", name: req.headers.authorization } } } },
    );
    const as = (token) => worker.fetch("/graphql", gqlPost(Q, { variables: { id: "e" }, headers: { authorization: token } }));
    const responses = await Promise.all([as("Bearer bad"), as("Bearer good"), as("Bearer bad"), as("Bearer good")]);
    assert.deepEqual(responses.map((r) => r.status), [401, 200, 401, 200]);
    assert.equal((await responses[1].json()).data.user.name, "Bearer good");
    assert.equal(origin.requests.length, 2, "one fetch per credential scope");
  });

  it("does not coalesce mutations", async () => {
    origin.state.delayMs = 50;
    await Promise.all(
      Array.from({ length: 5 }, () => worker.fetch("/graphql", gqlPost('mutation { updateUser(id: "m", name: "n") { id } }'))),
    );
    assert.equal(origin.requests.length, 5);
  });
});
