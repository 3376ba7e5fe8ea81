// Tags, found by walking an answer alongside its document.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { canonicalOperation, normalizeParams } from "../../src/canonical.js";
import { readConfig } from "../../src/config.js";
import { mutationTags } from "../../src/mutations.js";
import { collectTags, entryTags } from "../../src/tags.js";

const T = "_fraiseqlEdgeTypename";
const opOf = (query, operationName = null) => canonicalOperation(normalizeParams({ query, operationName }), query);
const sorted = (found) => ({
  entities: [...found.entities].sort(),
  allTypes: [...found.allTypes].sort(),
  typesWithoutId: [...found.typesWithoutId].sort(),
});
const cfg = readConfig({ MAX_TAGS_PER_MUTATION: "50" });

// A selection tree, and an answer shaped by it (objects of random types,
// with an id when one is selected, nulls and lists).
const selectionTree = fc.letrec((tie) => ({
  set: fc.record({
    id: fc.boolean(),
    fields: fc.uniqueArray(fc.record({ key: fc.constantFrom("a", "b", "c"), sub: fc.option(tie("set"), { nil: null, depthSize: "small" }) }), {
      selector: (f) => f.key,
      maxLength: 3,
    }),
  }),
})).set;
const typename = fc.constantFrom("User", "Post", "Tag");
function answerFor(set) {
  const object = fc
    .tuple(typename, fc.constantFrom("1", "2", "x y", "é"), ...set.fields.map((f) => (f.sub ? fc.oneof(fc.constant(null), answerFor(f.sub), fc.array(answerFor(f.sub), { maxLength: 2 })) : fc.constant(7))))
    .map(([type, id, ...values]) => {
      const node = { [T]: type };
      if (set.id) node.id = id;
      set.fields.forEach((f, i) => (node[f.key] = values[i]));
      return node;
    });
  return object;
}
// The same selections written three ways: inline, through fragments, and
// through fragments each spread twice behind a chain of doubly spread ones.
function documents(root) {
  const fragments = [];
  const write = (set, style) => {
    const fields = [...(set.id ? ["id"] : []), ...set.fields.map((f) => (f.sub ? `${f.key} ${write(f.sub, style)}` : f.key))];
    if (fields.length === 0) fields.push("__typename");
    if (style === "inline") return `{ ${fields.join(" ")} }`;
    const n = fragments.length;
    fragments.push(`fragment F${style}${n} on Node { ${fields.join(" ")} }`);
    if (style === "once") return `{ ...Fonce${n} }`;
    fragments.push(`fragment G${n} on Node { ...Ftwice${n} ...Ftwice${n} }`);
    return `{ ...G${n} ...G${n} ...Ftwice${n} }`;
  };
  const inline = `query Q { root ${write(root, "inline")} }`;
  fragments.length = 0;
  const once = `query Q { root ${write(root, "once")} } ${fragments.join(" ")}`;
  fragments.length = 0;
  const twice = `query Q { root ${write(root, "twice")} } ${fragments.join(" ")}`;
  return { inline, once, twice };
}

describe("tags", () => {
  it("are the same whether fragments are spread once, twice, or not at all", () => {
    fc.assert(
      fc.property(
        selectionTree.chain((set) => fc.tuple(fc.constant(set), answerFor(set))),
        ([set, root]) => {
          const docs = documents(set);
          const data = { root };
          const expected = sorted(collectTags(data, opOf(docs.inline)));
          assert.deepEqual(sorted(collectTags(data, opOf(docs.once))), expected);
          assert.deepEqual(sorted(collectTags(data, opOf(docs.twice))), expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("expand a chain of 40 doubly spread fragments in linear time", { timeout: 5000 }, () => {
    const chain = Array.from({ length: 40 }, (_, i) => `fragment F${i} on User { ...F${i + 1} ...F${i + 1} }`).join(" ");
    const op = opOf(`query C { user { ...F0 } } ${chain} fragment F40 on User { id }`);
    assert.deepEqual(collectTags({ user: { [T]: "User", id: "u" } }, op).entities, ["User:u"]);
  });

  it("give an entry that shows a type without its id a gql-noid tag, which a mutation of that type purges", () => {
    const read = opOf("query Me { me { name avatar } }");
    const tags = entryTags(read, collectTags({ me: { [T]: "User", name: "n", avatar: "a" } }, read));
    assert.deepEqual(tags, ["gql-op:Me", "gql-type:User", "gql-noid:User"]);
    const write = opOf('mutation { updateUser(id: "u1") { id name } }');
    const purged = mutationTags(cfg, [write], [{ data: { updateUser: { [T]: "User", id: "u1", name: "m" } } }]);
    assert.deepEqual(purged, ["User:u1", "gql-noid:User"]);
    assert.ok(purged.some((t) => tags.includes(t)));
  });

  it("follow type conditions to tell which field an alias stands for", () => {
    const op = opOf('query A { node(id: "u5") { ... on User { id name } ... on Post { id: authorId } } }');
    assert.deepEqual(collectTags({ node: { [T]: "User", id: "u5", name: "n" } }, op).entities, ["User:u5"]);
    const post = collectTags({ node: { [T]: "Post", id: "u5" } }, op);
    assert.deepEqual(post.entities, [], "on a Post, `id` is its authorId");
    assert.deepEqual([...post.typesWithoutId], ["Post"]);
  });

  it("never take an alias of another field for an id, and fall back to the type when it stays ambiguous", () => {
    const forged = opOf('mutation { updateUser { id: bio realId: id } }');
    assert.deepEqual(mutationTags(cfg, [forged], [{ data: { updateUser: { [T]: "User", id: "bio", realId: "u1" } } }]), ["User:u1", "gql-noid:User"]);
    const ambiguous = opOf("query { node { ... on Node { id: a } ... on Thing { id } } }");
    const found = collectTags({ node: { [T]: "User", id: "x" } }, ambiguous);
    assert.deepEqual(found.entities, []);
    assert.deepEqual([...found.typesWithoutId], ["User"]);
  });

  it("collapse into type tags past MAX_TAGS_PER_MUTATION: coarser, never missing", () => {
    const op = opOf("mutation { bulk { id } }");
    const users = Array.from({ length: 60 }, (_, i) => ({ [T]: i % 2 ? "User" : "Post", id: String(i) }));
    assert.deepEqual(mutationTags(cfg, [op], [{ data: { bulk: users } }]).sort(), ["gql-type:Post", "gql-type:User"]);
  });
});
