/**
 * The device's trust checks in the numbered order of docs/device.md, the same as
 * device_sim/trust.py. Pure: no I/O. Each function returns what may now be trusted or
 * throws one precise VerificationError; the client saves nothing until a check passed.
 */
import { sha256Hex, utf8Decode } from "./bytes";
import {
  checkExpiry,
  parseTime,
  verifyIndex,
  verifyManifest,
  verifyOfflineIndex,
  verifyRootSelf,
  verifyRootSignedBy,
} from "./documents";
import {
  ExpiredError,
  FormatError,
  GoldenVectorError,
  HashMismatchError,
  LengthMismatchError,
  MixAndMatchError,
  ModelRollbackError,
  NoArtifactForTargetError,
  RollbackError,
  RootChainError,
  RuntimeTooOldError,
  StaleIndexError,
  StalePackError,
  WrongChannelError,
} from "./errors";
import { pickEntry } from "./rollout";
import type {
  Artifact,
  ChannelIndex,
  FileRef,
  GoldenTolerance,
  GoldenVectors,
  IndexEntry,
  ModelManifest,
  OfflineIndex,
  Role,
  Root,
  Target,
} from "./schema";

export const MAX_ROOT_STEPS = 32;
export const PLATFORM_TARGETS: Record<string, Target> = {
  android: "android-nnapi",
  ios: "ios-coreml",
  linux: "cpu",
};

export function parseJson(data: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(utf8Decode(data));
  } catch (err) {
    throw new FormatError(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

// --------------------------------------------------------------------------- 1. root

/** check 1.1: the shipped (or saved) root, signed by a threshold of its own root keys.
 * Expiry is check 1.6, after any newer roots were fetched. */
export function trustedRoot(raw: unknown): Root {
  return verifyRootSelf(raw);
}

/** checks 1.2-1.4 for one step of the root walk. Exactly v(N+1), checked before the
 * signatures: a replayed or older root is a rollback, a later one would skip the keys of the
 * versions between; both are refused here and nowhere else. */
export function nextRoot(trusted: Root, raw: unknown, steps = 1): Root {
  if (steps > MAX_ROOT_STEPS) {
    throw new RootChainError(`more than ${MAX_ROOT_STEPS} root versions in one update`); // check 1.2
  }
  const signed = typeof raw === "object" && raw !== null ? (raw as { signed?: unknown }).signed : undefined;
  const version = typeof signed === "object" && signed !== null ? (signed as { version?: unknown }).version : undefined;
  if (version !== trusted.version + 1) {
    // check 1.2
    throw new RootChainError(
      `server answered root v${String(version)} when asked for v${trusted.version + 1}`,
    );
  }
  return verifyRootSignedBy(trusted, raw); // checks 1.3, 1.4
}

/** check 1.5: did the `index` role's keys or threshold change between two roots? Then an
 * index signed by the old (perhaps compromised) key with an inflated version must not lock
 * the device out of the new key's indexes (TUF's fast-forward recovery). */
export function indexRoleChanged(before: Root, after: Root): boolean {
  return roleChanged(before, after, "index");
}

/** Did `role`'s keys or threshold change between two roots (check 1.5; for `offline`, the
 * pack floor is forgotten the same way the index is). */
export function roleChanged(before: Root, after: Root, role: Role): boolean {
  const a = before.roles[role];
  const b = after.roles[role];
  if (a === undefined || b === undefined) return a !== b;
  return a.threshold !== b.threshold || a.keyids.join(",") !== b.keyids.join(",");
}

/** check 1.6 */
export function finalRoot(root: Root, nowMs: number): Root {
  checkExpiry(root.expires, nowMs, `root v${root.version}`);
  return root;
}

// --------------------------------------------------------------------------- 2. index

export interface IndexContext {
  fleet: string;
  channel: string;
  trustedVersion: number | null;
  nowMs: number;
}

/** checks 2.1-2.5. A genuine but expired index throws StaleIndexError carrying it. */
export function checkIndex(raw: unknown, root: Root, ctx: IndexContext): ChannelIndex {
  const index = verifyIndex(raw, root); // checks 2.1, 2.2
  if (index.fleet !== ctx.fleet || index.channel !== ctx.channel) {
    // check 2.3
    throw new WrongChannelError(
      `index is for ${index.fleet}/${index.channel}, this device follows ${ctx.fleet}/${ctx.channel}`,
    );
  }
  if (ctx.trustedVersion !== null && index.version < ctx.trustedVersion) {
    // check 2.4
    throw new RollbackError(`channel index v${index.version} is older than trusted v${ctx.trustedVersion}`);
  }
  try {
    checkExpiry(index.expires, ctx.nowMs, `channel index v${index.version}`); // check 2.5
  } catch (err) {
    if (err instanceof ExpiredError) throw new StaleIndexError(err.message, index);
    throw err;
  }
  return index;
}

/** The longest validity window a device accepts on a pack's snapshot: a pack signed to live
 * for years would be a freeze waiting to happen (docs/offline.md, docs/security.md). */
export const MAX_PACK_WINDOW_DAYS = 366;
const DAY_MS = 86_400_000;

/** check P.2 (an offline pack's snapshot, docs/device.md "Installing from a pack"): the
 * offline role's threshold, this device's fleet and channel, a version not lower than any
 * index it trusts (online or from a pack), now inside the window, a window not too long. */
export function checkOfflineIndex(raw: unknown, root: Root, ctx: IndexContext): OfflineIndex {
  const index = verifyOfflineIndex(raw, root); // P.2.1: offline role, threshold
  if (index.fleet !== ctx.fleet || index.channel !== ctx.channel) {
    // P.2.2
    throw new WrongChannelError(
      `pack is for ${index.fleet}/${index.channel}, this device follows ${ctx.fleet}/${ctx.channel}`,
    );
  }
  if (ctx.trustedVersion !== null && index.version < ctx.trustedVersion) {
    // P.2.3
    throw new RollbackError(
      `pack carries channel index v${index.version}, older than trusted v${ctx.trustedVersion}`,
    );
  }
  const start = parseTime(index.valid_from);
  const end = parseTime(index.expires);
  if (end - start > MAX_PACK_WINDOW_DAYS * DAY_MS || end <= start) {
    // P.2.4
    throw new FormatError(
      `pack is valid from ${index.valid_from} to ${index.expires}: a window must be positive ` +
        `and at most ${MAX_PACK_WINDOW_DAYS} days`,
    );
  }
  if (!(start <= ctx.nowMs && ctx.nowMs < end)) {
    // P.2.5
    const early = ctx.nowMs < start;
    throw new StalePackError(
      `pack ${index.pack_id.slice(0, 8)}… is ${early ? "not valid before" : "expired at"} ` +
        `${early ? index.valid_from : index.expires}`,
    );
  }
  return index;
}

/** check 2.6: per model, the device's entry, unless installed already, older than the
 * installed version, or known bad. Older: a halted release leaves the devices that took it
 * on that version while the index falls back to the previous one; they keep what they run
 * (check 3.5 refuses it again should a manifest claim otherwise). */
export function wantedEntries(
  index: ChannelIndex | OfflineIndex,
  deviceId: string,
  installed: Readonly<Record<string, number>>,
  failed: Readonly<Record<string, readonly number[]>>,
): IndexEntry[] {
  const out: IndexEntry[] = [];
  for (const name of Object.keys(index.models).sort()) {
    const entry = pickEntry(index.models[name] ?? [], deviceId);
    if (entry === undefined || entry.model !== name) continue;
    if (entry.version <= (installed[name] ?? 0) || (failed[name] ?? []).includes(entry.version)) continue;
    out.push(entry);
  }
  return out;
}

// --------------------------------------------------------------------------- 3. manifest

/** check 3.1 */
export function checkManifestBytes(data: Uint8Array, ref: FileRef): void {
  if (data.length !== ref.length) {
    throw new MixAndMatchError(`manifest is ${data.length} bytes, the index entry says ${ref.length}`);
  }
  const got = sha256Hex(data);
  if (got !== ref.sha256) {
    throw new MixAndMatchError(`manifest sha256 ${got.slice(0, 12)}… is not the index entry's ${ref.sha256.slice(0, 12)}…`);
  }
}

/** checks 3.2, 3.3: a model manifest, signed by a threshold of the publisher keys. */
export function checkManifestSigned(raw: unknown, root: Root): ModelManifest {
  return verifyManifest(raw, root);
}

/** checks 3.1-3.5 */
export function checkManifest(
  data: Uint8Array,
  root: Root,
  entry: IndexEntry,
  installedVersion: number | null,
): ModelManifest {
  checkManifestBytes(data, entry.manifest); // check 3.1
  const manifest = checkManifestSigned(parseJson(data, "manifest"), root); // checks 3.2, 3.3
  if (manifest.name !== entry.model || manifest.version !== entry.version) {
    // check 3.4
    throw new MixAndMatchError(
      `manifest is ${manifest.name} v${manifest.version}, the index entry names ${entry.model} v${entry.version}`,
    );
  }
  if (installedVersion !== null && manifest.version < installedVersion) {
    // check 3.5
    throw new ModelRollbackError(
      `${manifest.name} v${manifest.version} is older than installed v${installedVersion}`,
    );
  }
  return manifest;
}

function majorMinor(version: string): [number, number] {
  const parts = version.split(".");
  const major = Number.parseInt(parts[0] ?? "", 10);
  const minor = parts.length > 1 ? Number.parseInt(parts[1] ?? "", 10) : 0;
  if (!Number.isInteger(major) || !Number.isInteger(minor) || !/^\d/.test(parts[1] ?? "0")) {
    throw new FormatError(`bad onnxruntime version ${JSON.stringify(version)}`);
  }
  return [major, minor];
}

/** checks 3.6, 3.7 */
export function selectArtifact(manifest: ModelManifest, target: Target, runtimeVersion: string): Artifact {
  const artifact = manifest.artifacts.find((a) => a.target === target);
  if (artifact === undefined) {
    // check 3.6
    const have = manifest.artifacts.map((a) => a.target).join(", ");
    throw new NoArtifactForTargetError(
      `${manifest.name} v${manifest.version} has no artifact for ${target} (has ${have})`,
    );
  }
  const [am, an] = majorMinor(artifact.ort_version);
  const [rm, rn] = majorMinor(runtimeVersion);
  if (am > rm || (am === rm && an > rn)) {
    // check 3.7
    throw new RuntimeTooOldError(
      `${manifest.name} v${manifest.version} ${target} was written by onnxruntime ${artifact.ort_version}; ` +
        `this device runs ${runtimeVersion}`,
    );
  }
  return artifact;
}

// --------------------------------------------------------------------------- 4. artifact

/** check 4.1, on every chunk: abort as soon as more arrives than declared. */
export function checkLengthSoFar(received: number, declared: number, what = "artifact"): void {
  if (received > declared) {
    throw new LengthMismatchError(`${what}: server sent more than the declared ${declared} bytes`);
  }
}

/** checks 4.1 (final length), 4.2 */
export function checkArtifact(data: Uint8Array, artifact: Artifact): void {
  if (data.length !== artifact.length) {
    throw new LengthMismatchError(`artifact is ${data.length} bytes, the manifest says ${artifact.length}`);
  }
  const got = sha256Hex(data);
  if (got !== artifact.sha256) {
    throw new HashMismatchError(`artifact sha256 ${got.slice(0, 12)}… is not the manifest's ${artifact.sha256.slice(0, 12)}…`);
  }
}

/** check 4.4. Returns the largest score difference seen. */
export function checkGolden(
  labels: ArrayLike<number | bigint>,
  scores: ArrayLike<number>,
  golden: GoldenVectors,
  tolerance: GoldenTolerance,
): number {
  const n = golden.inputs.length;
  if (labels.length !== n || scores.length !== n || golden.label.length !== n || golden.score.length !== n) {
    throw new GoldenVectorError(
      `golden vectors: ${n} inputs but ${labels.length} labels / ${scores.length} scores out ` +
        `(${golden.label.length} / ${golden.score.length} expected)`,
    );
  }
  let mismatches = 0;
  let worst = 0;
  for (let i = 0; i < n; i++) {
    if (Number(labels[i]) !== golden.label[i]) mismatches++;
    const d = Math.abs(Number(scores[i]) - golden.score[i]!);
    if (Number.isNaN(d)) throw new GoldenVectorError("golden vectors: the model produced NaN scores");
    worst = Math.max(worst, d);
  }
  if (mismatches > tolerance.max_label_mismatches) {
    throw new GoldenVectorError(
      `golden vectors: ${mismatches} label mismatches, tolerance is ${tolerance.max_label_mismatches}`,
    );
  }
  if (worst > tolerance.score_atol) {
    throw new GoldenVectorError(
      `golden vectors: max score difference ${worst.toPrecision(3)} exceeds tolerance ${tolerance.score_atol}`,
    );
  }
  return worst;
}
