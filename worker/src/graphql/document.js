// A document as the edge uses it: parsed, in canonical text (the key) and
// with __typename injected in every selection set (what the origin gets).
import { documentMemo, stringBytes } from "../memo.js";
import { printTokens, tokenize } from "./lexer.js";
import { INJECTED_TYPENAME, parseDocument } from "./parser.js";

const INJECTION = `${INJECTED_TYPENAME}:__typename`;
// Measured on workerd: about 50 bytes a parsed node; counted at 64.
const NODE_BYTES = 64;

export function analyzeDocument(text) {
  const memo = documentMemo.get(text);
  if (memo) return memo;
  const doc = parseText(text);
  const bytes = NODE_BYTES * doc.nodes + stringBytes(doc.normalized) + stringBytes(doc.injected);
  documentMemo.set(text, doc, bytes);
  return doc;
}

export function parseText(text) {
  const tokens = tokenize(text);
  const doc = parseDocument(tokens);
  doc.normalized = printTokens(tokens, null);
  doc.injected = printTokens(tokens, new Set(doc.selectionSetStarts), INJECTION);
  doc.selectionSetStarts = null;
  return doc;
}
