import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { startFakeOrigin, startWorker, gqlPost, gqlGetPath, sleep, sha256 } from "../test-support/harness.mjs";

// cache.put runs in ctx.waitUntil, after the response; positive cases poll the
// cache (worker.stored), negative ones give a would-be put time to land.
const settle = () => sleep(150);

const GET_USER = "query GetUser($id: ID!) { user(id: $id) { __typename id name } }";
const GET_USER_NOISY = `
  # fetch one user
  query   GetUser( $id : ID! ) {
    user(id: $id) {   __typename, id,
      name # trailing comment
    }
  }
`;

describe("query caching", () => {
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

  it("misses, then hits without calling the origin again", async () => {
    const first = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "m1" } }));
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(first.headers.get("age"), "0");
    const firstBody = await first.json();
    assert.deepEqual(firstBody, { data: { user: { __typename: "User", id: "m1", name: "v1" } } });
    await worker.stored(first);

    const second = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "m1" } }));
    assert.equal(second.headers.get("x-fraiseql-cache"), "HIT");
    assert.match(second.headers.get("age"), /^\d+$/);
    assert.deepEqual(await second.json(), firstBody);
    assert.equal(origin.requests.length, 1);
    assert.equal(origin.requests[0].method, "POST");
    assert.equal(origin.requests[0].url, "/graphql");
  });

  it("serves POST, GET, reformatted text and persisted queries from one normalized entry", async () => {
    const vars = { id: "n1", filter: { b: 2, a: 1 } };
    const miss = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: vars }));
    assert.equal(miss.headers.get("x-fraiseql-cache"), "MISS");
    await worker.stored(miss);

    // Same document with comments, commas and whitespace; variables with keys reordered.
    const get = await worker.fetch(gqlGetPath({ query: GET_USER_NOISY, variables: { filter: { a: 1, b: 2 }, id: "n1" } }));
    assert.equal(get.headers.get("x-fraiseql-cache"), "HIT");

    // APQ registration request (text + hash) hits the same entry and teaches the edge the hash.
    const pq = { persistedQuery: { version: 1, sha256Hash: sha256(GET_USER_NOISY) } };
    const register = await worker.fetch("/graphql", gqlPost(GET_USER_NOISY, { variables: vars, extensions: pq }));
    assert.equal(register.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(register.headers.get("x-fraiseql-cache-key"), miss.headers.get("x-fraiseql-cache-key"));
    await worker.registered(pq.persistedQuery.sha256Hash);

    // Hash-only, over GET and POST.
    const hashOnlyGet = await worker.fetch(gqlGetPath({ variables: vars, extensions: pq }));
    assert.equal(hashOnlyGet.headers.get("x-fraiseql-cache"), "HIT");
    const hashOnlyPost = await worker.fetch("/graphql", gqlPost(undefined, { variables: vars, extensions: pq }));
    assert.equal(hashOnlyPost.headers.get("x-fraiseql-cache"), "HIT");
    assert.deepEqual(await hashOnlyPost.json(), await miss.json());

    // An explicit operationName equal to the only operation is the same request.
    const named = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: vars, operationName: "GetUser" }));
    assert.equal(named.headers.get("x-fraiseql-cache"), "HIT");

    assert.equal(origin.requests.length, 1);
  });

  it("answers an unknown persisted-query hash itself, refuses a lying one, forwards a known one with its text", async () => {
    const unknown = { persistedQuery: { version: 1, sha256Hash: "a".repeat(64) } };
    for (const res of [
      await worker.fetch(gqlGetPath({ variables: { id: "p1" }, extensions: unknown })),
      await worker.fetch("/graphql", gqlPost(undefined, { variables: { id: "p1" }, extensions: unknown })),
    ]) {
      assert.equal(res.status, 200);
      assert.equal((await res.json()).errors[0].extensions.code, "PERSISTED_QUERY_NOT_FOUND");
    }

    // A hash that does not match the text is never learned, cached or forwarded.
    const lying = { persistedQuery: { version: 1, sha256Hash: sha256("query Other { x }") } };
    const mismatch = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "p1" }, extensions: lying }));
    assert.equal(mismatch.status, 400);
    await settle();
    const probe = await worker.fetch(gqlGetPath({ variables: { id: "p1" }, extensions: lying }));
    assert.equal((await probe.json()).errors[0].extensions.code, "PERSISTED_QUERY_NOT_FOUND");
    assert.equal(origin.requests.length, 0);

    // Known hash, not yet cached for these variables: the origin receives the
    // text (in canonical form) and no hash, since the edge is the registry.
    const text = "query KnownPq($id: ID!) { user(id: $id) { __typename id } }";
    const pq = { persistedQuery: { version: 1, sha256Hash: sha256(text) } };
    await worker.fetch("/graphql", gqlPost(text, { variables: { id: "p2" }, extensions: pq }));
    await worker.registered(pq.persistedQuery.sha256Hash);
    origin.reset();
    const hashOnly = await worker.fetch("/graphql", gqlPost(undefined, { variables: { id: "p3" }, extensions: pq }));
    assert.equal(hashOnly.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(origin.requests.length, 1);
    assert.match(origin.requests[0].params.query, /^query KnownPq\(\$id:ID!\)\{.*user\(id:\$id\)\{.*__typename id/);
    assert.equal(origin.requests[0].params.operationName, "KnownPq");
    assert.equal(origin.requests[0].params.extensions, undefined);
  });

  it("keeps different variables in different entries", async () => {
    const a = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "v-a" } }));
    const b = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "v-b" } }));
    assert.equal(a.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(b.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await a.json()).data.user.id, "v-a");
    assert.equal((await b.json()).data.user.id, "v-b");
    assert.notEqual(a.headers.get("x-fraiseql-cache-key"), b.headers.get("x-fraiseql-cache-key"));
    await worker.stored(a);
    const a2 = await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "v-a" } }));
    assert.equal(a2.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal((await a2.json()).data.user.id, "v-a");
    assert.equal(origin.requests.length, 2);
  });

  it("treats a different selection or operation name as a different entry", async () => {
    await worker.stored(await worker.fetch("/graphql", gqlPost(GET_USER, { variables: { id: "s1" } })));
    const other = await worker.fetch(
      "/graphql",
      gqlPost("query GetUser($id: ID!) { user(id: $id) { __typename id } }", { variables: { id: "s1" } }),
    );
    assert.equal(other.headers.get("x-fraiseql-cache"), "MISS");
    const renamed = await worker.fetch(
      "/graphql",
      gqlPost(GET_USER.replace("GetUser", "GetUser2"), { variables: { id: "s1" } }),
    );
    assert.equal(renamed.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(origin.requests.length, 3);
  });

  it("tags entries with the operation, every Type:id and every type in the data", async () => {
    origin.setHandler(() => ({
      status: 200,
      body: {
        data: {
          viewer: {
            __typename: "User",
            id: "u1",
            posts: [
              { __typename: "Post", id: 10, author: { __typename: "User", id: "u1" } },
              { __typename: "Post", id: "a b,c", tags: [{ __typename: "Tag", id: "t1" }] },
              { __typename: "Post", title: "no id" },
              { id: "no-typename" },
            ],
          },
        },
      },
    }));
    const query =
      "query Feed { viewer { __typename id posts { __typename id title author { __typename id } tags { __typename id } } } }";
    // The Post shown without an id is reachable too: any Post mutation purges gql-noid:Post.
    const expected = "gql-op:Feed,User:u1,Post:10,Post:a%20b%2Cc,Tag:t1,gql-type:User,gql-type:Post,gql-type:Tag,gql-noid:Post";
    const res = await worker.fetch("/graphql", gqlPost(query));
    assert.equal(res.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(res.headers.get("cache-tag"), expected);
    await worker.stored(res);
    const hit = await worker.fetch("/graphql", gqlPost(query));
    assert.equal(hit.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(hit.headers.get("cache-tag"), expected);
    // Internal bookkeeping headers never reach the client.
    for (const name of ["x-fraiseql-meta", "x-fraiseql-origin-cache-control"]) {
      assert.equal(hit.headers.get(name), null, name);
    }

    const anon = await worker.fetch("/graphql", gqlPost("{ viewer { __typename id } }"));
    assert.match(anon.headers.get("cache-tag"), /^gql-op-anonymous,User:u1/);
  });

  it("encodes non-ASCII ids (even lone surrogates) into printable ASCII tags", async () => {
    origin.setHandler(() => ({
      status: 200,
      headers: { "content-type": "application/json" },
      body: '{"data":{"u":{"__typename":"User","id":"caf\\u00e9 \\ud800"}}}',
    }));
    const res = await worker.fetch("/graphql", gqlPost("query Odd { u { __typename id } }"));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(res.headers.get("cache-tag"), "gql-op:Odd,User:caf%C3%A9%20%EF%BF%BD,gql-type:User");
  });

  it("does not store an entry whose Cache-Tag header would exceed 16 KB", async () => {
    const users = Array.from({ length: 600 }, (_, i) => ({
      __typename: "User",
      id: `00000000-0000-0000-0000-${String(i).padStart(12, "0")}`,
    }));
    origin.setHandler(() => ({ status: 200, body: { data: { users } } }));
    const query = "query AllUsers { users { __typename id } }";
    const first = await worker.fetch("/graphql", gqlPost(query));
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("cache-tag"), null);
    assert.equal((await first.json()).data.users.length, 600);
    await settle();
    const second = await worker.fetch("/graphql", gqlPost(query));
    assert.equal(second.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(origin.requests.length, 2);
    assert.ok(worker.logs.some((l) => l.includes("cache_tags_overflow")));
  });

  for (const [label, reply] of [
    ["GraphQL errors", { status: 200, body: { data: { user: null }, errors: [{ message: "boom" }] } }],
    ["Set-Cookie", { status: 200, headers: { "set-cookie": "s=1" }, body: { data: { user: null } } }],
    ["Cache-Control: private", { status: 200, headers: { "cache-control": "private, max-age=60" }, body: { data: { x: 1 } } }],
    ["Cache-Control: no-store", { status: 200, headers: { "cache-control": "no-store" }, body: { data: { x: 1 } } }],
    ["a 4xx status", { status: 400, body: { errors: [{ message: "bad" }] } }],
    ["an unkeyed Vary header", { status: 200, headers: { vary: "X-Tenant" }, body: { data: { x: 1 } } }],
    ["Cache-Control: no-cache", { status: 200, headers: { "cache-control": "public, no-cache" }, body: { data: { x: 1 } } }],
    ["Cache-Control: max-age=0", { status: 200, headers: { "cache-control": "public, max-age=0" }, body: { data: { x: 1 } } }],
    ["Cache-Control: s-maxage=0", { status: 200, headers: { "cache-control": "max-age=60, s-maxage=0" }, body: { data: { x: 1 } } }],
  ]) {
    it(`never stores a response with ${label}`, async () => {
      origin.setHandler(() => reply);
      const query = `query NotStored { x }`;
      const vars = { label };
      const first = await worker.fetch("/graphql", gqlPost(query, { variables: vars }));
      assert.equal(first.status, reply.status);
      assert.equal(first.headers.get("x-fraiseql-cache"), "MISS");
      await settle();
      const second = await worker.fetch("/graphql", gqlPost(query, { variables: vars }));
      assert.equal(second.headers.get("x-fraiseql-cache"), "MISS");
      assert.equal(origin.requests.length, 2);
    });
  }

  it("passes the origin's Cache-Control through to clients, not the edge lifetime", async () => {
    origin.setHandler(() => ({ status: 200, headers: { "cache-control": "public, max-age=5" }, body: { data: { x: 1 } } }));
    await worker.stored(await worker.fetch("/graphql", gqlPost("query CC { x }")));
    const hit = await worker.fetch("/graphql", gqlPost("query CC { x }"));
    assert.equal(hit.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(hit.headers.get("cache-control"), "public, max-age=5");
  });

  it("selects the named operation in a multi-operation document", async () => {
    const doc = "query A { a } query B { b }";
    const b1 = await worker.fetch("/graphql", gqlPost(doc, { operationName: "B" }));
    assert.equal(b1.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal(b1.headers.get("cache-tag"), "gql-op:B");
    await worker.stored(b1);
    const a1 = await worker.fetch("/graphql", gqlPost(doc, { operationName: "A" }));
    assert.equal(a1.headers.get("x-fraiseql-cache"), "MISS");
    const b2 = await worker.fetch("/graphql", gqlPost(doc, { operationName: "B" }));
    assert.equal(b2.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(origin.requests.length, 2);
  });

  it("forwards GET requests without a query (health checks) untouched", async () => {
    const res = await worker.fetch("/healthz?probe=1");
    assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
    assert.equal(origin.requests[0].url, "/healthz?probe=1");
  });
});

describe("per-user isolation", () => {
  let origin;
  let scoped;
  let bypass;
  const whoAmI = (req) => ({
    status: 200,
    body: {
      data: {
        me: {
          __typename: "User",
          id: req.headers.authorization || req.headers.cookie || "anonymous",
          seq: req.seq,
        },
      },
    },
  });

  before(async () => {
    origin = await startFakeOrigin();
    scoped = await startWorker({ bindings: { ORIGIN_URL: origin.url } });
    bypass = await startWorker({ vars: { CACHE_AUTH_MODE: "bypass" }, bindings: { ORIGIN_URL: origin.url } });
  });
  after(async () => {
    await scoped?.dispose();
    await bypass?.dispose();
    await origin?.close();
  });
  beforeEach(() => {
    origin.reset();
    origin.setHandler(whoAmI);
  });

  const ME = "query Me { me { __typename id } }";

  it("scope mode: users A and B never share an entry", async () => {
    const asA = { headers: { authorization: "Bearer token-A" } };
    const asB = { headers: { authorization: "Bearer token-B" } };
    const a1 = await scoped.fetch("/graphql", gqlPost(ME, asA));
    assert.equal(a1.headers.get("x-fraiseql-cache"), "MISS");
    await scoped.stored(a1);
    const b1 = await scoped.fetch("/graphql", gqlPost(ME, asB));
    assert.equal(b1.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await b1.json()).data.me.id, "Bearer token-B");
    assert.notEqual(a1.headers.get("x-fraiseql-cache-key"), b1.headers.get("x-fraiseql-cache-key"));
    await scoped.stored(b1);
    const a2 = await scoped.fetch("/graphql", gqlPost(ME, asA));
    assert.equal(a2.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal((await a2.json()).data.me.id, "Bearer token-A");
    const b2 = await scoped.fetch("/graphql", gqlPost(ME, asB));
    assert.equal(b2.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal((await b2.json()).data.me.id, "Bearer token-B");

    // Anonymous and cookie-authenticated callers get their own entries too.
    const anon = await scoped.fetch("/graphql", gqlPost(ME));
    assert.equal(anon.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await anon.json()).data.me.id, "anonymous");
    const cookie = await scoped.fetch("/graphql", gqlPost(ME, { headers: { cookie: "session=c1" } }));
    assert.equal(cookie.headers.get("x-fraiseql-cache"), "MISS");
    assert.equal((await cookie.json()).data.me.id, "session=c1");

    assert.equal(origin.requests.length, 4);
    assert.equal(origin.requests[0].headers.authorization, "Bearer token-A");
  });

  it("bypass mode: authenticated requests are never cached, anonymous ones are", async () => {
    const asA = { headers: { authorization: "Bearer token-A" } };
    for (let i = 0; i < 2; i++) {
      const res = await bypass.fetch("/graphql", gqlPost(ME, asA));
      assert.equal(res.headers.get("x-fraiseql-cache"), "BYPASS");
      assert.equal((await res.json()).data.me.id, "Bearer token-A");
      await settle();
    }
    const cookie = await bypass.fetch("/graphql", gqlPost(ME, { headers: { cookie: "session=1" } }));
    assert.equal(cookie.headers.get("x-fraiseql-cache"), "BYPASS");
    assert.equal(origin.requests.length, 3);

    const anon1 = await bypass.fetch("/graphql", gqlPost(ME));
    assert.equal(anon1.headers.get("x-fraiseql-cache"), "MISS");
    await bypass.stored(anon1);
    const anon2 = await bypass.fetch("/graphql", gqlPost(ME));
    assert.equal(anon2.headers.get("x-fraiseql-cache"), "HIT");
    assert.equal(origin.requests.length, 4);
  });
});
