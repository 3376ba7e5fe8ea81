// The edge worker's four figures, measured in one run in one workerd (through
// Miniflare). Prints numbers and ratios; asserts nothing.
// Usage: npm run bench [-- iterations]
//
// The origin runs inside the same workerd (the worker's outbound fetches go to
// it), so its 50 ms is 50 ms and no Node HTTP server sits in the miss path;
// calls to any other host (the Cloudflare API) pass through to a loopback fake.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { WORKER_DIR, startFakeCloudflareApi, startWorker, gqlPost, sleep, waitFor, INJECTED_TYPENAME } from "../test-support/harness.mjs";

const N = Number(process.argv[2]) || 300;
const WARMUP = 50;
const ORIGIN_DELAY_MS = 50;
const MISSES = Math.max(30, Math.round(N / 3));
const CONCURRENT = 200;
const MUTATIONS = 60;
const QUERY = "query Bench($id: ID!) { user(id: $id) { __typename id name } }";
const ORIGIN_HOST = "origin.bench.test";
const FLOOR_HOST = "floor.bench.test";
const PASS_HOST = "pass.bench.test";

const ORIGIN_SCRIPT = `
let requests = 0;
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.host !== "${ORIGIN_HOST}") return fetch(request);
    if (url.pathname === "/__count") return new Response(String(requests));
    requests += 1;
    const body = await request.json();
    await scheduler.wait(${ORIGIN_DELAY_MS});
    const id = (body.variables && body.variables.id) || "1";
    const user = { __typename: "User", ${INJECTED_TYPENAME}: "User", id, name: "v" + requests };
    const data = body.query.startsWith("mutation") ? { updateUser: user } : { user };
    return new Response(JSON.stringify({ data }), { headers: { "content-type": "application/json" } });
  },
};`;

const workers = [
  { name: "origin", modules: true, script: ORIGIN_SCRIPT, compatibilityDate: "2026-04-01", routes: [`${ORIGIN_HOST}/*`] },
  // The floor: a worker that answers a constant.
  {
    name: "floor",
    modules: true,
    script: `export default { fetch() { return new Response('{"data":{"user":{"__typename":"User","id":"hot","name":"v1"}}}', { headers: { "content-type": "application/json" } }); } };`,
    compatibilityDate: "2026-04-01",
    routes: [`${FLOOR_HOST}/*`],
  },
  // References, not targets: the least any worker can do on a hit (one
  // cache.match) and on a miss (one fetch).
  {
    name: "cache-only",
    modules: true,
    script: `export default { async fetch(req) { const key = new Request("https://cache-only.bench.test/k"); let r = await caches.default.match(key); if (!r) { await caches.default.put(key, new Response('{"data":{"user":{"__typename":"User","id":"hot","name":"v1"}}}', { headers: { "content-type": "application/json", "cache-control": "max-age=3600" } })); r = await caches.default.match(key); } return new Response(r.body, r); } };`,
    compatibilityDate: "2026-04-01",
    routes: ["cache-only.bench.test/*"],
  },
  {
    name: "pass-through",
    modules: true,
    script: `export default { async fetch(req) { const r = await fetch("https://${ORIGIN_HOST}/graphql", { method: "POST", body: await req.text(), headers: { "content-type": "application/json" } }); return new Response(await r.text(), r); } };`,
    compatibilityDate: "2026-04-01",
    routes: [`${PASS_HOST}/*`],
    outboundService: "origin",
  },
];

function quantile(samples, q) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const median = (s) => quantile(s, 0.5);

async function timed(fetcher, path, init, expected) {
  const started = performance.now();
  const res = await fetcher(path, init);
  await res.arrayBuffer();
  const ms = performance.now() - started;
  const status = res.headers.get("x-fraiseql-cache");
  if (expected && status !== expected) throw new Error(`expected ${expected}, got ${status}`);
  return ms;
}

const api = await startFakeCloudflareApi();
const worker = await startWorker({
  vars: { CF_API_BASE: api.url },
  bindings: { ORIGIN_URL: `https://${ORIGIN_HOST}`, ZONE_ID: "bench-zone", PURGE_API_TOKEN: "bench-token", ORIGIN_AUTH_TOKEN: "bench-origin" },
  // Mutations are what is measured here, not the per-client limit.
  workerOverrides: { outboundService: "origin", ratelimits: { MUTATION_LIMITER: { simple: { limit: 1e9, period: 60 } } } },
  extraWorkers: workers,
});
const on = (host) => (path, init) => worker.mf.dispatchFetch(`https://${host}${path}`, init);
const floor = on(FLOOR_HOST);
const passThrough = on(PASS_HOST);
const originCount = async () => Number(await (await on(ORIGIN_HOST)("/__count")).text());
const hitInit = () => gqlPost(QUERY, { variables: { id: "hot" } });

try {
  await worker.stored(await worker.fetch("/graphql", hitInit()));

  // 1. Hit cost against the floor, interleaved so drift affects both alike.
  for (let i = 0; i < WARMUP; i++) {
    await timed(floor, "/graphql", hitInit());
    await timed(worker.fetch, "/graphql", hitInit(), "HIT");
  }
  const cacheOnly = on("cache-only.bench.test");
  await timed(cacheOnly, "/graphql", hitInit());
  const floorMs = [];
  const hitMs = [];
  const cacheOnlyMs = [];
  for (let i = 0; i < N; i++) {
    floorMs.push(await timed(floor, "/graphql", hitInit()));
    hitMs.push(await timed(worker.fetch, "/graphql", hitInit(), "HIT"));
    cacheOnlyMs.push(await timed(cacheOnly, "/graphql", hitInit()));
  }

  // 2. Misses over the 50 ms origin, interleaved with the pass-through reference.
  const missMs = [];
  const passMs = [];
  for (let i = 0; i < MISSES; i++) {
    missMs.push(await timed(worker.fetch, "/graphql", gqlPost(QUERY, { variables: { id: `miss-${i}` } }), "MISS"));
    passMs.push(await timed(passThrough, "/graphql", gqlPost(QUERY, { variables: { id: `pass-${i}` } })));
  }

  // 3. Coalescing: 200 concurrent identical misses.
  const before = await originCount();
  const burst = await Promise.all(
    Array.from({ length: CONCURRENT }, () => worker.fetch("/graphql", gqlPost(QUERY, { variables: { id: "burst" } }))),
  );
  await Promise.all(burst.map((r) => r.arrayBuffer()));
  const burstOriginRequests = (await originCount()) - before;

  // 4. Purge latency: from a mutation's response to the purge call that carries its tag.
  const answeredAt = new Map();
  for (let i = 0; i < MUTATIONS; i++) {
    const id = `m${i}`;
    const res = await worker.fetch("/graphql", gqlPost('mutation M($id: ID!) { updateUser(id: $id, name: "x") { id } }', { variables: { id } }));
    await res.arrayBuffer();
    answeredAt.set(`User:${id}`, performance.now());
    await sleep(Math.random() * 100);
  }
  const purged = () => api.purges.flatMap((p) => p.body.tags).filter((t) => answeredAt.has(t)).length;
  await waitFor(() => purged() >= MUTATIONS, { timeoutMs: 10000 });
  const purgeMs = [];
  for (const p of api.purges) for (const tag of p.body.tags) if (answeredAt.has(tag)) purgeMs.push(p.at - answeredAt.get(tag));

  const f = median(floorMs);
  const h = median(hitMs);
  const m = median(missMs);
  const p = median(passMs);
  const fmt = (x) => x.toFixed(2);
  const mfVersion = JSON.parse(readFileSync(join(WORKER_DIR, "node_modules/miniflare/package.json"), "utf8")).version;
  console.log(`workerd via miniflare ${mfVersion}, node ${process.version}; ${N} floor/hit pairs after ${WARMUP} warm-up, ${MISSES} misses; origin in workerd, ${ORIGIN_DELAY_MS} ms`);
  console.log(`floor (constant-response worker): median ${fmt(f)} ms, p95 ${fmt(quantile(floorMs, 0.95))} ms`);
  console.log(`1. hit cost:      median ${fmt(h)} ms = ${(h / f).toFixed(2)}x the floor (p95 ${(quantile(hitMs, 0.95) / quantile(floorMs, 0.95)).toFixed(2)}x)   target <= 1.3x` +
      `   (cache.match-only worker: ${(median(cacheOnlyMs) / f).toFixed(2)}x)`);
  console.log(
    `2. miss overhead: median ${fmt(m)} ms = ${ORIGIN_DELAY_MS} ms + ${((m - ORIGIN_DELAY_MS) / f).toFixed(2)}x the floor   target <= ${ORIGIN_DELAY_MS} ms + 1.3x` +
      `   (pass-through worker: ${ORIGIN_DELAY_MS} ms + ${((p - ORIGIN_DELAY_MS) / f).toFixed(2)}x)`,
  );
  console.log(`3. coalescing:    ${CONCURRENT} concurrent identical misses -> ${burstOriginRequests} origin request(s)   target <= 2`);
  console.log(
    `4. purge latency: mutation response -> purge call p50 ${fmt(median(purgeMs))} ms, p99 ${fmt(quantile(purgeMs, 0.99))} ms` +
      ` (${purgeMs.length} mutations, ${api.purges.length} calls; queue batch window 50 ms)`,
  );
} finally {
  await worker.dispose();
  await api.close();
}
