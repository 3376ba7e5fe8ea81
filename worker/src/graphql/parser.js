// A parser for executable GraphQL documents over the lexer's tokens: the
// operations and fragments with their selection sets and type conditions.
// Not a validator (arguments, values and directives are only balanced): the
// origin validates, and a document it rejects yields errors, never cached.
import { LIMITS } from "../config.js";
import { ClientError, GraphQLSyntaxError } from "../http/errors.js";

// Added to every selection set on the way to the origin and removed from the
// answer; an alias (not a bare __typename) so the client's own selection is
// never confused with the edge's.
export const INJECTED_TYPENAME = "_fraiseqlEdgeTypename";

const TYPE_SYSTEM_KEYWORDS = new Set(["schema", "scalar", "type", "interface", "union", "enum", "input", "directive", "extend"]);
const CLOSERS = { "}": "{", ")": "(", "]": "[" };

function reserved() {
  return new ClientError(400, `The name ${INJECTED_TYPENAME} is reserved by the edge`, "BAD_REQUEST");
}

// Selections: {kind: "field", key, name, selections|null},
// {kind: "inline", on: type|null, selections}, {kind: "spread", name}.
// Fragments: name -> {on, selections}. `selectionSetStarts` are the token
// indexes of every "{" that opens a selection set; `nodes` counts what was built.
export function parseDocument(tokens) {
  if (tokens.length === 0) throw new GraphQLSyntaxError("Unexpected end of document");
  let i = 0;
  let nodes = 0;
  const operations = [];
  const fragments = new Map();
  const selectionSetStarts = [];
  const names = new Set();
  let hasSubscription = false;

  const peek = () => tokens[i];
  const isPunct = (v) => i < tokens.length && tokens[i].kind === "punct" && tokens[i].value === v;
  const expectPunct = (v) => {
    if (!isPunct(v)) throw new GraphQLSyntaxError(`Expected "${v}", found ${describe(peek())}`);
    i++;
  };
  const expectName = () => {
    const t = peek();
    if (!t || t.kind !== "name") throw new GraphQLSyntaxError(`Expected Name, found ${describe(t)}`);
    if (t.value === INJECTED_TYPENAME) throw reserved();
    i++;
    return t.value;
  };
  const skipBalanced = () => {
    const stack = [];
    for (; i < tokens.length; i++) {
      const t = tokens[i];
      if (t.kind === "name" && t.value === INJECTED_TYPENAME) throw reserved();
      if (t.kind !== "punct") continue;
      if (t.value === "{" || t.value === "(" || t.value === "[") {
        stack.push(t.value);
      } else if (t.value in CLOSERS) {
        if (stack.pop() !== CLOSERS[t.value]) throw new GraphQLSyntaxError(`Unexpected "${t.value}"`);
        if (stack.length === 0) {
          i++;
          return;
        }
      }
    }
    throw new GraphQLSyntaxError("Unbalanced brackets");
  };
  const directives = () => {
    while (isPunct("@")) {
      i++;
      expectName();
      if (isPunct("(")) skipBalanced();
    }
  };
  const selectionSet = (depth) => {
    if (depth > LIMITS.maxSelectionDepth) throw new ClientError(400, "Document nested too deeply", "BAD_REQUEST");
    selectionSetStarts.push(i);
    expectPunct("{");
    const selections = [];
    while (!isPunct("}")) {
      if (i >= tokens.length) throw new GraphQLSyntaxError("Unbalanced brackets");
      nodes++;
      if (isPunct("...")) {
        i++;
        const t = peek();
        if (t && t.kind === "name" && t.value !== "on") {
          selections.push({ kind: "spread", name: expectName() });
          directives();
        } else {
          let on = null;
          if (t && t.kind === "name" && t.value === "on") {
            i++;
            on = expectName();
          }
          directives();
          selections.push({ kind: "inline", on, selections: selectionSet(depth + 1) });
        }
        continue;
      }
      const key = expectName();
      let name = key;
      if (isPunct(":")) {
        i++;
        name = expectName();
      }
      if (isPunct("(")) skipBalanced();
      directives();
      const sub = isPunct("{") ? selectionSet(depth + 1) : null;
      selections.push({ kind: "field", key, name, selections: sub });
    }
    if (selections.length === 0) throw new GraphQLSyntaxError("Expected Name, found }");
    i++;
    return selections;
  };

  while (i < tokens.length) {
    const t = peek();
    if (t.kind === "punct" && t.value === "{") {
      operations.push({ type: "query", name: null, selections: selectionSet(0) });
    } else if (t.kind === "name" && (t.value === "query" || t.value === "mutation" || t.value === "subscription")) {
      i++;
      const name = peek() && peek().kind === "name" ? expectName() : null;
      if (isPunct("(")) skipBalanced();
      directives();
      if (t.value === "subscription") hasSubscription = true;
      if (name !== null) {
        if (names.has(name)) throw new ClientError(400, `There can be only one operation named "${name}".`, "BAD_REQUEST");
        names.add(name);
      }
      operations.push({ type: t.value, name, selections: selectionSet(0) });
    } else if (t.kind === "name" && t.value === "fragment") {
      i++;
      const name = expectName();
      if (name === "on") throw new GraphQLSyntaxError(`Unexpected Name "on"`);
      const keyword = expectName();
      if (keyword !== "on") throw new GraphQLSyntaxError(`Expected "on", found Name "${keyword}"`);
      const on = expectName();
      directives();
      if (fragments.has(name)) throw new ClientError(400, `There can be only one fragment named "${name}".`, "BAD_REQUEST");
      fragments.set(name, { on, selections: selectionSet(0) });
    } else if ((t.kind === "name" && TYPE_SYSTEM_KEYWORDS.has(t.value)) || t.kind === "string") {
      throw new ClientError(400, "Only executable definitions (operations and fragments) may be sent", "BAD_REQUEST");
    } else {
      throw new GraphQLSyntaxError(`Unexpected ${describe(t)}`);
    }
  }
  return { operations, fragments, selectionSetStarts, hasSubscription, nodes: nodes + selectionSetStarts.length };
}

function describe(token) {
  if (!token) return "<EOF>";
  return token.kind === "name" ? `Name "${token.value}"` : JSON.stringify(token.value);
}

export function selectOperation(doc, operationName) {
  const operations = doc.operations;
  if (operations.length === 0) {
    throw new ClientError(400, "Document does not contain an operation", "BAD_REQUEST");
  }
  if (operationName !== null) {
    const op = operations.find((o) => o.name === operationName);
    if (!op) throw new ClientError(400, `Unknown operation named "${operationName}".`, "BAD_REQUEST");
    return op;
  }
  if (operations.length > 1) {
    throw new ClientError(400, "Must provide operation name if query contains multiple operations.", "BAD_REQUEST");
  }
  return operations[0];
}
