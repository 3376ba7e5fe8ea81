// GraphQL over HTTP: the rows of the conformance table in README.md.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  startFakeOrigin,
  startFakeCloudflareApi,
  startWorker,
  gqlPost,
  gqlGetPath,
  sha256,
  waitFor,
  rawRequest,
} from "../test-support/harness.mjs";

const MUTATION = 'mutation Rename { updateUser(id: "c1", name: "x") { id name } }';
const QUERY = 'query One { user(id: "c1") { id name } }';

describe("GraphQL over HTTP", () => {
  let origin;
  let api;
  let worker;
  before(async () => {
    origin = await startFakeOrigin();
    api = await startFakeCloudflareApi();
    worker = await startWorker({
      vars: { CF_API_BASE: api.url, PURGE_REPEAT_AFTER_SECONDS: "600" },
      bindings: { ORIGIN_URL: origin.url, ZONE_ID: "z", PURGE_API_TOKEN: "t" },
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

  async function assertRefused(res, status, code) {
    assert.equal(res.status, status);
    assert.equal(res.headers.get("cache-control"), "no-store");
    const body = await res.json();
    assert.equal(body.errors[0].extensions.code, code);
    assert.equal(origin.requests.length + origin.upgrades.length, 0, "never reaches the origin");
  }

  describe("a GET that carries a mutation gets 405 with Allow: POST", () => {
    it("as ?query=", async () => {
      const res = await worker.fetch(gqlGetPath({ query: MUTATION }));
      assert.equal(res.headers.get("allow"), "POST");
      await assertRefused(res, 405, "METHOD_NOT_ALLOWED");
    });

    it("as the operation an operationName selects in a multi-operation document", async () => {
      const res = await worker.fetch(gqlGetPath({ query: `${QUERY} ${MUTATION}`, operationName: "Rename" }));
      assert.equal(res.headers.get("allow"), "POST");
      await assertRefused(res, 405, "METHOD_NOT_ALLOWED");
      const query = await worker.fetch(gqlGetPath({ query: `${QUERY} ${MUTATION}`, operationName: "One" }));
      assert.equal(query.status, 200, "the query of the same document is fine");
    });

    it("as a persisted-query hash", async () => {
      const pq = { persistedQuery: { version: 1, sha256Hash: sha256(MUTATION) } };
      await worker.fetch("/graphql", gqlPost(MUTATION, { extensions: pq }));
      await worker.registered(pq.persistedQuery.sha256Hash);
      origin.reset();
      const res = await worker.fetch(gqlGetPath({ extensions: pq }));
      assert.equal(res.headers.get("allow"), "POST");
      await assertRefused(res, 405, "METHOD_NOT_ALLOWED");
    });

    it("even with an Upgrade header", async () => {
      const res = await worker.fetch(gqlGetPath({ query: MUTATION }), { headers: { upgrade: "websocket" } });
      await assertRefused(res, 405, "METHOD_NOT_ALLOWED");
    });
  });

  describe("POST bodies are read by media type", () => {
    for (const type of ["application/json", "application/json; charset=utf-8", "application/graphql+json"]) {
      it(`${type}: parsed, classified, cached`, async () => {
        const body = JSON.stringify({ query: QUERY });
        const first = await worker.fetch("/graphql", { method: "POST", headers: { "content-type": type }, body });
        assert.equal(first.status, 200);
        assert.ok(["MISS", "HIT"].includes(first.headers.get("x-fraiseql-cache")));
        assert.equal(origin.requests.length <= 1, true);
      });
    }

    it("application/graphql: the body is the document, and a mutation in it purges", async () => {
      const res = await worker.fetch("/graphql", {
        method: "POST",
        headers: { "content-type": "application/graphql" },
        body: MUTATION,
      });
      assert.deepEqual((await res.json()).data, { updateUser: { id: "c1", name: "x" } });
      assert.equal(origin.requests[0].headers["content-type"], "application/json");
      await waitFor(() => api.purges.length >= 1);
      assert.deepEqual(api.purges[0].body.tags, ["User:c1", "gql-noid:User"]);
    });

    for (const type of [
      "text/plain",
      "application/x-www-form-urlencoded",
      "application/xml",
      "multipart/form-data; boundary=x",
      "application/json; charset=latin1",
      null,
    ]) {
      it(`${type ?? "no Content-Type"}: 415, never forwarded`, async () => {
        const headers = type ? { "content-type": type } : {};
        const res = await worker.fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query: MUTATION }) });
        assert.match(res.headers.get("accept-post"), /application\/json/);
        await assertRefused(res, 415, "UNSUPPORTED_MEDIA_TYPE");
      });
    }

    it("text/plain with an Upgrade header is still refused", async () => {
      const res = await rawRequest(worker, "/graphql", {
        method: "POST",
        headers: { "content-type": "text/plain", upgrade: "h2c", connection: "upgrade" },
        body: JSON.stringify({ query: MUTATION }),
      });
      assert.equal(res.status, 415);
      assert.equal(JSON.parse(res.text).errors[0].extensions.code, "UNSUPPORTED_MEDIA_TYPE");
      assert.equal(origin.requests.length, 0);
    });
  });

  describe("400 in GraphQL shape", () => {
    it("an empty batch", async () => {
      const res = await worker.fetch("/graphql", { method: "POST", headers: { "content-type": "application/json" }, body: "[]" });
      await assertRefused(res, 400, "BAD_REQUEST");
    });

    it("a GET with variables but no query", async () => {
      await assertRefused(await worker.fetch(gqlGetPath({ variables: { id: "1" } })), 400, "BAD_REQUEST");
    });

    it("a GET with only an operationName", async () => {
      await assertRefused(await worker.fetch(gqlGetPath({ operationName: "One" })), 400, "BAD_REQUEST");
    });

    it("a document that is not executable (type definitions)", async () => {
      await assertRefused(await worker.fetch("/graphql", gqlPost("type T { a: Int }")), 400, "BAD_REQUEST");
    });
  });

  it("answers in application/graphql-response+json when the client accepts it", async () => {
    const res = await worker.fetch(gqlGetPath({ variables: {} }), {
      headers: { accept: "application/graphql-response+json, application/json;q=0.9" },
    });
    assert.equal(res.status, 400);
    assert.match(res.headers.get("content-type"), /^application\/graphql-response\+json/);
    const plain = await worker.fetch(gqlGetPath({ variables: {} }));
    assert.match(plain.headers.get("content-type"), /^application\/json/);
  });

  it("forwards a WebSocket handshake without GraphQL parameters, under the same header policy", async () => {
    const res = await worker.fetch("/graphql", {
      headers: {
        upgrade: "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
        "sec-websocket-protocol": "graphql-transport-ws",
        "x-not-forwarded": "1",
        authorization: "Bearer ws",
      },
    });
    assert.equal(res.status, 101);
    res.webSocket?.accept();
    res.webSocket?.close();
    await waitFor(() => origin.upgrades.length === 1);
    const seen = origin.upgrades[0].headers;
    assert.equal(seen["sec-websocket-protocol"], "graphql-transport-ws");
    assert.equal(seen.authorization, "Bearer ws");
    assert.equal(seen["x-not-forwarded"], undefined);
  });
});
