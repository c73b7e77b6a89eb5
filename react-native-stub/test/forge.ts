/** Signed documents made in the test with the published TEST keys of tests/vectors/keys.json
 * (the same seeds Python uses), for checks the vectors do not reach: device-side checks
 * (1.2, 2.3, 3.x, 4.x) and the client's own flow. */
import { readFileSync } from "node:fs";
import { join } from "node:path";

import * as ed from "@noble/ed25519";

import { bytesToHex, hexToBytes, sha256Hex, utf8ToBytes } from "../src/core/bytes";
import { canonicalBytes } from "../src/core/canonical";
import "../src/core/ed25519"; // sets the synchronous SHA-512 hook

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");

const KEYS = (
  JSON.parse(readFileSync(join(VECTORS, "keys.json"), "utf8")) as {
    keys: Record<string, { seed_hex: string; public_hex: string; keyid: string }>;
  }
).keys;

export function keyid(name: string): string {
  return KEYS[name]!.keyid;
}

export function sign(signed: Record<string, unknown>, ...names: string[]): { signed: any; signatures: any[] } {
  const data = canonicalBytes(signed);
  return {
    signed,
    signatures: names.map((n) => ({ keyid: KEYS[n]!.keyid, sig: bytesToHex(ed.sign(data, hexToBytes(KEYS[n]!.seed_hex))) })),
  };
}

export function rootSigned(version: number, roles: Record<string, [string[], number]>, expires = "2099-01-01T00:00:00Z"): any {
  const keys: Record<string, unknown> = {};
  const roleDoc: Record<string, unknown> = {};
  for (const [role, [names, threshold]] of Object.entries(roles)) {
    for (const n of names) keys[keyid(n)] = { keytype: "ed25519", scheme: "ed25519", public: KEYS[n]!.public_hex };
    roleDoc[role] = { keyids: names.map(keyid).sort(), threshold };
  }
  return { _type: "root", spec_version: "1.0", version, expires, keys, roles: roleDoc };
}

export const ROLES_V1: Record<string, [string[], number]> = {
  root: [["root-1", "root-2", "root-3"], 2],
  publisher: [["publisher-1", "publisher-2", "publisher-3"], 2],
  index: [["index-1"], 1],
};

export const ROLES_V2: Record<string, [string[], number]> = { ...ROLES_V1, root: [["root-1", "root-2", "root-4"], 2] };

/** A manifest from the vectors, re-versioned and re-signed. */
export function manifestSigned(version: number, artifactOverrides: Record<string, unknown> = {}): any {
  const base = JSON.parse(readFileSync(join(VECTORS, "cases", "manifest-good.json"), "utf8")).document.signed;
  return {
    ...base,
    version,
    artifacts: base.artifacts.map((a: any) => ({ ...a, ...artifactOverrides })),
  };
}

export function bytesOf(doc: unknown): Uint8Array {
  return utf8ToBytes(JSON.stringify(doc));
}

export function entryFor(manifestEnvelope: unknown, model: string, version: number, percent = 100): any {
  const data = bytesOf(manifestEnvelope);
  const sha = sha256Hex(data);
  return {
    model,
    version,
    manifest: { path: `blobs/${sha}`, length: data.length, sha256: sha },
    rollout: { percent, salt: `${model}:${version}` },
    urgent: false,
  };
}

export function indexSigned(version: number, models: Record<string, unknown[]>, expires = "2099-01-01T00:00:00Z"): any {
  return { _type: "channel-index", spec_version: "1.0", fleet: "field", channel: "stable", version, expires, models };
}
