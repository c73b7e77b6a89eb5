/**
 * Offline packs (`.mspack`): reading the container and planning an install from it, the
 * same as packager/offline_pack.py and device_sim/pack_install.py (docs/offline.md,
 * docs/device.md "Installing from a pack"). Pure: bytes in, a plan or one error out.
 *
 *   b"MSPACK\x00\x01"     magic and container version 1 (8 bytes)
 *   u32 big-endian        header length H (at most MAX_HEADER_BYTES)
 *   H bytes               header, UTF-8 JSON: {format: 1, fleet, channel, created, members}
 *   member bodies         concatenated in header order, nothing after the last
 *
 * The header is a table of contents, not a signed document: every member is trusted only
 * through the chain the device already follows (its own root, the offline index by the
 * `offline` role, manifests by the index entries' sha256, artifacts by the manifests').
 *
 *   P.1  the container: magic, header, every member's length, decompression, listed sha256
 *   1.x  the root walk from the device's root through the pack's roots (1.2-1.4), then 1.6
 *   P.2  the snapshot (trust.ts checkOfflineIndex)
 *   2.6  per model, the entry this device's bucket picks, newer than installed
 *   3.x  manifest from the entry's sha256, publisher threshold, name/version, no rollback
 *   4.1, 4.2  the artifact's length and sha256 from the manifest
 *
 * A pack-wide failure throws; a model's failure becomes that model's verdict.
 */
import { Decompress } from "fzstd";

import { concatBytes, sha256Hex, utf8Decode } from "./bytes";
import {
  MixAndMatchError,
  type ModelSyncError,
  NoArtifactForTargetError,
  PackFormatError,
  VerificationError,
  errorCode,
} from "./errors";
import type { Artifact, IndexEntry, ModelManifest, OfflineIndex, Root, Target } from "./schema";
import {
  checkArtifact,
  checkManifest,
  checkOfflineIndex,
  finalRoot,
  nextRoot,
  parseJson,
  selectArtifact,
  trustedRoot,
  wantedEntries,
} from "./trust";

export const PACK_MAGIC: readonly number[] = [0x4d, 0x53, 0x50, 0x41, 0x43, 0x4b, 0x00, 0x01]; // MSPACK\0\1
export const PACK_FORMAT = 1;
export const MAX_HEADER_BYTES = 4 << 20;
export const MAX_MEMBERS = 4096;
/** The container's own ceiling on a member; artifacts are capped by their manifests too. */
export const MAX_MEMBER_BYTES = 1 << 30;

export type MemberKind = "root" | "offline-index" | "manifest" | "artifact";
export const MEMBER_KINDS: readonly MemberKind[] = ["root", "offline-index", "manifest", "artifact"];
export type MemberEncoding = "identity" | "zstd";

export interface PackMember {
  name: string;
  kind: MemberKind;
  /** decoded bytes */
  length: number;
  /** of the decoded bytes, as listed (checked on every read) */
  sha256: string;
  encoding: MemberEncoding;
  stored_length: number;
  /** of the stored bytes in the file */
  offset: number;
}

export interface PackHeader {
  fleet: string;
  channel: string;
  created: string;
  members: PackMember[];
  /** the whole file */
  size: number;
}

const HEX64 = /^[0-9a-f]{64}$/;

function headerField(item: Record<string, unknown>, key: string, kind: "string" | "int", what: string): unknown {
  const v = item[key];
  const ok = kind === "string" ? typeof v === "string" : typeof v === "number" && Number.isInteger(v);
  if (!ok) throw new PackFormatError(`pack header: ${what}.${key} is missing or not a ${kind === "string" ? "str" : "int"}`);
  return v;
}

function text(v: unknown, max: number): string {
  return (typeof v === "string" ? v : v === undefined ? "" : String(v)).slice(0, max);
}

/** check P.1, the container's table of contents: magic, header length, header JSON, every
 * member's kind, encoding, lengths and sha256, and that the members account for exactly the
 * file's bytes. Throws PackFormatError. Members are read (and checked) by readMember. */
export function parsePack(bytes: Uint8Array): PackHeader {
  const pre = PACK_MAGIC.length + 4;
  if (bytes.length < pre || PACK_MAGIC.some((b, i) => bytes[i] !== b)) {
    if (bytes.length >= 6 && PACK_MAGIC.slice(0, 6).every((b, i) => bytes[i] === b)) {
      const v = Array.from(bytes.subarray(6, 8), (b) => b.toString(16).padStart(2, "0")).join("");
      throw new PackFormatError(`pack container version ${v} is not one this device reads`);
    }
    throw new PackFormatError("not an offline pack (the file does not start with MSPACK)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(PACK_MAGIC.length, false);
  if (length > MAX_HEADER_BYTES) {
    throw new PackFormatError(`pack header declares ${length} bytes, more than ${MAX_HEADER_BYTES}`);
  }
  if (bytes.length - pre < length) {
    throw new PackFormatError(`pack is cut short inside its header (${bytes.length - pre} of ${length} bytes)`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(utf8Decode(bytes.subarray(pre, pre + length)));
  } catch (err) {
    throw new PackFormatError(`pack header is not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new PackFormatError("pack header is not a JSON object");
  }
  const head = raw as Record<string, unknown>;
  if (head.format !== PACK_FORMAT) {
    throw new PackFormatError(`pack format ${JSON.stringify(head.format ?? null)}: this device reads format ${PACK_FORMAT}`);
  }
  const listed = head.members;
  if (!Array.isArray(listed) || listed.length === 0) throw new PackFormatError("pack header lists no members");
  if (listed.length > MAX_MEMBERS) {
    throw new PackFormatError(`pack header lists ${listed.length} members, more than ${MAX_MEMBERS}`);
  }
  const members: PackMember[] = [];
  let offset = pre + length;
  listed.forEach((item: unknown, i) => {
    const what = `members[${i}]`;
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw new PackFormatError(`pack header: ${what} is not an object`);
    }
    const o = item as Record<string, unknown>;
    const kind = headerField(o, "kind", "string", what) as string;
    const encoding = headerField(o, "encoding", "string", what) as string;
    const size = headerField(o, "length", "int", what) as number;
    const stored = headerField(o, "stored_length", "int", what) as number;
    const sha = headerField(o, "sha256", "string", what) as string;
    const name = headerField(o, "name", "string", what) as string;
    if (!(MEMBER_KINDS as readonly string[]).includes(kind)) {
      throw new PackFormatError(`pack header: ${what}.kind ${JSON.stringify(kind)} is not one of ${MEMBER_KINDS.join(", ")}`);
    }
    if (encoding !== "identity" && encoding !== "zstd") {
      throw new PackFormatError(`pack header: ${what}.encoding ${JSON.stringify(encoding)} is not identity or zstd`);
    }
    if (size < 0 || size > MAX_MEMBER_BYTES || stored < 0 || stored > MAX_MEMBER_BYTES) {
      throw new PackFormatError(`pack header: ${what} declares a length outside 0..${MAX_MEMBER_BYTES}`);
    }
    if (encoding === "identity" && stored !== size) {
      throw new PackFormatError(`pack header: ${what} is stored as is but its lengths differ`);
    }
    if (!HEX64.test(sha)) throw new PackFormatError(`pack header: ${what}.sha256 is not 64 lowercase hex digits`);
    members.push({
      name: name.slice(0, 256),
      kind: kind as MemberKind,
      length: size,
      sha256: sha,
      encoding,
      stored_length: stored,
      offset,
    });
    offset += stored;
  });
  if (offset !== bytes.length) {
    const cut = offset > bytes.length ? "cut short" : "longer than its header says";
    throw new PackFormatError(`pack is ${cut}: the header accounts for ${offset} bytes, the file has ${bytes.length}`);
  }
  if (members.filter((m) => m.kind === "offline-index").length !== 1) {
    throw new PackFormatError("pack must hold exactly one offline-index member");
  }
  return {
    fleet: text(head.fleet, 64),
    channel: text(head.channel, 64),
    created: text(head.created, 32),
    members,
    size: bytes.length,
  };
}

/** The member of `kind` listed with `sha256`, else the one called `name`: the header is
 * unsigned, so what a member really holds is checked after reading it. */
export function findMember(header: PackHeader, kind: MemberKind, sha256: string, name?: string): PackMember | undefined {
  return (
    header.members.find((m) => m.kind === kind && m.sha256 === sha256) ??
    (name === undefined ? undefined : header.members.find((m) => m.kind === kind && m.name === name))
  );
}

// fzstd is fed in small slices so that a bomb stops one block past the declared length
// instead of after the whole member has expanded.
const ZSTD_SLICE = 16 << 10;

function inflate(member: PackMember, stored: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  let over = false;
  const decoder = new Decompress((chunk) => {
    if (over) return;
    total += chunk.length;
    if (total > member.length) over = true;
    else parts.push(chunk);
  });
  try {
    for (let i = 0; i < stored.length || i === 0; i += ZSTD_SLICE) {
      decoder.push(stored.subarray(i, i + ZSTD_SLICE), i + ZSTD_SLICE >= stored.length);
      if (over) break;
    }
  } catch (err) {
    throw new PackFormatError(`pack member ${member.name} does not decompress: ${(err as Error).message}`);
  }
  if (over || total !== member.length) {
    throw new PackFormatError(
      `pack member ${member.name} decompresses to ${over ? "more" : total} bytes, the header says ${member.length}`,
    );
  }
  return parts.length === 1 ? parts[0]! : concatBytes(parts);
}

/** The member's bytes, decompressed into at most its declared length, with its listed
 * sha256 checked (a mismatch is a broken container: the chain's own checks come after). */
export function readMember(bytes: Uint8Array, member: PackMember): Uint8Array {
  const stored = bytes.subarray(member.offset, member.offset + member.stored_length);
  if (stored.length !== member.stored_length) {
    throw new PackFormatError(`pack member ${member.name}: ${stored.length} of ${member.stored_length} bytes`);
  }
  const data = member.encoding === "identity" ? stored : inflate(member, stored);
  if (sha256Hex(data) !== member.sha256) {
    throw new PackFormatError(`pack member ${member.name} does not match the sha256 its header lists`);
  }
  return data;
}

/** check P.1: every member reads back whole and as listed, before anything is trusted, so
 * a cut or altered pack is refused as a whole. */
export function verifyPack(bytes: Uint8Array, header: PackHeader): void {
  for (const member of header.members) readMember(bytes, member);
}

// --------------------------------------------------------------------------- planning

export interface PackDevice {
  /** The root envelope the device trusts now (saved, else shipped): check 1.1. */
  trustedRoot: unknown;
  deviceId: string;
  fleet: string;
  channel: string;
  target: Target | string;
  /** onnxruntime version (check 3.7). */
  runtime: string;
  /** The version below which no index is accepted: max(saved online index, pack floor). */
  trustedVersion: number | null;
  installed: Readonly<Record<string, number>>;
  failed: Readonly<Record<string, readonly number[]>>;
  nowMs: number;
}

export interface PlannedModel {
  entry: IndexEntry;
  manifestBytes?: Uint8Array;
  manifest?: ModelManifest;
  artifact?: Artifact;
  artifactBytes?: Uint8Array;
  error?: ModelSyncError;
}

/** The shared vectors' per-model verdict (tests/vectors/packs.json). */
export type PackVerdict =
  | { model: string; version: number; outcome: "install"; artifact: string }
  | { model: string; version: number; outcome: "failed"; reason: string };

export function packVerdict(planned: PlannedModel): PackVerdict {
  const base = { model: planned.entry.model, version: planned.entry.version };
  if (planned.error !== undefined) return { ...base, outcome: "failed", reason: errorCode(planned.error) };
  return { ...base, outcome: "install", artifact: planned.artifact!.sha256 };
}

export interface PackPlan {
  header: PackHeader;
  /** Root envelopes newer than the device's, oldest first, to save (check 1.5). */
  roots: unknown[];
  /** The newest root after the walk (check 1.6 passed). */
  root: Root;
  index: OfflineIndex;
  models: PlannedModel[];
}

/** checks P.1 to 4.2, pure: what installing this pack would do, or the refusal. */
export function planPack(bytes: Uint8Array, device: PackDevice): PackPlan {
  const header = parsePack(bytes); // check P.1
  verifyPack(bytes, header); // check P.1
  let root = trustedRoot(device.trustedRoot); // check 1.1
  const offered = new Map<number, unknown>();
  for (const member of header.members.filter((m) => m.kind === "root")) {
    const raw = parseJson(readMember(bytes, member), `pack member ${member.name}`);
    const signed = typeof raw === "object" && raw !== null ? (raw as { signed?: unknown }).signed : undefined;
    const version = typeof signed === "object" && signed !== null ? (signed as { version?: unknown }).version : undefined;
    if (typeof version === "number" && Number.isInteger(version)) offered.set(version, raw);
  }
  const newer: unknown[] = [];
  for (let step = 1; offered.has(root.version + 1); step++) {
    const raw = offered.get(root.version + 1);
    root = nextRoot(root, raw, step); // checks 1.2-1.4, one version at a time
    newer.push(raw);
  }
  finalRoot(root, device.nowMs); // check 1.6
  const indexMember = header.members.find((m) => m.kind === "offline-index")!;
  const rawIndex = parseJson(readMember(bytes, indexMember), "pack's offline index");
  const index = checkOfflineIndex(rawIndex, root, {
    fleet: device.fleet,
    channel: device.channel,
    trustedVersion: device.trustedVersion,
    nowMs: device.nowMs,
  }); // check P.2
  const plan: PackPlan = { header, roots: newer, root, index, models: [] };
  for (const entry of wantedEntries(index, device.deviceId, device.installed, device.failed)) {
    // check 2.6
    const planned: PlannedModel = { entry };
    plan.models.push(planned);
    try {
      planModel(bytes, header, planned, root, device, device.installed[entry.model] ?? null);
    } catch (err) {
      if (!(err instanceof VerificationError)) throw err;
      planned.error = err;
    }
  }
  return plan;
}

function planModel(
  bytes: Uint8Array,
  header: PackHeader,
  planned: PlannedModel,
  root: Root,
  device: PackDevice,
  have: number | null,
): void {
  const entry = planned.entry;
  const sha = entry.manifest.sha256;
  const member = findMember(header, "manifest", sha, `manifests/${sha}.json`);
  if (member === undefined) {
    throw new MixAndMatchError(`the pack holds no manifest for ${entry.model} v${entry.version}`);
  }
  const data = readMember(bytes, member);
  const manifest = checkManifest(data, root, entry, have); // checks 3.1-3.5
  const artifact = selectArtifact(manifest, device.target as Target, device.runtime); // checks 3.6, 3.7
  const held = findMember(header, "artifact", artifact.sha256, `artifacts/${artifact.sha256}.${artifact.format}`);
  if (held === undefined) {
    throw new NoArtifactForTargetError(
      `the pack carries no ${device.target} artifact of ${entry.model} v${entry.version} (exported for other targets)`,
    );
  }
  const blob = readMember(bytes, held);
  checkArtifact(blob, artifact); // checks 4.1, 4.2
  planned.manifestBytes = data;
  planned.manifest = manifest;
  planned.artifact = artifact;
  planned.artifactBytes = blob;
}
