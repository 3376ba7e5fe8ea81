// The hand-written GraphQL lexer, parser and printer against graphql-js:
// the canonical text is the same document, and so is the text sent to the
// origin once the edge's __typename fields are taken out.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parse, print, visit } from "graphql";
import { parseText } from "../../src/graphql/document.js";
import { INJECTED_TYPENAME } from "../../src/graphql/parser.js";
import { ClientError } from "../../src/http/errors.js";

// Ignored tokens GraphQL allows between any two tokens.
const noise = fc.constantFrom(" ", "  ", "\n", "\t", ",", " , ", "# comment\n", "\r\n", "\ufeff");
const gap = fc.array(noise, { maxLength: 2 }).map((a) => a.join(""));
const name = fc.constantFrom("a", "b", "user", "id", "on", "query", "fragment", "true", "null", "_x9", "Z");
const fieldName = name.filter((n) => n !== "on");
const stringValue = fc.string({ unit: fc.constantFrom("a", " ", '"', "\\", "\n", "é", "\u{1F600}", "#", ","), maxLength: 6 }).map((s) => JSON.stringify(s));
const blockString = fc.constantFrom('"""a\nb"""', '""" q \\""" x"""', '""""""');
const scalar = fc.oneof(
  fc.integer({ min: -1000, max: 1000 }).map(String),
  fc.constantFrom("1.5", "-0.25e3", "12E-2", "0", "true", "false", "null", "RED", "$v", '"\\u00e9\\n"', '"\\u{1F600}"'),
  stringValue,
  blockString,
);
const value = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: "small" }, scalar, tie("list"), tie("object")),
  list: fc.array(tie("value"), { maxLength: 3 }).map((vs) => `[${vs.join(SEP)}]`),
  object: fc.uniqueArray(fc.tuple(fieldName, tie("value")), { selector: (t) => t[0], maxLength: 3 }).map((kv) => `{${kv.map(([k, v]) => `${k}:${SEP}${v}`).join(SEP)}}`),
})).value;
const args = fc.uniqueArray(fc.tuple(fieldName, value), { selector: (t) => t[0], maxLength: 2 }).map((kv) => (kv.length ? `(${kv.map(([k, v]) => `${k}:${SEP}${v}`).join(SEP)})` : ""));
const directives = fc.array(fc.tuple(fieldName, args), { maxLength: 2 }).map((ds) => ds.map(([n, a]) => `${SEP}@${n}${a}`).join(""));
const selectionSet = fc.letrec((tie) => ({
  set: fc.array(tie("selection"), { minLength: 1, maxLength: 3 }).map((sels) => `{${SEP}${sels.join(SEP)}${SEP}}`),
  selection: fc.oneof(
    { depthSize: "small" },
    fc.tuple(fc.option(fieldName, { nil: null }), fieldName, args, directives).map(([alias, n, a, d]) => `${alias ? `${alias}:${SEP}` : ""}${n}${a}${d}`),
    fc.tuple(fc.option(fieldName, { nil: null }), fieldName, args, tie("set")).map(([alias, n, a, s]) => `${alias ? `${alias}:${SEP}` : ""}${n}${a}${SEP}${s}`),
    fc.tuple(fc.option(fc.constantFrom("User", "Node"), { nil: null }), directives, tie("set")).map(([on, d, s]) => `...${on ? `${SEP}on${SEP}${on}` : ""}${d}${SEP}${s}`),
    fc.constant("...Frag"),
  ),
})).set;
const variables = fc.constantFrom("", "($v: Int = 3)", "($v: [String!]! = [\"a\"], $w: In)");
const documentText = fc
  .tuple(fc.constantFrom("query", "mutation", "subscription"), fc.option(fc.constantFrom("Op", "Q_1"), { nil: null }), variables, directives, selectionSet, selectionSet)
  .map(([type, opName, vars, dirs, set, fragSet]) => `${type}${opName ? `${SEP}${opName}` : ""}${vars}${dirs}${SEP}${set}${SEP}fragment${SEP}Frag${SEP}on${SEP}User${SEP}${fragSet}`);
// Spreads noise where the generator put a token boundary (SEP), never inside a string.
const SEP = "\u0001";
const noisy = (text) =>
  fc.array(gap, { minLength: 64, maxLength: 64 }).map((gaps) => {
    let i = 0;
    return text.replaceAll(SEP, () => ` ${gaps[i++ % gaps.length]}`);
  });
const plain = (text) => text.replaceAll(SEP, " ");

const canonical = (text) => print(parse(text));
const withoutInjected = (text) =>
  print(visit(parse(text), { Field: (node) => (node.alias?.value === INJECTED_TYPENAME ? null : undefined) }));

describe("canonical document text", () => {
  it("is the same document as the client's, for graphql-js", () => {
    fc.assert(
      fc.property(documentText.chain(noisy), (text) => {
        assert.ok(!text.includes(SEP));
        const doc = parseText(text);
        assert.equal(canonical(doc.normalized), canonical(text));
        assert.equal(parseText(doc.normalized).normalized, doc.normalized, "printing is idempotent");
      }),
      { numRuns: 300 },
    );
  });

  it("with the edge's __typename in every selection set, is the client's document plus those fields", () => {
    fc.assert(
      fc.property(documentText.map(plain), (text) => {
        const doc = parseText(text);
        assert.equal(withoutInjected(doc.injected), canonical(text));
        visit(parse(doc.injected), {
          SelectionSet(node) {
            const [first] = node.selections;
            assert.ok(first.kind === "Field" && first.alias?.value === INJECTED_TYPENAME && first.name.value === "__typename");
          },
        });
      }),
      { numRuns: 200 },
    );
  });

  it("keeps tokens apart only where they would merge", () => {
    assert.equal(parseText('query Q($a: Int = 1) { f(x: "a" y: 2 z: [1 2] w: """b""") @d { g } }').normalized, 'query Q($a:Int=1){f(x:"a"y:2 z:[1 2]w:"""b""")@d{g}}');
  });

  it("refuses what is not an executable document, and the edge's reserved name", () => {
    for (const text of ["type T { a: Int }", "{ a ", "{ a(x: [1) }", "query { _fraiseqlEdgeTypename: a }", "{ a } query A { b } query A { c }", '"desc" query { a }']) {
      assert.throws(() => parseText(text), ClientError, text);
    }
  });
});
