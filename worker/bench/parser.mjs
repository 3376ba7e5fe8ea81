// Should graphql-js replace the hand-written lexer, parser and printer?
// Measures, for the work the edge does with a document it has not seen
// (canonical text + the text with __typename in every selection set + the
// selection tree for tags), the time per document of each, and what each adds
// to the bundle. Prints; asserts nothing. Usage: npm run bench:parser
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Kind, parse, print, stripIgnoredCharacters, visit } from "graphql";
import { parseText } from "../src/graphql/document.js";
import { INJECTED_TYPENAME } from "../src/graphql/parser.js";
import { WORKER_DIR } from "../test-support/harness.mjs";

const INJECTED_FIELD = { kind: Kind.FIELD, alias: { kind: Kind.NAME, value: INJECTED_TYPENAME }, name: { kind: Kind.NAME, value: "__typename" } };

// What the edge would do with graphql-js: parse, print the canonical text,
// and print again with the field added to every selection set.
function withGraphqlJs(text) {
  const ast = parse(text, { noLocation: true });
  const normalized = stripIgnoredCharacters(print(ast));
  const injected = stripIgnoredCharacters(print(visit(ast, { SelectionSet: (node) => ({ ...node, selections: [INJECTED_FIELD, ...node.selections] }) })));
  return { ast, normalized, injected };
}

const fields = (n, prefix) => Array.from({ length: n }, (_, i) => `${prefix}${i}`).join(" ");
const documents = {
  "typical UI query (0.3 KB)": `query Product($slug: String!) { product(slug: $slug) { __typename id title price { amount currency } images(first: 4) { url alt } } }`,
  "fragments and arguments (2 KB)": `query Feed($first: Int = 20, $after: String) @cached(ttl: 60) {
    viewer { id ...Profile feed(first: $first, after: $after, filter: { kinds: [POST, LINK], tags: ["a", "b"] }) {
      edges { cursor node { ...Item ... on Post { body(format: MARKDOWN) comments(first: 3) { edges { node { id author { ...Profile } text } } } } } }
      pageInfo { hasNextPage endCursor } } }
  }
  fragment Profile on User { id name avatar(size: 64) followers { totalCount } ${fields(20, "f")} }
  fragment Item on Node { id ... on Post { title createdAt ${fields(30, "p")} } ... on Link { url title ${fields(30, "l")} } }`,
  "large (16 KB)": `query Big { ${Array.from({ length: 700 }, (_, i) => `a${i}: f(x: ${i}) { b c }`).join(" ")} }`,
};

function timePer(fn, text) {
  for (let i = 0; i < 200; i++) fn(text);
  let n = 0;
  const started = performance.now();
  while (performance.now() - started < 400) {
    fn(text);
    n++;
  }
  return ((performance.now() - started) / n) * 1000;
}

function bundleSize(entrySource) {
  const dir = mkdtempSync(join(tmpdir(), "parser-bench-"));
  try {
    writeFileSync(join(dir, "entry.mjs"), entrySource);
    const out = join(dir, "out.js");
    execFileSync(join(WORKER_DIR, "node_modules/.bin/esbuild"), [join(dir, "entry.mjs"), "--bundle", "--minify", "--format=esm", "--log-level=error", `--outfile=${out}`], {
      cwd: WORKER_DIR,
      env: { ...process.env, NODE_PATH: join(WORKER_DIR, "node_modules") },
    });
    return readFileSync(out).byteLength;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log("time per document not seen before (the document memo serves repeats):");
for (const [label, text] of Object.entries(documents)) {
  const mine = timePer(parseText, text);
  const theirs = timePer(withGraphqlJs, text);
  const parseOnly = timePer((t) => parse(t, { noLocation: true }), text);
  console.log(
    `  ${label.padEnd(32)} hand-written ${mine.toFixed(1).padStart(7)} us   graphql-js ${theirs.toFixed(1).padStart(7)} us (${(theirs / mine).toFixed(1)}x);` +
      ` its parse alone ${parseOnly.toFixed(1).padStart(7)} us (${(parseOnly / mine).toFixed(1)}x)`,
  );
}
const src = join(WORKER_DIR, "src/graphql/document.js");
const mineBytes = bundleSize(`export { parseText } from ${JSON.stringify(src)};`);
const theirsBytes = bundleSize(`export { parse, print, visit, stripIgnoredCharacters } from ${JSON.stringify(join(WORKER_DIR, "node_modules/graphql/index.mjs"))};`);
console.log(`minified bundle of the parsing code: hand-written ${(mineBytes / 1024).toFixed(1)} KiB, graphql-js parse/print/visit/strip ${(theirsBytes / 1024).toFixed(1)} KiB`);
console.log(`node ${process.version}, graphql ${JSON.parse(readFileSync(join(WORKER_DIR, "node_modules/graphql/package.json"), "utf8")).version}`);
