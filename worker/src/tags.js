// Cache tags: what an answer shows, found by walking the answer alongside the
// document. `id` and `__typename` are recognised by field name whatever the
// alias, and type conditions decide which field an alias stands for.
//
//   gql-op:<Operation> | gql-op-anonymous   the operation
//   <Type>:<id>                              an object with a selected id
//   gql-type:<Type>                          every type in the answer
//   gql-noid:<Type>                          a type shown without its id
//
// A mutation purges <Type>:<id> and gql-noid:<Type> for what it returns (and
// gql-type:<Type> for objects it returns without an id).
import { LIMITS } from "./config.js";
import { INJECTED_TYPENAME } from "./graphql/parser.js";
import { RawNumber } from "./json.js";

const TYPE_TAG_PREFIX = "gql-type:";
const NOID_TAG_PREFIX = "gql-noid:";

// Cache-Tag must be printable ASCII without spaces; commas separate tags.
// toWellFormed() because encodeURIComponent throws on lone surrogates.
function encodeTagPart(value) {
  return encodeURIComponent(value.toWellFormed());
}

// "-" cannot occur in a GraphQL name, so these never collide with Type:id.
export const typeTag = (typename) => `${TYPE_TAG_PREFIX}${encodeTagPart(typename)}`;
export const noidTag = (typename) => `${NOID_TAG_PREFIX}${encodeTagPart(typename)}`;
const operationTag = (name) => (name ? `gql-op:${encodeTagPart(name)}` : "gql-op-anonymous");

// Walks `data` with the operation. Returns the Type:id tags, every type seen,
// and the types of objects shown without an id (none selected, an alias that
// stays ambiguous, or an id too long for a tag).
export function collectTags(data, op) {
  const entities = [];
  const seen = new Set();
  const allTypes = new Set();
  const typesWithoutId = new Set();
  const resolver = new FieldResolver(op);
  const stack = [[data, [op.selections], true]];
  while (stack.length > 0) {
    const [node, selectionSets, root] = stack.pop();
    if (node === null || typeof node !== "object" || node instanceof RawNumber) continue;
    if (Array.isArray(node)) {
      for (let i = node.length - 1; i >= 0; i--) stack.push([node[i], selectionSets, false]);
      continue;
    }
    const candidates = resolver.candidates(selectionSets);
    const typename = typenameOf(node, candidates, op);
    let id = null;
    const children = [];
    for (const [key, field] of resolver.resolve(selectionSets, candidates, typename)) {
      if (!Object.hasOwn(node, key)) continue;
      const value = node[key];
      if (field.name === "id" && id === null) {
        if (typeof value === "string") id = value;
        else if (value instanceof RawNumber) id = value.raw;
      }
      if (field.subs.length > 0 && value !== null && typeof value === "object") children.push([value, field.subs, false]);
    }
    // The root object (Query, Mutation) is in every answer: never a tag.
    if (typename !== null && !root) {
      allTypes.add(typename);
      const tag = id === null ? null : `${encodeTagPart(typename)}:${encodeTagPart(id)}`;
      if (tag !== null && tag.length <= LIMITS.tagMaxChars) {
        if (!seen.has(tag)) {
          seen.add(tag);
          entities.push(tag);
        }
      } else {
        typesWithoutId.add(typename);
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
  }
  return { entities, allTypes, typesWithoutId };
}

// The Cache-Tag of a stored answer, in a stable order.
export function entryTags(op, found) {
  return [
    operationTag(op.name),
    ...found.entities,
    ...[...found.allTypes].map(typeTag),
    ...[...found.typesWithoutId].map(noidTag),
  ].filter((t) => t.length <= LIMITS.tagMaxChars);
}

function typenameOf(node, candidates, op) {
  if (op.injected) {
    const v = node[INJECTED_TYPENAME];
    if (typeof v === "string" && v !== "") return v;
  }
  for (const [key, list] of candidates) {
    if (list.every((c) => c.name === "__typename") && typeof node[key] === "string" && node[key] !== "") return node[key];
  }
  return null;
}

// Flattens selection sets through fragments, each fragment expanded at most
// once a flattening (a fragment spread twice adds nothing the first spread
// did not), so the work is linear in the document. Results are memoized by
// the identity of the list of selection sets, which the walk keeps stable.
class FieldResolver {
  constructor(op) {
    this.op = op;
    this.flat = new Map();
    this.resolved = new Map();
  }

  // responseKey -> [{name, on, subs}] for every field under that key, with the
  // nearest type condition above it (null: the parent field's own type).
  candidates(selectionSets) {
    let out = this.flat.get(selectionSets);
    if (out) return out;
    out = new Map();
    const fragments = this.op.fragments;
    const expanded = new Set();
    const walk = (selections, on) => {
      for (const sel of selections) {
        if (sel.kind === "field") {
          let list = out.get(sel.key);
          if (!list) out.set(sel.key, (list = []));
          list.push({ name: sel.name, on, subs: sel.selections });
        } else if (sel.kind === "inline") {
          walk(sel.selections, sel.on ?? on);
        } else if (!expanded.has(sel.name) && fragments.has(sel.name)) {
          expanded.add(sel.name);
          const fragment = fragments.get(sel.name);
          walk(fragment.selections, fragment.on);
        }
      }
    };
    for (const selections of selectionSets) walk(selections, null);
    if (this.op.injected) out.set(INJECTED_TYPENAME, [{ name: "__typename", on: null, subs: null }]);
    this.flat.set(selectionSets, out);
    return out;
  }

  // responseKey -> {name, subs} for an object of `typename`. In a valid
  // document, fields that share a key but not a name sit under distinct
  // object types: the ones under no condition or under `typename` itself
  // apply; the others only if they agree with them. name is null when that
  // does not settle it.
  resolve(selectionSets, candidates, typename) {
    let byType = this.resolved.get(selectionSets);
    if (!byType) this.resolved.set(selectionSets, (byType = new Map()));
    let out = byType.get(typename);
    if (out) return out;
    out = new Map();
    for (const [key, list] of candidates) {
      const names = new Set(list.map((c) => c.name));
      const sure = new Set(list.filter((c) => c.on === null || c.on === typename).map((c) => c.name));
      let name = null;
      if (sure.size === 1) name = [...sure][0];
      else if (sure.size === 0 && names.size === 1) name = [...names][0];
      const subs = [];
      for (const c of list) if (c.subs && (name === null || c.name === name)) subs.push(c.subs);
      out.set(key, { name, subs });
    }
    byType.set(typename, out);
    return out;
  }
}
