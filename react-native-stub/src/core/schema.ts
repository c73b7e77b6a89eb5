/**
 * The signed documents as TypeScript types, with validators that mirror the pydantic
 * schema in packager/manifest.py: a document Python refuses as malformed is a
 * FormatError here too. Unknown fields are allowed (they are signed) and ignored.
 */
import { FormatError } from "./errors";

export type Role = "root" | "publisher" | "index" | "offline";
/** The roles every root names (packager.manifest.ROLES). */
export const ROLES: readonly Role[] = ["root", "publisher", "index"];
/** `offline` signs the index snapshots inside offline packs (docs/offline.md); optional, so
 * roots written before it existed stay valid, and a device whose root lacks it refuses packs
 * and nothing else (packager.manifest.OPTIONAL_ROLES). */
export const OPTIONAL_ROLES: readonly Role[] = ["offline"];
export type Target = "android-nnapi" | "ios-coreml" | "cpu";
export const TARGETS: readonly Target[] = ["android-nnapi", "ios-coreml", "cpu"];

export interface Signature {
  keyid: string;
  sig: string;
}
export interface Envelope {
  signed: Record<string, unknown>;
  signatures: Signature[];
}
export interface PublicKey {
  keytype: "ed25519";
  scheme: "ed25519";
  public: string;
}
export interface RoleKeys {
  keyids: string[];
  threshold: number;
}
export interface Root {
  _type: "root";
  spec_version: string;
  version: number;
  expires: string;
  keys: Record<string, PublicKey>;
  /** Any role name is accepted (each must be well formed) and ones this version does not
   * know are ignored, so a newer root's extra roles do not stop an older device's root walk. */
  roles: Partial<Record<Role, RoleKeys>> & Record<string, RoleKeys | undefined>;
}
export interface TensorSpec {
  name: string;
  dtype: string;
  shape: (number | null)[];
}
export interface EpPlan {
  providers: string[];
  cpu_recommended: boolean;
  summary: string;
}
export interface GoldenTolerance {
  score_atol: number;
  max_label_mismatches: number;
}
export interface Compressed {
  encoding: "zstd";
  level: number;
  length: number;
  sha256: string;
}
export interface Artifact {
  target: Target;
  path: string;
  sha256: string;
  length: number;
  format: "ort" | "onnx";
  precision: "fp32" | "fp16" | "int8";
  ort_version: string;
  optimization_style: "Fixed" | "Runtime";
  input_shape: (number | null)[];
  ep_plan: EpPlan;
  golden_tolerance: GoldenTolerance;
  compressed: Compressed | null;
}
export interface GoldenVectors {
  inputs: number[][];
  label: number[];
  score: number[];
}
export interface ModelCard {
  family: string;
  features: { name: string }[];
  input: TensorSpec;
  outputs: TensorSpec[];
  threshold: number;
}
/** What the reference model does on the parity rows (packager.manifest.BehaviourProfile,
 * docs/behaviour.md): the score histogram's interior bin edges (B-1 edges, B bins), the
 * share of those rows in each bin, the reference's anomaly rate. A device counts what it
 * scores into the same bins (behaviour.ts) and reports the counts. */
export interface BehaviourProfile {
  score_edges: number[];
  reference_histogram: number[];
  anomaly_rate: number;
  rows: number;
  /** The anomaly rate a device may see in its first rows; null when the manifest sets none. */
  expected_band: [number, number] | null;
}
export interface ModelManifest {
  _type: "model-manifest";
  name: string;
  version: number;
  created: string;
  model: ModelCard;
  artifacts: Artifact[];
  golden: GoldenVectors;
  /** null: a manifest written before behaviour profiles existed (then a report's histogram is []). */
  behaviour: BehaviourProfile | null;
}
export interface FileRef {
  path: string;
  length: number;
  sha256: string;
}
export interface Rollout {
  percent: number;
  salt: string;
}
export interface IndexEntry {
  model: string;
  version: number;
  manifest: FileRef;
  rollout: Rollout;
  urgent: boolean;
}
/** When a held shadow candidate's agreement window is reported (docs/behaviour.md "Shadow
 * runs"): after this many rows, or this many hours since its first row. */
export interface ReportAfter {
  /** 1 to 1,000,000. */
  rows: number;
  /** Above 0, at most 720. */
  hours: number;
}
/** A shadow release's entry (index `shadows`): a candidate the device holds and runs beside
 * its active model, never activated from there (docs/device.md check 2.7). */
export interface ShadowEntry extends IndexEntry {
  report_after: ReportAfter;
}
export interface ChannelIndex {
  _type: "channel-index";
  fleet: string;
  channel: string;
  version: number;
  expires: string;
  models: Record<string, IndexEntry[]>;
  /** Per model, its shadow entries; {} when the index has none (the field is absent). */
  shadows: Record<string, ShadowEntry[]>;
}
/** The channel index as an offline pack carries it (packager.manifest.OfflineIndex): the
 * same entries, signed by the `offline` role, valid from `valid_from` to `expires`. A
 * distinct `_type` and role, so a pack's long-lived snapshot can never be served as an
 * online index, nor an online index passed off as a pack's. */
export interface OfflineIndex {
  _type: "offline-index";
  fleet: string;
  channel: string;
  /** The online index version the snapshot was taken from: the same counter. */
  version: number;
  valid_from: string;
  expires: string;
  pack_id: string;
  models: Record<string, IndexEntry[]>;
}

// --------------------------------------------------------------------------- helpers

type Json = unknown;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

function fail(where: string, what: string): never {
  throw new FormatError(`${where}: ${what}`);
}

function isObject(v: Json): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function obj(v: Json, where: string): Record<string, unknown> {
  if (!isObject(v)) fail(where, "expected an object");
  return v;
}

function field(o: Record<string, unknown>, key: string, where: string): unknown {
  if (!(key in o)) fail(`${where}.${key}`, "field required");
  return o[key];
}

function str(v: Json, where: string, pattern?: RegExp, minLength = 0): string {
  if (typeof v !== "string") fail(where, "expected a string");
  if (v.length < minLength) fail(where, `at least ${minLength} character(s)`);
  if (pattern !== undefined && !pattern.test(v)) fail(where, `does not match ${pattern.source}`);
  return v;
}

function int(v: Json, where: string, min?: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) fail(where, "expected an integer");
  if (min !== undefined && v < min) fail(where, `must be >= ${min}`);
  return v;
}

function num(v: Json, where: string, min?: number, max?: number): number {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(where, "expected a number");
  if (min !== undefined && v < min) fail(where, `must be >= ${min}`);
  if (max !== undefined && v > max) fail(where, `must be <= ${max}`);
  return v;
}

function bool(v: Json, where: string): boolean {
  if (typeof v !== "boolean") fail(where, "expected a boolean");
  return v;
}

function arr(v: Json, where: string, minLength = 0): unknown[] {
  if (!Array.isArray(v)) fail(where, "expected a list");
  if (v.length < minLength) fail(where, `at least ${minLength} item(s)`);
  return v;
}

function oneOf<T extends string>(v: Json, where: string, allowed: readonly T[]): T {
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
    fail(where, `expected one of ${allowed.join(", ")}`);
  }
  return v as T;
}

function optional<T>(o: Record<string, unknown>, key: string, dflt: T, check: (v: Json) => T): T {
  return key in o ? check(o[key]) : dflt;
}

function shape(v: Json, where: string): (number | null)[] {
  return arr(v, where).map((d, i) => (d === null ? null : int(d, `${where}.${i}`)));
}

// --------------------------------------------------------------------------- envelope

export function parseEnvelope(raw: Json): Envelope {
  if (!isObject(raw)) throw new FormatError("document is not a JSON object");
  try {
    const signed = obj(field(raw, "signed", "envelope"), "signed");
    const signatures = arr(field(raw, "signatures", "envelope"), "signatures").map((s, i) => {
      const o = obj(s, `signatures.${i}`);
      return {
        keyid: str(field(o, "keyid", `signatures.${i}`), `signatures.${i}.keyid`, HEX64),
        sig: str(field(o, "sig", `signatures.${i}`), `signatures.${i}.sig`, HEX128),
      };
    });
    return { signed, signatures };
  } catch (err) {
    if (err instanceof FormatError) throw new FormatError(`malformed envelope: ${err.message}`);
    throw err;
  }
}

// --------------------------------------------------------------------------- documents

function tensor(v: Json, where: string): TensorSpec {
  const o = obj(v, where);
  return {
    name: str(field(o, "name", where), `${where}.name`),
    dtype: oneOf(field(o, "dtype", where), `${where}.dtype`, ["float32", "float16", "int64"]),
    shape: shape(field(o, "shape", where), `${where}.shape`),
  };
}

export function validateRoot(s: Record<string, unknown>): Root {
  const w = "root";
  const keys: Record<string, PublicKey> = {};
  for (const [kid, k] of Object.entries(obj(field(s, "keys", w), `${w}.keys`))) {
    str(kid, `${w}.keys`, HEX64);
    const o = obj(k, `${w}.keys.${kid}`);
    keys[kid] = {
      keytype: optional(o, "keytype", "ed25519" as const, (v) => oneOf(v, "keytype", ["ed25519"] as const)),
      scheme: optional(o, "scheme", "ed25519" as const, (v) => oneOf(v, "scheme", ["ed25519"] as const)),
      public: str(field(o, "public", `${w}.keys.${kid}`), `${w}.keys.${kid}.public`, HEX64),
    };
  }
  const roles: Root["roles"] = {};
  for (const [role, r] of Object.entries(obj(field(s, "roles", w), `${w}.roles`))) {
    const o = obj(r, `${w}.roles.${role}`);
    const keys: RoleKeys = {
      keyids: arr(field(o, "keyids", role), `${w}.roles.${role}.keyids`, 1).map((k) => str(k, "keyid", HEX64)),
      threshold: int(field(o, "threshold", role), `${w}.roles.${role}.threshold`, 1),
    };
    // defineProperty: a role named "__proto__" is just a name, as it is in Python.
    Object.defineProperty(roles, role, { value: keys, enumerable: true, writable: true, configurable: true });
  }
  return {
    _type: "root",
    spec_version: optional(s, "spec_version", "1.0", (v) => str(v, `${w}.spec_version`)),
    version: int(field(s, "version", w), `${w}.version`, 1),
    expires: str(field(s, "expires", w), `${w}.expires`),
    keys,
    roles,
  };
}

function artifact(v: Json, where: string): Artifact {
  const o = obj(v, where);
  const f = (k: string): unknown => field(o, k, where);
  const plan = obj(f("ep_plan"), `${where}.ep_plan`);
  const tol = obj(f("golden_tolerance"), `${where}.golden_tolerance`);
  obj(f("quantization"), `${where}.quantization`);
  obj(f("parity"), `${where}.parity`);
  const compressed = optional(o, "compressed", null, (c): Compressed | null => {
    if (c === null) return null;
    const co = obj(c, `${where}.compressed`);
    return {
      encoding: optional(co, "encoding", "zstd" as const, (e) => oneOf(e, "encoding", ["zstd"] as const)),
      level: int(field(co, "level", where), `${where}.compressed.level`),
      length: int(field(co, "length", where), `${where}.compressed.length`, 0),
      sha256: str(field(co, "sha256", where), `${where}.compressed.sha256`, HEX64),
    };
  });
  return {
    target: oneOf(f("target"), `${where}.target`, TARGETS),
    path: str(f("path"), `${where}.path`),
    sha256: str(f("sha256"), `${where}.sha256`, HEX64),
    length: int(f("length"), `${where}.length`, 1),
    format: optional(o, "format", "ort" as const, (x) => oneOf(x, `${where}.format`, ["ort", "onnx"] as const)),
    precision: oneOf(f("precision"), `${where}.precision`, ["fp32", "fp16", "int8"] as const),
    ort_version: str(f("ort_version"), `${where}.ort_version`),
    optimization_style: oneOf(f("optimization_style"), `${where}.optimization_style`, ["Fixed", "Runtime"] as const),
    input_shape: shape(f("input_shape"), `${where}.input_shape`),
    ep_plan: {
      providers: arr(field(plan, "providers", where), `${where}.ep_plan.providers`).map((p) => str(p, "provider")),
      cpu_recommended: bool(field(plan, "cpu_recommended", where), `${where}.ep_plan.cpu_recommended`),
      summary: str(field(plan, "summary", where), `${where}.ep_plan.summary`),
    },
    golden_tolerance: {
      score_atol: num(field(tol, "score_atol", where), `${where}.golden_tolerance.score_atol`, 0),
      max_label_mismatches: optional(tol, "max_label_mismatches", 0, (x) => int(x, "max_label_mismatches", 0)),
    },
    compressed,
  };
}

/** The most interior edges a profile may have (packager.manifest: 63 edges, 64 bins). */
export const MAX_SCORE_EDGES = 63;

function behaviourProfile(v: Json, where: string): BehaviourProfile {
  const o = obj(v, where);
  const f = (k: string): unknown => field(o, k, where);
  const edges = arr(f("score_edges"), `${where}.score_edges`, 1).map((x, i) => num(x, `${where}.score_edges.${i}`));
  if (edges.length > MAX_SCORE_EDGES) fail(`${where}.score_edges`, `at most ${MAX_SCORE_EDGES} item(s)`);
  for (let i = 1; i < edges.length; i++) {
    if (!(edges[i]! > edges[i - 1]!)) fail(`${where}.score_edges`, "must be finite and strictly increasing");
  }
  const shares = arr(f("reference_histogram"), `${where}.reference_histogram`).map((x, i) =>
    num(x, `${where}.reference_histogram.${i}`),
  );
  if (shares.length !== edges.length + 1) {
    fail(`${where}.reference_histogram`, "needs one share per bin (len(score_edges) + 1)");
  }
  const band = optional(o, "expected_band", null, (b): [number, number] | null => {
    if (b === null) return null;
    const pair = arr(b, `${where}.expected_band`, 2);
    if (pair.length !== 2) fail(`${where}.expected_band`, "expected 2 items");
    const lo = num(pair[0], `${where}.expected_band.0`);
    const hi = num(pair[1], `${where}.expected_band.1`);
    if (!(lo >= 0 && lo <= hi && hi <= 1)) fail(`${where}.expected_band`, "must be 0 <= low <= high <= 1");
    return [lo, hi];
  });
  return {
    score_edges: edges,
    reference_histogram: shares,
    anomaly_rate: num(f("anomaly_rate"), `${where}.anomaly_rate`, 0, 1),
    rows: int(f("rows"), `${where}.rows`, 1),
    expected_band: band,
  };
}

export function validateManifest(s: Record<string, unknown>): ModelManifest {
  const w = "model-manifest";
  const f = (k: string): unknown => field(s, k, w);
  const model = obj(f("model"), `${w}.model`);
  const m = (k: string): unknown => field(model, k, `${w}.model`);
  for (const k of ["framework", "framework_version"]) str(m(k), `${w}.model.${k}`);
  const golden = obj(f("golden"), `${w}.golden`);
  const g = (k: string): unknown => field(golden, k, `${w}.golden`);
  if ("reference" in s && s.reference !== null) obj(s.reference, `${w}.reference`);
  return {
    _type: "model-manifest",
    name: str(f("name"), `${w}.name`, NAME),
    version: int(f("version"), `${w}.version`, 1),
    created: str(f("created"), `${w}.created`),
    model: {
      family: str(m("family"), `${w}.model.family`),
      features: arr(m("features"), `${w}.model.features`, 1).map((x, i) => ({
        name: str(field(obj(x, `features.${i}`), "name", `features.${i}`), `features.${i}.name`),
      })),
      input: tensor(m("input"), `${w}.model.input`),
      outputs: arr(m("outputs"), `${w}.model.outputs`).map((x, i) => tensor(x, `${w}.model.outputs.${i}`)),
      threshold: num(m("threshold"), `${w}.model.threshold`),
    },
    artifacts: arr(f("artifacts"), `${w}.artifacts`, 1).map((a, i) => artifact(a, `${w}.artifacts.${i}`)),
    golden: {
      inputs: arr(g("inputs"), `${w}.golden.inputs`, 1).map((row, i) =>
        arr(row, `${w}.golden.inputs.${i}`).map((x, j) => num(x, `${w}.golden.inputs.${i}.${j}`)),
      ),
      label: arr(g("label"), `${w}.golden.label`).map((x, i) => int(x, `${w}.golden.label.${i}`)),
      score: arr(g("score"), `${w}.golden.score`).map((x, i) => num(x, `${w}.golden.score.${i}`)),
    },
    // absent in manifests written before profiles existed, as in packager/manifest.py
    behaviour: optional(s, "behaviour", null, (b) => (b === null ? null : behaviourProfile(b, `${w}.behaviour`))),
  };
}

function entry(v: Json, where: string): IndexEntry {
  const o = obj(v, where);
  const ref = obj(field(o, "manifest", where), `${where}.manifest`);
  const ro = obj(field(o, "rollout", where), `${where}.rollout`);
  return {
    model: str(field(o, "model", where), `${where}.model`),
    version: int(field(o, "version", where), `${where}.version`, 1),
    manifest: {
      path: str(field(ref, "path", where), `${where}.manifest.path`),
      length: int(field(ref, "length", where), `${where}.manifest.length`, 1),
      sha256: str(field(ref, "sha256", where), `${where}.manifest.sha256`, HEX64),
    },
    rollout: {
      percent: num(field(ro, "percent", where), `${where}.rollout.percent`, 0, 100),
      salt: str(field(ro, "salt", where), `${where}.rollout.salt`, undefined, 1),
    },
    urgent: optional(o, "urgent", false, (x) => bool(x, `${where}.urgent`)),
  };
}

function shadowEntry(v: Json, where: string): ShadowEntry {
  const base = entry(v, where);
  const ra = obj(field(v as Record<string, unknown>, "report_after", where), `${where}.report_after`);
  const rows = int(field(ra, "rows", `${where}.report_after`), `${where}.report_after.rows`, 1);
  if (rows > 1_000_000) fail(`${where}.report_after.rows`, "must be <= 1000000");
  const hours = num(field(ra, "hours", `${where}.report_after`), `${where}.report_after.hours`, undefined, 720);
  if (!(hours > 0)) fail(`${where}.report_after.hours`, "must be > 0");
  return { ...base, report_after: { rows, hours } };
}

export function validateIndex(s: Record<string, unknown>): ChannelIndex {
  const w = "channel-index";
  const f = (k: string): unknown => field(s, k, w);
  const models: Record<string, IndexEntry[]> = {};
  for (const [name, list] of Object.entries(obj(f("models"), `${w}.models`))) {
    models[name] = arr(list, `${w}.models.${name}`).map((e, i) => entry(e, `${w}.models.${name}.${i}`));
  }
  // absent in indexes of channels without shadow releases, and in those written before them
  const shadows: Record<string, ShadowEntry[]> = {};
  if ("shadows" in s) {
    for (const [name, list] of Object.entries(obj(s.shadows, `${w}.shadows`))) {
      shadows[name] = arr(list, `${w}.shadows.${name}`).map((e, i) => shadowEntry(e, `${w}.shadows.${name}.${i}`));
    }
  }
  return {
    _type: "channel-index",
    fleet: str(f("fleet"), `${w}.fleet`),
    channel: str(f("channel"), `${w}.channel`),
    version: int(f("version"), `${w}.version`, 1),
    expires: str(f("expires"), `${w}.expires`),
    models,
    shadows,
  };
}

export function validateOfflineIndex(s: Record<string, unknown>): OfflineIndex {
  const w = "offline-index";
  const f = (k: string): unknown => field(s, k, w);
  const models: Record<string, IndexEntry[]> = {};
  for (const [name, list] of Object.entries(obj(f("models"), `${w}.models`))) {
    models[name] = arr(list, `${w}.models.${name}`).map((e, i) => entry(e, `${w}.models.${name}.${i}`));
  }
  return {
    _type: "offline-index",
    fleet: str(f("fleet"), `${w}.fleet`),
    channel: str(f("channel"), `${w}.channel`),
    version: int(f("version"), `${w}.version`, 1),
    valid_from: str(f("valid_from"), `${w}.valid_from`),
    expires: str(f("expires"), `${w}.expires`),
    pack_id: str(f("pack_id"), `${w}.pack_id`, HEX32),
    models,
  };
}
