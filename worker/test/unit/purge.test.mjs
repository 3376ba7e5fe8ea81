// Purge calls against a stub of Cloudflare's API: a refused tag is isolated
// by bisection, and an invocation ends one interval after its last call.
import { describe, it, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { readConfig } from "../../src/config.js";
import { purgeTags, restAfterLastCall } from "../../src/purge/api.js";

const cfg = readConfig({ ZONE_ID: "z", PURGE_API_TOKEN: "t", PURGE_BATCH_SIZE: "8", PURGE_PLAN: "enterprise" });
let calls;
let refused;
const realFetch = globalThis.fetch;
const realError = console.error;

beforeEach(() => {
  calls = [];
  refused = new Set();
  console.error = () => {};
  globalThis.fetch = async (_url, init) => {
    const { tags } = JSON.parse(init.body);
    calls.push({ tags, at: performance.now() });
    const ok = !tags.some((t) => refused.has(t));
    return new Response(JSON.stringify({ success: ok, errors: ok ? [] : [{ code: 1, message: "bad tag" }] }), { status: ok ? 200 : 400 });
  };
});
afterEach(() => {
  globalThis.fetch = realFetch;
  console.error = realError;
});

describe("purge calls", () => {
  it("purge every tag the API accepts and drop only the ones it refuses", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.integer({ min: 0, max: 99 }), { minLength: 1, maxLength: 30 }), fc.array(fc.nat(29), { maxLength: 3 }), async (ids, bad) => {
        calls = [];
        const tags = ids.map((i) => `User:${i}`);
        refused = new Set(bad.filter((i) => i < tags.length).map((i) => tags[i]));
        const { failed } = await purgeTags({ ...cfg, purgeIntervalMs: 0 }, tags);
        assert.deepEqual(failed, []);
        const purged = new Set(calls.filter((c) => !c.tags.some((t) => refused.has(t))).flatMap((c) => c.tags));
        assert.deepEqual([...purged].sort(), tags.filter((t) => !refused.has(t)).sort());
        // Bisection costs a few calls per refused tag, not one per tag.
        assert.ok(calls.length <= Math.ceil(tags.length / 8) + refused.size * 2 * Math.ceil(Math.log2(8) + 1), `${calls.length} calls`);
      }),
      { numRuns: 100 },
    );
  });

  it("space calls by the plan's interval, also after the last one", async () => {
    const pro = { ...cfg, purgeIntervalMs: 200 };
    await purgeTags(pro, ["User:a"]);
    await restAfterLastCall(pro);
    const ended = performance.now();
    assert.ok(ended - calls[0].at >= 190, `the invocation ended ${Math.round(ended - calls[0].at)} ms after its call`);
  });
});
