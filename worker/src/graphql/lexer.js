// GraphQL lexer: the tokens of a document, without comments, commas and
// whitespace (GraphQL's ignored tokens).
import { GraphQLSyntaxError } from "../http/errors.js";

const PUNCTUATORS = new Set(["!", "$", "&", "(", ")", ":", "=", "@", "[", "]", "{", "|", "}"]);
const NAME_START = /[_A-Za-z]/;
const NAME_RE = /[_A-Za-z][_0-9A-Za-z]*/y;
const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

export function tokenize(src) {
  const tokens = [];
  const n = src.length;
  let i = 0;
  while (i < n) {
    const ch = src[i];
    if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || ch === "," || ch === "\ufeff") {
      i++;
      continue;
    }
    if (ch === "#") {
      while (i < n && src[i] !== "\n" && src[i] !== "\r") i++;
      continue;
    }
    if (PUNCTUATORS.has(ch)) {
      tokens.push({ kind: "punct", value: ch });
      i++;
      continue;
    }
    if (ch === ".") {
      if (src.startsWith("...", i)) {
        tokens.push({ kind: "punct", value: "..." });
        i += 3;
        continue;
      }
      throw new GraphQLSyntaxError(`Unexpected "." at offset ${i}`);
    }
    if (NAME_START.test(ch)) {
      NAME_RE.lastIndex = i;
      const value = NAME_RE.exec(src)[0];
      tokens.push({ kind: "name", value });
      i += value.length;
      continue;
    }
    if (ch === "-" || (ch >= "0" && ch <= "9")) {
      NUMBER_RE.lastIndex = i;
      const m = NUMBER_RE.exec(src);
      const end = m ? i + m[0].length : i;
      if (!m || (end < n && /[_0-9A-Za-z.]/.test(src[end]))) {
        throw new GraphQLSyntaxError(`Invalid number at offset ${i}`);
      }
      tokens.push({ kind: "number", value: m[0] });
      i = end;
      continue;
    }
    if (ch === '"') {
      const end = src.startsWith('"""', i) ? scanBlockString(src, i) : scanString(src, i);
      tokens.push({ kind: "string", value: src.slice(i, end) });
      i = end;
      continue;
    }
    throw new GraphQLSyntaxError(`Unexpected character ${JSON.stringify(ch)} at offset ${i}`);
  }
  return tokens;
}

function scanString(src, start) {
  let i = start + 1;
  while (i < src.length) {
    const ch = src[i];
    if (ch === '"') return i + 1;
    if (ch === "\n" || ch === "\r") break;
    if (ch === "\\") {
      const next = src[i + 1];
      if (next === "u") {
        const m = /^(?:[0-9A-Fa-f]{4}|\{[0-9A-Fa-f]{1,6}\})/.exec(src.slice(i + 2, i + 10));
        if (!m) throw new GraphQLSyntaxError(`Invalid Unicode escape at offset ${i}`);
        i += 2 + m[0].length;
        continue;
      }
      if (next === undefined || !'"\\/bfnrt'.includes(next)) {
        throw new GraphQLSyntaxError(`Invalid escape at offset ${i}`);
      }
      i += 2;
      continue;
    }
    i++;
  }
  throw new GraphQLSyntaxError(`Unterminated string at offset ${start}`);
}

function scanBlockString(src, start) {
  let i = start + 3;
  while (i < src.length) {
    if (src.startsWith('\\"""', i)) {
      i += 4;
      continue;
    }
    if (src.startsWith('"""', i)) return i + 3;
    i++;
  }
  throw new GraphQLSyntaxError(`Unterminated block string at offset ${start}`);
}

// Canonical text: tokens only, separated where two adjacent tokens would
// otherwise lex differently (name/number runs, "" followed by "). After each
// token index in `insertAfter`, `insertion` (a name-ending text) is printed.
export function printTokens(tokens, insertAfter, insertion) {
  let out = "";
  let prev = null;
  for (let idx = 0; idx < tokens.length; idx++) {
    const token = tokens[idx];
    if (prev) {
      const words = (prev.kind === "name" || prev.kind === "number") && (token.kind === "name" || token.kind === "number");
      const strings = prev.kind === "string" && token.kind === "string";
      if (words || strings) out += " ";
    }
    out += token.value;
    prev = token;
    if (insertAfter && insertAfter.has(idx)) {
      out += insertion;
      prev = NAME_TOKEN;
    }
  }
  return out;
}

const NAME_TOKEN = { kind: "name" };
