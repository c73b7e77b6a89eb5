/** The cross-language vectors in ../tests/vectors/ (written by generate.py): every good
 * document verifies and every bad one fails with the error class Python reports. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { bytesToHex, utf8ToBytes } from "../src/core/bytes";
import { canonicalBytes, canonicalText } from "../src/core/canonical";
import {
  checkExpiry,
  parseTime,
  updateRoot,
  verifyIndex,
  verifyManifest,
  verifyRootSelf,
} from "../src/core/documents";
import { verifyEd25519 } from "../src/core/ed25519";
import { sha256Hex } from "../src/core/bytes";
import { ModelSyncError } from "../src/core/errors";
import { rolloutBucket } from "../src/core/rollout";

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
}

function runCase(operation: string, body: any): void {
  const now = body.now === undefined ? Date.now() : parseTime(body.now);
  switch (operation) {
    case "verify_root_self":
      verifyRootSelf(body.document, now);
      return;
    case "root_chain": {
      let root = verifyRootSelf(body.trusted, now, false);
      for (const raw of body.chain) root = updateRoot(root, raw);
      checkExpiry(root.expires, now, `root v${root.version}`);
      return;
    }
    case "verify_manifest":
      verifyManifest(body.document, verifyRootSelf(body.root, now, false));
      return;
    case "verify_index":
      verifyIndex(body.document, verifyRootSelf(body.root, now, false), {
        trustedVersion: body.trusted_version,
        nowMs: now,
      });
      return;
    default:
      throw new Error(`unknown operation ${operation}`);
  }
}

const index = load<{ cases: CaseRef[] }>("manifest.json");

describe("document vectors", () => {
  for (const c of index.cases) {
    it(`${c.name} → ${c.expect}`, () => {
      const body = load(c.file);
      if (c.expect === "ok") {
        runCase(c.operation, body);
        return;
      }
      assert.throws(
        () => runCase(c.operation, body),
        (err: unknown) => {
          assert.ok(err instanceof ModelSyncError, `not a ModelSyncError: ${String(err)}`);
          assert.equal(err.name, c.expect, `${c.name} (${c.why}): ${err.name}: ${err.message}`);
          return true;
        },
      );
    });
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
