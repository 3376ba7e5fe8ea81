// One canonical request: the cache key and the request forwarded to the origin
// are derived from the same object, so they cannot disagree.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startWorker, gqlPost, gqlGetPath } from "../test-support/harness.mjs";

const Q = 'query Who { user(id: "1") { __typename id name } }';

describe("one canonical request for the key and the origin", () => {
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

  const keyOf = (res) => res.headers.get("x-fraiseql-cache-key");

  it("keys the query-string parameters the origin reads: ?tenant=b never gets tenant a's answer", async () => {
    origin.setHandler((req) => ({
      status: 200,
      body: { data: { user: { __typename: "User", id: "1", name: new URL(req.url, "http://o").searchParams.get("tenant") } } },
    }));
    const a = await worker.fetch("/graphql?tenant=a", gqlPost(Q));
    await worker.stored(a);
    const b = await worker.fetch("/graphql?tenant=b", gqlPost(Q));
    assert.equal(b.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await b.json()).data.user.name, "b");
    assert.equal(origin.requests[1].url, "/graphql?tenant=b");
    assert.notEqual(keyOf(a), keyOf(b));
  });

  it("strips tracking parameters from both: same entry, and the origin never sees them", async () => {
    const plain = await worker.fetch("/graphql?v=2", gqlPost(Q));
    await worker.stored(plain);
    const tracked = await worker.fetch("/graphql?utm_source=mail&v=2&gclid=x", gqlPost(Q));
    assert.equal(tracked.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(keyOf(tracked), keyOf(plain));
    assert.equal(origin.requests.length, 1);
    assert.equal(origin.requests[0].url, "/graphql?v=2");
  });

  it("keeps variables exact: integers beyond 2^53 are different entries and reach the origin as written", async () => {
    const body = (n) => `{"query":"query Big($n: Int) { user(id: \\"1\\") { __typename id } }","variables":{"n":${n}}}`;
    const post = (n) => ({ method: "POST", headers: { "content-type": "application/json" }, body: body(n) });
    const a = await worker.fetch("/graphql", post("9007199254740993"));
    await worker.stored(a);
    const b = await worker.fetch("/graphql", post("9007199254740992"));
    assert.equal(b.headers.get("x-fraiseql-cache"), "MISS");
    assert.notEqual(keyOf(a), keyOf(b));
    assert.match(origin.requests[0].body, /"variables":\{"n":9007199254740993\}/);
    assert.match(origin.requests[1].body, /"variables":\{"n":9007199254740992\}/);
    const again = await worker.fetch("/graphql", post("9007199254740993"));
    assert.equal(again.headers.get("x-fraiseql-cache"), "HIT");
  });

  it("keys every credential header (an API key too) and forwards it", async () => {
    origin.setHandler((req) => ({
      status: 200,
      body: { data: { user: { __typename: "User", id: "1", name: req.headers["x-api-key"] ?? "none" } } },
    }));
    const k1 = await worker.fetch("/graphql", gqlPost(Q, { headers: { "x-api-key": "k1" } }));
    await worker.stored(k1);
    const k2 = await worker.fetch("/graphql", gqlPost(Q, { headers: { "x-api-key": "k2" } }));
    assert.equal(k2.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await k2.json()).data.user.name, "k2");
    assert.notEqual(keyOf(k1), keyOf(k2));
  });

  it("leaves the load balancer's affinity cookie out of the key but forwards it", async () => {
    const first = await worker.fetch("/graphql", gqlPost(Q, { headers: { cookie: "__cflb=abc" } }));
    await worker.stored(first);
    const other = await worker.fetch("/graphql", gqlPost(Q, { headers: { cookie: "__cflb=def" } }));
    const none = await worker.fetch("/graphql", gqlPost(Q));
    assert.equal(other.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(none.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(keyOf(other), keyOf(first));
    assert.equal(origin.requests[0].headers.cookie, "__cflb=abc");

    // With a session cookie beside it, only the session scopes the entry.
    const s1 = await worker.fetch("/graphql", gqlPost(Q, { headers: { cookie: "__cflb=abc; session=s1" } }));
    await worker.stored(s1);
    const s1b = await worker.fetch("/graphql", gqlPost(Q, { headers: { cookie: "session=s1; __cflb=zzz" } }));
    assert.equal(s1b.headers.get("x-fraiseql-cache"), "HIT");
    assert.notEqual(keyOf(s1), keyOf(first));
    assert.equal(origin.requests[1].headers.cookie, "session=s1; __cflb=abc");
  });

  it("keeps cookies that carry no identity (analytics, Cloudflare's own) out of the key and away from the origin", async () => {
    const Q2 = 'query Who2 { user(id: "2") { __typename id name } }';
    const plain = await worker.fetch("/graphql", gqlPost(Q2));
    await worker.stored(plain);
    const tracked = await worker.fetch("/graphql", gqlPost(Q2, { headers: { cookie: "_ga=GA1.1.123.456; _ga_ABC123=GS1.1.1; __cf_bm=abc; _gid=GA1.2.3; cf_clearance=xyz" } }));
    assert.equal(tracked.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(keyOf(tracked), keyOf(plain));
    assert.equal(origin.requests.length, 1);

    // Any other cookie beside them still makes the request private; only it reaches the origin.
    const session = await worker.fetch("/graphql", gqlPost(Q2, { headers: { cookie: "_ga=GA1.1.1; sid=secret; __cf_bm=abc" } }));
    assert.equal(session.headers.get("x-fraiseql-cache"), "MISS");
    assert.notEqual(keyOf(session), keyOf(plain));
    assert.equal(origin.requests.at(-1).headers.cookie, "sid=secret");

    // Fail safe: a session cookie with an unexpected name, even one that
    // starts like an analytics cookie, is never shared.
    for (const cookie of ["_gateway_session=s1", "__Host-next-auth.session-token=t", "x=1"]) {
      const res = await worker.fetch("/graphql", gqlPost(Q2, { headers: { cookie } }));
      assert.equal(res.headers.get("x-fraiseql-cache"), "MISS", cookie);
      assert.notEqual(keyOf(res), keyOf(plain), cookie);
      assert.equal(origin.requests.at(-1).headers.cookie, cookie);
    }
  });

  it("forwards only keyed, credential and listed headers", async () => {
    await worker.fetch("/graphql", gqlPost(Q, {
      headers: { "x-debug": "1", "accept-language": "fr", "user-agent": "probe/1", traceparent: "00-abc-def-01", accept: "application/json" },
    }));
    const seen = origin.requests[0].headers;
    assert.equal(seen["x-debug"], undefined);
    assert.equal(seen["accept-language"], undefined);
    assert.equal(seen["user-agent"], "probe/1");
    assert.equal(seen.traceparent, "00-abc-def-01");
    assert.equal(seen.accept, "application/json");
  });

  it("same key implies the same forwarded request, whatever form the client used", async () => {
    // no-store: every variant reaches the origin, so each forwarded request can be compared.
    origin.setHandler(() => ({ status: 200, headers: { "cache-control": "no-store" }, body: { data: { user: null } } }));
    const doc = "query V($id: ID!, $f: F) { user(id: $id) { id } }";
    const noisy = "# c\n query  V( $id : ID! ,$f:F ) {\n user(id: $id) { id, } }";
    const variants = [
      ["/graphql?t=1", gqlPost(doc, { variables: { id: "1", f: { a: 1, b: [1, 2] } } })],
      ["/graphql?t=1&utm_medium=x", gqlPost(noisy, { variables: { f: { b: [1, 2], a: 1 }, id: "1" }, operationName: "V" })],
      [gqlGetPath({ query: noisy, variables: { id: "1", f: { a: 1, b: [1, 2] } }, t: "1" }), {}],
      [
        `/graphql?t=1&variables=${encodeURIComponent('{"f":{"a":1,"b":[1,2]},"id":"1"}')}`,
        { method: "POST", headers: { "content-type": "application/graphql" }, body: doc },
      ],
      ["/graphql?t=2", gqlPost(doc, { variables: { id: "1", f: { a: 1, b: [1, 2] } } })],
      ["/graphql?t=1", gqlPost(doc, { variables: { id: "1", f: { a: 1, b: [2, 1] } } })],
      ["/graphql?t=1", gqlPost(doc, { variables: { id: "1", f: { a: 1, b: [1, 2] } }, headers: { accept: "application/graphql-response+json" } })],
    ];
    const byKey = new Map();
    for (const [path, init] of variants) {
      const res = await worker.fetch(path, init);
      assert.equal(res.status, 200, path);
      const req = origin.requests.at(-1);
      const forwarded = JSON.stringify([req.method, req.url, req.body, req.headers.accept]);
      if (!byKey.has(keyOf(res))) byKey.set(keyOf(res), new Set());
      byKey.get(keyOf(res)).add(forwarded);
    }
    assert.equal(byKey.size, 4, "the first four variants share a key; the last three each differ");
    for (const forwardedSet of byKey.values()) assert.equal(forwardedSet.size, 1);
  });
});
