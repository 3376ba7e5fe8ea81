// Budgeted memory: whatever is put in, the accounted bytes stay inside the
// budget and equal the sum of what is kept.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { BudgetMap } from "../../src/memo.js";
import { canonicalJson, parseJsonExact } from "../../src/json.js";

describe("BudgetMap", () => {
  it("never holds more than its budget, and forgets the least recently used first", () => {
    const op = fc.oneof(
      fc.record({ set: fc.constantFrom("a", "b", "c", "d", "e", "f"), bytes: fc.nat(400) }),
      fc.record({ get: fc.constantFrom("a", "b", "c", "d", "e", "f") }),
      fc.record({ del: fc.constantFrom("a", "b", "c") }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const map = new BudgetMap(8000);
        for (const o of ops) {
          if ("set" in o) map.set(o.set, o.set, o.bytes);
          else if ("get" in o) map.get(o.get);
          else map.delete(o.del);
          let sum = 0;
          for (const entry of map.entries.values()) sum += entry.bytes;
          assert.equal(map.bytes, sum);
          assert.ok(map.bytes <= 8000);
        }
      }),
    );
    const map = new BudgetMap(8000);
    map.set("old", 1, 800);
    map.set("used", 2, 800);
    map.get("old");
    for (let i = 0; i < 7; i++) map.set(`new${i}`, i, 800);
    assert.equal(map.has("used"), false, "the least recently used went first");
    assert.equal(map.has("old"), true);
    assert.equal(map.set("huge", 4, 1000), false, "an entry over an eighth of the budget is refused");
  });
});

describe("canonical JSON", () => {
  it("is the same text for the same value, whatever the key order, and keeps numbers as written", () => {
    const json = fc.jsonValue({ maxDepth: 3 });
    fc.assert(
      fc.property(json, fc.infiniteStream(fc.boolean()), (value, flips) => {
        const shuffle = (v) =>
          v && typeof v === "object" && !Array.isArray(v)
            ? Object.fromEntries(Object.entries(v).sort(() => (flips.next().value ? 1 : -1)).map(([k, x]) => [k, shuffle(x)]))
            : Array.isArray(v)
              ? v.map(shuffle)
              : v;
        const a = canonicalJson(parseJsonExact(JSON.stringify(value)), 0, { max: 0 });
        const b = canonicalJson(parseJsonExact(JSON.stringify(shuffle(value))), 0, { max: 0 });
        assert.equal(a, b);
        assert.deepEqual(JSON.parse(a), JSON.parse(JSON.stringify(value)));
      }),
    );
    assert.equal(canonicalJson(parseJsonExact('{"b":9007199254740993,"a":1.50}'), 0, { max: 0 }).includes("1.5"), true);
  });
});
