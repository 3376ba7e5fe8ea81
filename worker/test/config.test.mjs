// wrangler.jsonc is read by `wrangler dev`, by the tests (through wrangler's
// own reader) and by the Pulumi Edge component, so its shape is a contract:
// these checks keep it, the worker's fallbacks and the README aligned.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WORKER_DIR, CONFIG_PATH, config } from "../test-support/harness.mjs";

const source = readFileSync(config.main, "utf8");
const readme = readFileSync(join(WORKER_DIR, "README.md"), "utf8");
const pkg = JSON.parse(readFileSync(join(WORKER_DIR, "package.json"), "utf8"));
// Per deployment: the Edge component sets these, so the worker has no fallback.
const DEPLOYMENT_VARS = ["ORIGIN_URL", "ZONE_ID"];
const CACHE_STATUSES = ["HIT", "MISS", "STALE", "REVALIDATED", "BYPASS", "ERROR-STALE", "COALESCED"];

describe("wrangler.jsonc", () => {
  it("is accepted by wrangler itself (deploy --dry-run bundles it offline)", () => {
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
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("declares every var as a string with the worker's built-in fallback", () => {
    const block = /const DEFAULTS = \{([\s\S]*?)\n\};/.exec(source)[1];
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
    const [consumer] = config.queues.consumers;
    assert.equal(producer.binding, "PURGE_QUEUE");
    assert.equal(consumer.queue, producer.queue);
    // Pacing under the purge rate limit assumes one consumer at a time.
    assert.equal(consumer.max_concurrency, 1);
    assert.ok(consumer.max_batch_size <= 100);
    assert.deepEqual(config.ratelimits.map((r) => r.name), ["MUTATION_LIMITER"]);
    assert.ok([10, 60].includes(config.ratelimits[0].simple.period));
  });
});

describe("worker package", () => {
  it("keeps src/worker.js free of imports so the tested file is the deployed file", () => {
    assert.doesNotMatch(source, /^\s*import\s/m);
    assert.doesNotMatch(source, /\brequire\(/);
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
