// Per-request latency of a cache HIT vs a MISS, measured through Miniflare
// (real workerd) with a loopback origin. Prints numbers only; not a test.
// Usage: npm run bench [-- iterations]
import { startFakeOrigin, startWorker, gqlPost, sleep } from "../test-support/harness.mjs";

const N = Number(process.argv[2]) || 300;
const WARMUP = 30;
const QUERY = "query Bench($id: ID!) { user(id: $id) { __typename id name } }";

function stats(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { median: at(0.5), p95: at(0.95), min: sorted[0], max: sorted[sorted.length - 1] };
}

async function timed(worker, variables, expected) {
  const started = process.hrtime.bigint();
  const res = await worker.fetch("/graphql", gqlPost(QUERY, { variables }));
  await res.arrayBuffer();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const status = res.headers.get("x-fraiseql-cache");
  if (status !== expected) throw new Error(`expected ${expected}, got ${status}`);
  return ms;
}

const origin = await startFakeOrigin();
const worker = await startWorker({ bindings: { ORIGIN_URL: origin.url } });
try {
  await timed(worker, { id: "hot" }, "MISS");
  await sleep(100);

  for (let i = 0; i < WARMUP; i++) {
    await timed(worker, { id: "hot" }, "HIT");
    await timed(worker, { id: `warm-${i}` }, "MISS");
  }

  const hit = [];
  const miss = [];
  // Interleaved so drift (GC, CPU frequency) affects both series alike.
  for (let i = 0; i < N; i++) {
    hit.push(await timed(worker, { id: "hot" }, "HIT"));
    miss.push(await timed(worker, { id: `miss-${i}` }, "MISS"));
  }

  const h = stats(hit);
  const m = stats(miss);
  const fmt = (x) => x.toFixed(3).padStart(8);
  console.log(`iterations per series: ${N} (after ${WARMUP} warm-up), origin: loopback node http`);
  console.log(`          median ms    p95 ms    min ms    max ms`);
  console.log(`HIT     ${fmt(h.median)}  ${fmt(h.p95)}  ${fmt(h.min)}  ${fmt(h.max)}`);
  console.log(`MISS    ${fmt(m.median)}  ${fmt(m.p95)}  ${fmt(m.min)}  ${fmt(m.max)}`);
  console.log(`ratio miss/hit: median ${(m.median / h.median).toFixed(2)}x, p95 ${(m.p95 / h.p95).toFixed(2)}x`);
  console.log(`origin requests: ${origin.requests.length} (expected ${1 + WARMUP + N})`);
} finally {
  await worker.dispose();
  await origin.close();
}
