// worker.config.json is also read by the Pulumi program, so its shape is a
// contract: these checks keep it, the worker's fallbacks and the README aligned.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// Read directly rather than through the harness: importing Miniflare costs seconds.
const WORKER_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
const config = JSON.parse(readFileSync(join(WORKER_DIR, "worker.config.json"), "utf8"));

const source = readFileSync(join(WORKER_DIR, config.main), "utf8");
const readme = readFileSync(join(WORKER_DIR, "README.md"), "utf8");
const pkg = JSON.parse(readFileSync(join(WORKER_DIR, "package.json"), "utf8"));

const REQUIRED_VARS = [
  "CACHE_TTL_SECONDS",
  "STALE_WHILE_REVALIDATE_SECONDS",
  "STALE_IF_ERROR_SECONDS",
  "MAX_BODY_BYTES",
  "PURGE_BATCH_SIZE",
  "ORIGIN_TIMEOUT_MS",
  "CF_API_BASE",
  "CACHE_AUTH_MODE",
];
const CACHE_STATUSES = ["HIT", "MISS", "STALE", "REVALIDATED", "BYPASS", "ERROR-STALE"];

describe("worker.config.json", () => {
  it("names a main module that exists and matches main_module", () => {
    assert.equal(typeof config.name, "string");
    assert.ok(existsSync(join(WORKER_DIR, config.main)));
    assert.equal(config.main_module, basename(config.main));
    assert.match(config.compatibility_date, /^\d{4}-\d{2}-\d{2}$/);
    assert.ok(Array.isArray(config.compatibility_flags));
  });

  it("declares every var as a string (plain-text bindings)", () => {
    assert.deepEqual(Object.keys(config.vars).sort(), [...REQUIRED_VARS].sort());
    for (const [k, v] of Object.entries(config.vars)) assert.equal(typeof v, "string", k);
    assert.ok(["scope", "bypass"].includes(config.vars.CACHE_AUTH_MODE));
    assert.equal(config.vars.CF_API_BASE, "https://api.cloudflare.com/client/v4");
    assert.equal(config.vars.PURGE_BATCH_SIZE, "100");
  });

  it("lists the per-deployment and secret bindings separately from vars", () => {
    assert.deepEqual([...config.deployment_bindings].sort(), ["ORIGIN_URL", "ZONE_ID"]);
    assert.deepEqual(config.secret_bindings, ["PURGE_API_TOKEN"]);
    for (const name of [...config.deployment_bindings, ...config.secret_bindings]) {
      assert.ok(!(name in config.vars), `${name} must not have a default`);
    }
  });

  it("matches the worker's built-in fallbacks", () => {
    const block = /const DEFAULTS = \{([\s\S]*?)\};/.exec(source)[1];
    for (const m of block.matchAll(/(\w+): ("?)([^",\n]+)\2,/g)) {
      assert.equal(config.vars[m[1]], m[3], m[1]);
    }
  });
});

describe("worker package", () => {
  it("keeps src/worker.js free of imports so the tested file is the deployed file", () => {
    assert.doesNotMatch(source, /^\s*import\s/m);
    assert.doesNotMatch(source, /\brequire\(/);
  });

  it("pins every dev dependency to an exact version and has no runtime dependencies", () => {
    assert.equal(pkg.dependencies, undefined);
    for (const [name, version] of Object.entries(pkg.devDependencies)) {
      assert.match(version, /^\d+\.\d+\.\d+$/, name);
    }
  });

  it("documents every config key, binding and cache status in README.md", () => {
    const keys = [
      ...Object.keys(config),
      ...Object.keys(config.vars),
      ...config.deployment_bindings,
      ...config.secret_bindings,
    ];
    for (const key of keys) assert.ok(readme.includes(`\`${key}\``), `README misses ${key}`);
    for (const status of CACHE_STATUSES) {
      assert.ok(readme.includes(`\`${status}\``), `README misses ${status}`);
      assert.ok(source.includes(`"${status}"`), `worker never emits ${status}`);
    }
  });
});
