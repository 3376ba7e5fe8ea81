// What may be stored and for how long, what may be shared, and which cookies
// make a request private.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { boundedLifetime, isPrivate, storagePolicy } from "../../src/cache/policy.js";
import { readConfig } from "../../src/config.js";
import { splitCookies } from "../../src/cookies.js";

const cfg = readConfig({});
const answer = (headers, status = 200) => new Response("{}", { status, headers: { "content-type": "application/json", ...headers } });
const data = { data: { a: 1 } };

describe("storage policy", () => {
  it("takes s-maxage over max-age over CACHE_TTL_SECONDS", () => {
    assert.equal(storagePolicy(cfg, answer({ "cache-control": "max-age=100, s-maxage=20" }), data).ttl, 20);
    assert.equal(storagePolicy(cfg, answer({ "cache-control": "max-age=100" }), data).ttl, 100);
    assert.equal(storagePolicy(cfg, answer({}), data).ttl, 60);
  });

  it("never serves anything older than LOCAL_INVALIDATION_SECONDS, whatever the origin allows", () => {
    fc.assert(
      fc.property(fc.nat(100000), fc.nat(100000), fc.nat(100000), fc.integer({ min: 1, max: 3600 }), (ttl, swr, sie, horizon) => {
        const b = boundedLifetime({ localInvalidationSeconds: horizon }, { ttl: ttl + 1, swr, sie });
        assert.ok(b.ttl > 0 && b.ttl + b.swr <= horizon && b.ttl + b.sie <= horizon);
        assert.ok(b.ttl <= ttl + 1 && b.swr <= swr && b.sie <= sie);
      }),
    );
    const long = storagePolicy(cfg, answer({ "cache-control": "public, s-maxage=3600, stale-if-error=86400" }), data);
    assert.deepEqual(long, { ttl: 300, swr: 0, sie: 0 });
  });

  for (const [label, headers, status, payload] of [
    ["private", { "cache-control": "private, max-age=60" }, 200, data],
    ["no-store", { "cache-control": "no-store" }, 200, data],
    ["no-cache", { "cache-control": "no-cache" }, 200, data],
    ["max-age=0", { "cache-control": "max-age=0" }, 200, data],
    ["a session cookie", { "set-cookie": "sid=1" }, 200, data],
    ["an unkeyed Vary", { vary: "x-tenant" }, 200, data],
    ["errors", {}, 200, { data: null, errors: [{ message: "x" }] }],
    ["a 503", {}, 503, data],
  ]) {
    it(`stores no answer with ${label}`, () => assert.equal(storagePolicy(cfg, answer(headers, status), payload), null));
  }

  it("shares with waiting callers nothing made for one caller", () => {
    assert.equal(isPrivate(cfg, new Headers({ "cache-control": "public, max-age=5" })), false);
    assert.equal(isPrivate(cfg, new Headers({ "set-cookie": "__cflb=abc" })), false, "the affinity cookie is routing, not identity");
    for (const h of [{ "cache-control": "private" }, { "cache-control": "no-store" }, { "set-cookie": "s=1" }]) assert.equal(isPrivate(cfg, new Headers(h)), true);
  });
});

describe("cookies", () => {
  const split = (header) => splitCookies(cfg, header);

  it("drop analytics and Cloudflare cookies, route with __cflb, and treat every other cookie as a credential", () => {
    assert.deepEqual(split("_ga=GA1.1.1; _ga_ABC=1; __cf_bm=x; cf_clearance=y; _gid=z"), { credentials: [], routing: [] });
    assert.deepEqual(split("__cflb=lb; sid=s"), { credentials: ["sid=s"], routing: ["__cflb=lb"] });
  });

  it("fail safe: any name nobody listed is a credential", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.-]{0,20}$/), (name) => {
        const listed = cfg.ignoredCookies.matches(name) || cfg.unkeyedCookies.has(name);
        fc.pre(!listed);
        assert.deepEqual(split(`_ga=1; ${name}=v`).credentials, [`${name}=v`]);
      }),
    );
    for (const name of ["_gateway_session", "_gat", "_gax", "session", "__Host-sid", "__cf_bm2"]) {
      assert.equal(split(`${name}=v`).credentials.length, name === "_gat" ? 0 : 1, name);
    }
  });
});
