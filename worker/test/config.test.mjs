// wrangler.jsonc is read by `wrangler dev`, by the tests (through wrangler's
// own reader) and by the Pulumi Edge component, so its shape is a contract:
// these checks keep it, the worker's fallbacks and the README aligned.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WORKER_DIR, CONFIG_PATH, BUNDLE_PATH, config } from "../test-support/harness.mjs";

const SRC = join(WORKER_DIR, "src");
const sourceFiles = readdirSync(SRC, { recursive: true }).filter((f) => f.endsWith(".js"));
const source = sourceFiles.map((f) => readFileSync(join(SRC, f), "utf8")).join("\n");
const configSource = readFileSync(join(SRC, "config.js"), "utf8");
const readme = readFileSync(join(WORKER_DIR, "README.md"), "utf8");
const pkg = JSON.parse(readFileSync(join(WORKER_DIR, "package.json"), "utf8"));
// Per deployment: the Edge component sets these, so the worker has no fallback.
const DEPLOYMENT_VARS = ["ORIGIN_URL", "ZONE_ID"];
const CACHE_STATUSES = ["HIT", "MISS", "STALE", "REVALIDATED", "BYPASS", "ERROR-STALE", "COALESCED"];

describe("wrangler.jsonc", () => {
  it("is accepted by wrangler itself, whose bundle of src/ is the committed dist/worker.js", () => {
    const out = mkdtempSync(join(tmpdir(), "wrangler-dry-"));
    try {
      const printed = execFileSync(
        process.execPath,
        [join(WORKER_DIR, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", out, "--config", CONFIG_PATH],
        { cwd: WORKER_DIR, encoding: "utf8", env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "log" } },
      );
      for (const binding of ["env.PERSISTED_QUERIES", "env.PURGE_QUEUE (fraiseql-purge)", "env.MUTATION_LIMITER"]) {
        assert.ok(printed.includes(binding), `wrangler does not list ${binding}`);
      }
      // What Pulumi uploads (components/edge.py reads dist/<main's file name>)
      // is what wrangler builds from src/ now: run `npm run build` after a change.
      const fresh = readFileSync(join(out, "worker.js"), "utf8");
      assert.ok(fresh === readFileSync(BUNDLE_PATH, "utf8"), "dist/worker.js is stale: run `npm run build` in worker/");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("declares every var as a string with the worker's built-in fallback", () => {
    const block = /const DEFAULTS = \{([\s\S]*?)\n\};/.exec(configSource)[1];
    const defaults = Object.fromEntries([...block.matchAll(/^\s*(\w+): (?:"([^"]*)"|([^,\n]+)),$/gm)].map((m) => [m[1], m[2] ?? m[3]]));
    assert.deepEqual(Object.keys(config.vars).sort(), [...Object.keys(defaults), ...DEPLOYMENT_VARS].sort());
    for (const [k, v] of Object.entries(config.vars)) {
      assert.equal(typeof v, "string", k);
      if (!DEPLOYMENT_VARS.includes(k)) assert.equal(v, defaults[k], k);
    }
  });

  it("declares the secrets, the registry, the purge queue and the mutation limiter", () => {
    assert.deepEqual([...config.secrets.required].sort(), ["ORIGIN_AUTH_TOKEN", "PURGE_API_TOKEN"]);
    for (const name of config.secrets.required) assert.ok(!(name in config.vars), `${name} must not have a default`);
    assert.deepEqual(config.kv_namespaces.map((k) => k.binding), ["PERSISTED_QUERIES"]);
    const [producer] = config.queues.producers;
    const [consumer, deadLetters] = config.queues.consumers;
    assert.equal(producer.binding, "PURGE_QUEUE");
    assert.equal(consumer.queue, producer.queue);
    // Pacing under the purge rate limit assumes one consumer at a time.
    assert.equal(consumer.max_concurrency, 1);
    assert.ok(consumer.max_batch_size <= 100);
    // Exhausted retries land in a dead letter queue that this worker consumes
    // (it tells that queue by "-dlq" in its name).
    assert.equal(deadLetters.queue, consumer.dead_letter_queue);
    assert.match(deadLetters.queue, /-dlq$/);
    assert.deepEqual(config.ratelimits.map((r) => r.name), ["MUTATION_LIMITER"]);
    assert.ok([10, 60].includes(config.ratelimits[0].simple.period));
  });
});

describe("worker package", () => {
  it("deploys one self-contained module: the bundle imports nothing", () => {
    const bundle = readFileSync(BUNDLE_PATH, "utf8");
    assert.doesNotMatch(bundle, /^\s*import\s/m);
    assert.doesNotMatch(bundle, /\brequire\(/);
    assert.match(bundle, /^export \{\n {2}\w+ as default\n\};/m);
  });

  it("keeps every source file under 300 lines", () => {
    for (const file of sourceFiles) {
      const lines = readFileSync(join(SRC, file), "utf8").split("\n").length;
      assert.ok(lines <= 300, `src/${file} has ${lines} lines`);
    }
  });

  it("pins every dev dependency to an exact version that runs on this Node", () => {
    assert.equal(pkg.dependencies, undefined);
    for (const [name, version] of Object.entries(pkg.devDependencies)) {
      assert.match(version, /^\d+\.\d+\.\d+$/, name);
      const installed = JSON.parse(readFileSync(join(WORKER_DIR, "node_modules", name, "package.json"), "utf8"));
      assert.equal(installed.version, version, name);
      const floor = /^>=\s*(\d+)\.(\d+)/.exec(installed.engines?.node ?? "");
      if (floor) {
        const [major, minor] = process.versions.node.split(".").map(Number);
        assert.ok(major > Number(floor[1]) || (major === Number(floor[1]) && minor >= Number(floor[2])), `${name} needs Node ${installed.engines.node}`);
      }
    }
  });

  it("documents every config key, var, binding and cache status in README.md", () => {
    const keys = [
      ...Object.keys(JSON.parse(JSON.stringify(config.vars))),
      ...config.secrets.required,
      "PERSISTED_QUERIES",
      "PURGE_QUEUE",
      "MUTATION_LIMITER",
    ];
    for (const key of keys) assert.ok(readme.includes(`\`${key}\``), `README misses ${key}`);
    for (const status of CACHE_STATUSES) {
      assert.ok(readme.includes(`\`${status}\``), `README misses ${status}`);
      assert.ok(source.includes(`"${status}"`), `worker never emits ${status}`);
    }
  });
});
