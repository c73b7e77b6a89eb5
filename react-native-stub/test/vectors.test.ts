/** The cross-language vectors in ../tests/vectors/ (written by generate.py): every case
 * through the device's own checks (core/trust.ts, as device_sim/trust.py), and those decided
 * by structure and signatures alone (not `policy`) through the schema layer
 * (core/documents.ts) as well; each reaches the verdict Python records. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { bytesToHex, utf8ToBytes } from "../src/core/bytes";
import { canonicalBytes, canonicalText } from "../src/core/canonical";
import { parseTime, verifyIndex, verifyManifest, verifyRootSelf, verifyRootSignedBy } from "../src/core/documents";
import { verifyEd25519 } from "../src/core/ed25519";
import { sha256Hex } from "../src/core/bytes";
import { ModelSyncError } from "../src/core/errors";
import { rolloutBucket } from "../src/core/rollout";
import { checkIndex, checkManifestSigned, finalRoot, nextRoot, trustedRoot } from "../src/core/trust";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");

function load<T = any>(rel: string): T {
  return JSON.parse(readFileSync(join(VECTORS, rel), "utf8")) as T;
}

interface CaseRef {
  name: string;
  file: string;
  operation: string;
  expect: string;
  why: string;
  policy: boolean;
}

/** A case through the checks a syncing device runs. */
function runDeviceCase(operation: string, body: any): void {
  const now = body.now === undefined ? Date.now() : parseTime(body.now);
  switch (operation) {
    case "verify_root_self":
      finalRoot(trustedRoot(body.document), now); // checks 1.1, 1.6
      return;
    case "root_chain": {
      let root = trustedRoot(body.trusted); // check 1.1
      body.chain.forEach((raw: unknown, i: number) => {
        root = nextRoot(root, raw, i + 1); // checks 1.2-1.4
      });
      finalRoot(root, now); // check 1.6
      return;
    }
    case "verify_manifest":
      checkManifestSigned(body.document, trustedRoot(body.root)); // checks 3.2, 3.3
      return;
    case "verify_index": {
      const signed = body.document?.signed;
      const named = typeof signed === "object" && signed !== null && !Array.isArray(signed) ? signed : {};
      // The device follows the fleet and channel the index names: check 2.3 is not under test.
      checkIndex(body.document, trustedRoot(body.root), {
        fleet: String(named.fleet ?? ""),
        channel: String(named.channel ?? ""),
        trustedVersion: body.trusted_version,
        nowMs: now,
      }); // checks 2.1-2.5
      return;
    }
    default:
      throw new Error(`unknown operation ${operation}`);
  }
}

/** A structure-and-signatures case through the schema layer: no versions, no clock. */
function runSchemaCase(operation: string, body: any): void {
  switch (operation) {
    case "verify_root_self":
      verifyRootSelf(body.document);
      return;
    case "root_chain": {
      let root = verifyRootSelf(body.trusted);
      for (const raw of body.chain) root = verifyRootSignedBy(root, raw);
      return;
    }
    case "verify_manifest":
      verifyManifest(body.document, verifyRootSelf(body.root));
      return;
    case "verify_index":
      verifyIndex(body.document, verifyRootSelf(body.root));
      return;
    default:
      throw new Error(`unknown operation ${operation}`);
  }
}

const index = load<{ cases: CaseRef[] }>("manifest.json");

function expectVerdict(c: CaseRef, run: () => void): void {
  if (c.expect === "ok") {
    run();
    return;
  }
  assert.throws(run, (err: unknown) => {
    assert.ok(err instanceof ModelSyncError, `not a ModelSyncError: ${String(err)}`);
    assert.equal(err.name, c.expect, `${c.name} (${c.why}): ${err.name}: ${err.message}`);
    return true;
  });
}

describe("document vectors through the device's checks", () => {
  for (const c of index.cases) {
    it(`${c.name} → ${c.expect}`, () => expectVerdict(c, () => runDeviceCase(c.operation, load(c.file))));
  }
});

describe("document vectors through the schema layer (structure and signatures)", () => {
  const schemaCases = index.cases.filter((c) => !c.policy);
  it("leaves the policy's cases to the device's checks", () => {
    assert.ok(schemaCases.length > 0 && schemaCases.length < index.cases.length);
  });
  for (const c of schemaCases) {
    it(`${c.name} → ${c.expect}`, () => expectVerdict(c, () => runSchemaCase(c.operation, load(c.file))));
  }
});

describe("canonical JSON vectors", () => {
  for (const c of load<{ cases: any[] }>("canonical.json").cases) {
    it(c.name, () => {
      const value = JSON.parse(c.json);
      assert.equal(canonicalText(value), c.canonical_utf8);
      assert.equal(bytesToHex(canonicalBytes(value)), c.canonical_hex);
    });
  }
});

describe("signing vectors", () => {
  const keys = load<{ keys: Record<string, { public_hex: string; keyid: string }> }>("keys.json").keys;
  it("key ids are the sha256 of the raw public key", () => {
    for (const k of Object.values(keys)) {
      assert.equal(sha256Hex(Uint8Array.from(Buffer.from(k.public_hex, "hex"))), k.keyid);
    }
  });
  for (const c of load<{ cases: any[] }>("signing.json").cases) {
    it(c.name, () => {
      const data = canonicalBytes(c.signed);
      assert.equal(bytesToHex(data), c.canonical_hex);
      assert.equal(sha256Hex(data), c.sha256);
      assert.ok(verifyEd25519(c.sig, data, keys[c.key]!.public_hex));
      const altered = canonicalBytes({ ...c.signed, version: c.signed.version + 1 });
      assert.equal(verifyEd25519(c.sig, altered, keys[c.key]!.public_hex), false);
    });
  }
});

describe("rollout vectors", () => {
  for (const c of load<{ cases: any[] }>("rollout.json").cases) {
    it(`${c.salt} | ${c.device_id} @ ${c.percent}%`, () => {
      const bucket = rolloutBucket(c.salt, c.device_id);
      assert.equal(bucket, c.bucket);
      assert.equal(bucket < c.percent * 100, c.included);
    });
  }
  it("hashes UTF-8, not UTF-16", () => {
    assert.equal(utf8ToBytes("Gerät").length, 6);
  });
});
