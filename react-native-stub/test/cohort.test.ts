/** Cohort rules (src/core/cohort.ts, docs/targeting.md): every case of
 * ../tests/vectors/cohort.json (written by tests/vectors/generate_cohort.py, run by the
 * Python evaluator in tests/packager/test_cohort.py), then what only this side can get
 * wrong: UTF-16 lengths, Object.prototype's names, frozen trees. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { matches, parseRule, parseVersion, ruleJson } from "../src/core/cohort";
import { FormatError } from "../src/core/errors";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");

interface ValidCase {
  name: string;
  rule: unknown;
  attributes: unknown;
  expected: boolean;
}
interface InvalidCase {
  name: string;
  rule: unknown;
  error: string;
}
const vectors = JSON.parse(readFileSync(join(VECTORS, "cohort.json"), "utf8")) as {
  valid: ValidCase[];
  invalid: InvalidCase[];
};

function parseError(rule: unknown): FormatError {
  try {
    parseRule(rule);
  } catch (err) {
    assert.ok(err instanceof FormatError, `a FormatError, not ${String(err)}`);
    return err;
  }
  assert.fail("parsed");
}

describe("cohort vectors: valid rules", () => {
  it("has the cases the Python side checks", () => assert.ok(vectors.valid.length >= 40));
  for (const c of vectors.valid) {
    it(c.name, () => {
      const rule = parseRule(c.rule);
      assert.deepEqual(ruleJson(rule), c.rule, "the canonical form is the rule as written");
      assert.equal(matches(rule, c.attributes), c.expected);
    });
  }
});

describe("cohort vectors: invalid rules", () => {
  it("has the cases the Python side checks", () => assert.ok(vectors.invalid.length >= 15));
  for (const c of vectors.invalid) {
    it(c.name, () => {
      const err = parseError(c.rule);
      assert.ok(err.message.includes(c.error), `${err.message}\n  does not contain\n${c.error}`);
      assert.ok(!err.message.includes("\n") && err.message.startsWith("rule"), err.message);
      assert.equal(err.code, "format");
      assert.equal(err.name, "FormatError");
    });
  }
});

describe("parseVersion", () => {
  it("pads to four components", () => {
    assert.deepEqual(parseVersion("14"), [14, 0, 0, 0]);
    assert.deepEqual(parseVersion("14.0"), parseVersion("14"));
    assert.deepEqual(parseVersion("1.24.3.7"), [1, 24, 3, 7]);
    assert.deepEqual(parseVersion("007.000010"), [7, 10, 0, 0]);
  });
  it("refuses what is not a version", () => {
    for (const bad of ["", "14.", ".14", "1..2", "1.2.3.4.5", "1000000", "14\n", "١٤", "+1", " 1", "0x1", "1e3"]) {
      assert.equal(parseVersion(bad), null, JSON.stringify(bad));
    }
    for (const bad of [14, null, undefined, ["14"], { major: 14 }]) assert.equal(parseVersion(bad), null);
  });
});

describe("what only JavaScript can get wrong", () => {
  it("counts characters as code points, not UTF-16 units", () => {
    parseRule({ label: "owner", eq: "😀".repeat(128) });
    assert.match(parseError({ label: "owner", eq: "😀".repeat(129) }).message, /is 129 characters/);
  });
  it("reads only own properties of the attributes", () => {
    const rule = parseRule({ label: "constructor", exists: true });
    assert.equal(matches(rule, { labels: {} }), false);
    const inherited = Object.create({ platform: "android" }) as unknown;
    assert.equal(matches(parseRule({ not: { attr: "platform", eq: "android" } }), inherited), true);
    assert.equal(matches(rule, { labels: JSON.parse('{"__proto__": {"constructor": "x"}}') }), false);
  });
  it("refuses a __proto__ key as an unexpected key", () => {
    const obj = JSON.parse('{"attr": "platform", "eq": "android", "__proto__": {"x": 1}}');
    assert.match(parseError(obj).message, /unexpected key '__proto__'/);
  });
  it("names the first unexpected key whatever the order", () => {
    const a = parseError({ attr: "site", eq: "x", zz: 1, b: 2 }).message;
    const b = parseError({ b: 2, zz: 1, eq: "x", attr: "site" }).message;
    assert.equal(a, b);
    assert.match(a, /unexpected key 'b'/);
  });
  it("keeps a message on one line", () => {
    const m = parseError({ attr: `a\nb\uD800${"x".repeat(100)}`, eq: "y" }).message;
    assert.ok(!m.includes("\n") && m.includes("\\n") && m.includes("\\ud800") && m.includes("…"), m);
  });
  it("freezes the tree", () => {
    const rule = parseRule({ any: [{ attr: "platform", in: ["ios", "android"] }] });
    assert.ok(Object.isFrozen(rule));
    assert.throws(() => {
      (rule as unknown as { rules: unknown[] }).rules.push(rule);
    }, TypeError);
  });
  it("never throws evaluating odd attributes", () => {
    const rule = parseRule({
      any: [
        { attr: "os_version", gte: "14" },
        { label: "tier", in: ["a", "b"] },
        { not: { attr: "platform", eq: "ios" } },
      ],
    });
    const odd: unknown[] = [undefined, null, 0, "", [], [1], () => 1, new Map([["platform", "ios"]])];
    odd.push({ labels: null }, { labels: [] }, { os_version: {} }, { platform: Symbol("ios") });
    for (const attrs of odd) {
      assert.equal(typeof matches(rule, attrs), "boolean");
    }
  });
});
