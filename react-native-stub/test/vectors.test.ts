/** The cross-language vectors in ../tests/vectors/ (written by generate.py): every case
 * through the device's own checks (core/trust.ts, as device_sim/trust.py), and those decided
 * by structure and signatures alone (not `policy`) through the schema layer
 * (core/documents.ts) as well; each reaches the verdict Python records. The cases are run
 * by vectorCases.ts, which test-hermes/ also runs under a Hermes runtime. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import {
  allProblems,
  canonicalProblem,
  type CaseRef,
  keyIdProblem,
  rolloutProblem,
  runDeviceCase,
  runSchemaCase,
  signingProblem,
  verdictOf,
} from "./vectorCases";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");

function load<T = any>(rel: string): T {
  return JSON.parse(readFileSync(join(VECTORS, rel), "utf8")) as T;
}

const index = load<{ cases: CaseRef[] }>("manifest.json");

describe("document vectors through the device's checks", () => {
  for (const c of index.cases) {
    it(`${c.name} → ${c.expect}`, () => {
      assert.equal(verdictOf(() => runDeviceCase(c.operation, load(c.file))), c.expect, c.why);
    });
  }
});

describe("document vectors through the schema layer (structure and signatures)", () => {
  const schemaCases = index.cases.filter((c) => !c.policy);
  it("leaves the policy's cases to the device's checks", () => {
    assert.ok(schemaCases.length > 0 && schemaCases.length < index.cases.length);
  });
  for (const c of schemaCases) {
    it(`${c.name} → ${c.expect}`, () => {
      assert.equal(verdictOf(() => runSchemaCase(c.operation, load(c.file))), c.expect, c.why);
    });
  }
});

describe("canonical JSON vectors", () => {
  for (const c of load<{ cases: any[] }>("canonical.json").cases) {
    it(c.name, () => assert.equal(canonicalProblem(c), null));
  }
});

describe("signing vectors", () => {
  const keys = load<{ keys: Record<string, { public_hex: string; keyid: string }> }>("keys.json").keys;
  it("key ids are the sha256 of the raw public key", () => {
    for (const k of Object.values(keys)) assert.equal(keyIdProblem(k), null);
  });
  for (const c of load<{ cases: any[] }>("signing.json").cases) {
    it(c.name, () => assert.equal(signingProblem(c, keys), null));
  }
});

describe("rollout vectors", () => {
  for (const c of load<{ cases: any[] }>("rollout.json").cases) {
    it(`${c.salt} | ${c.device_id} @ ${c.percent}%`, () => assert.equal(rolloutProblem(c), null));
  }
});

describe("every vector at once, as the Hermes runner checks them", () => {
  it("agrees", () => {
    const { checked, problems } = allProblems(load, (rel) => new Uint8Array(readFileSync(join(VECTORS, rel))));
    assert.ok(checked > 115, `only ${checked} checks`);
    assert.deepEqual(problems, []);
  });
});
