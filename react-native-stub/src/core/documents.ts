/**
 * Signature and document checks, line for line with packager/manifest.py (parse_envelope,
 * check_signatures, verify_root_self, verify_root_signed_by, verify_manifest, verify_index,
 * verify_offline_index).
 * Signatures are checked over `signed` exactly as received, so fields a newer producer adds
 * are covered by the signature too. Structure and signatures only: the trust policy (root
 * v(N+1) chain, rollback, expiry) is trust.ts's, as it is device_sim/trust.py's.
 */
import { canonicalBytes } from "./canonical";
import { verifyEd25519 } from "./ed25519";
import {
  BadSignatureError,
  ExpiredError,
  FormatError,
  ThresholdError,
  UnknownKeyError,
  WrongTypeError,
} from "./errors";
import {
  type ChannelIndex,
  type Envelope,
  type ModelManifest,
  type OfflineIndex,
  type Role,
  type Root,
  parseEnvelope,
  validateIndex,
  validateManifest,
  validateOfflineIndex,
  validateRoot,
} from "./schema";

const TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;

/** Milliseconds since the epoch of an ISO-8601 `YYYY-MM-DDTHH:MM:SSZ`, the only time
 * format in signed documents. Anything else, or an impossible date, is a FormatError. */
export function parseTime(text: string): number {
  const m = TIME.exec(text);
  if (m === null) throw new FormatError(`bad timestamp ${JSON.stringify(text)}: expected YYYY-MM-DDTHH:MM:SSZ`);
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  const back = new Date(ms);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) {
    throw new FormatError(`bad timestamp ${JSON.stringify(text)}: no such date`);
  }
  return ms;
}

export function formatTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/** What `expires` means: at or after it the document is expired. When a check applies is
 * the trust policy's to say (trust.ts, checks 1.6 and 2.5). */
export function checkExpiry(expires: string, nowMs: number, what: string): void {
  if (parseTime(expires) <= nowMs) throw new ExpiredError(`${what} expired at ${expires}`);
}

export interface RoleKeySet {
  keys: Map<string, string>; // keyid -> public key hex
  threshold: number;
}

export function roleKeys(root: Root, role: Role): RoleKeySet {
  const spec = root.roles[role];
  if (spec === undefined) throw new FormatError(`root v${root.version} defines no ${JSON.stringify(role)} role`);
  const keys = new Map<string, string>();
  for (const kid of spec.keyids) {
    const k = root.keys[kid];
    if (k !== undefined) keys.set(kid, k.public);
  }
  return { keys, threshold: spec.threshold };
}

/** Count distinct role keys whose signature verifies; throw unless >= threshold.
 * A role key whose signature fails: BadSignatureError; only keys outside the role:
 * UnknownKeyError; too few valid ones: ThresholdError. */
export function checkSignatures(env: Envelope, role: RoleKeySet, what: string): number {
  const data = canonicalBytes(env.signed);
  const valid = new Set<string>();
  const bad: string[] = [];
  const unknown: string[] = [];
  for (const s of env.signatures) {
    const pub = role.keys.get(s.keyid);
    if (pub === undefined) {
      unknown.push(s.keyid);
      continue;
    }
    if (verifyEd25519(s.sig, data, pub)) valid.add(s.keyid);
    else bad.push(s.keyid);
  }
  if (valid.size >= role.threshold) return valid.size;
  if (bad.length > 0) {
    throw new BadSignatureError(`${what}: signature by key ${bad[0]!.slice(0, 12)}… does not verify`);
  }
  if (unknown.length > 0 && valid.size === 0) {
    throw new UnknownKeyError(`${what}: signed only by keys outside the role (${unknown[0]!.slice(0, 12)}…)`);
  }
  throw new ThresholdError(`${what}: ${valid.size} valid signature(s), threshold is ${role.threshold}`);
}

function typed(env: Envelope, expected: "root"): Root;
function typed(env: Envelope, expected: "model-manifest"): ModelManifest;
function typed(env: Envelope, expected: "channel-index"): ChannelIndex;
function typed(env: Envelope, expected: "offline-index"): OfflineIndex;
function typed(env: Envelope, expected: string): Root | ModelManifest | ChannelIndex | OfflineIndex {
  const got = env.signed._type;
  if (got !== expected) {
    throw new WrongTypeError(`expected _type ${JSON.stringify(expected)}, got ${JSON.stringify(got ?? null)}`);
  }
  try {
    if (expected === "root") return validateRoot(env.signed);
    if (expected === "model-manifest") return validateManifest(env.signed);
    if (expected === "offline-index") return validateOfflineIndex(env.signed);
    return validateIndex(env.signed);
  } catch (err) {
    if (err instanceof FormatError) throw new FormatError(`malformed ${expected}: ${err.message}`);
    throw err;
  }
}

/** A root signed by a threshold of its own root keys. Signatures only: whether it is new
 * enough or still current is the trust policy's (trust.ts, checks 1.2, 1.6). */
export function verifyRootSelf(raw: unknown): Root {
  const env = parseEnvelope(raw);
  const root = typed(env, "root");
  checkSignatures(env, roleKeys(root, "root"), `root v${root.version}`);
  return root;
}

/** A root signed by a threshold of `trusted`'s root keys and of its own. Signatures only:
 * that it is exactly v(N+1) is check 1.2 of the trust policy (trust.ts). */
export function verifyRootSignedBy(trusted: Root, raw: unknown): Root {
  const env = parseEnvelope(raw);
  const next = typed(env, "root");
  checkSignatures(env, roleKeys(trusted, "root"), `root v${next.version} (by v${trusted.version} keys)`);
  checkSignatures(env, roleKeys(next, "root"), `root v${next.version} (by its own keys)`);
  return next;
}

/** Publisher threshold; manifests never expire (indexes carry freshness). */
export function verifyManifest(raw: unknown, root: Root): ModelManifest {
  const env = parseEnvelope(raw);
  const manifest = typed(env, "model-manifest");
  checkSignatures(env, roleKeys(root, "publisher"), `manifest ${manifest.name} v${manifest.version}`);
  return manifest;
}

/** Index threshold. Signatures only: rollback and expiry are the trust policy's (trust.ts,
 * checks 2.4, 2.5), which runs them after this. */
export function verifyIndex(raw: unknown, root: Root): ChannelIndex {
  const env = parseEnvelope(raw);
  const index = typed(env, "channel-index");
  checkSignatures(env, roleKeys(root, "index"), `channel index ${index.fleet}/${index.channel}`);
  return index;
}

/** Offline-role threshold. Signatures only: the validity window, fleet and version are the
 * trust policy's (trust.ts checkOfflineIndex, check P.2). */
export function verifyOfflineIndex(raw: unknown, root: Root): OfflineIndex {
  const env = parseEnvelope(raw);
  const index = typed(env, "offline-index");
  checkSignatures(env, roleKeys(root, "offline"), `offline index ${index.fleet}/${index.channel}`);
  return index;
}
