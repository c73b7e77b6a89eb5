/** The cross-language vectors' cases, run through the core with no Node API, so that the
 * same code decides them under Node (vectors.test.ts) and under a Hermes runtime
 * (test-hermes/). ``load`` maps a path inside tests/vectors/ to its parsed JSON. */
import { BehaviourWindow } from "../src/core/behaviour";
import { bytesToHex, hexToBytes, sha256Hex, utf8ToBytes } from "../src/core/bytes";
import { canonicalBytes, canonicalText } from "../src/core/canonical";
import { parseTime, verifyIndex, verifyManifest, verifyRootSelf, verifyRootSignedBy } from "../src/core/documents";
import { verifyEd25519 } from "../src/core/ed25519";
import { ModelSyncError } from "../src/core/errors";
import { packVerdict, planPack } from "../src/core/pack";
import { pickShadow, rolloutBucket } from "../src/core/rollout";
import { AgreementWindow } from "../src/core/shadow";
import { checkIndex, checkManifestSigned, finalRoot, nextRoot, trustedRoot } from "../src/core/trust";

export type Load = (rel: string) => any;
/** The bytes of a binary vector file (packs/*.mspack). */
export type LoadBytes = (rel: string) => Uint8Array;

export interface CaseRef {
  name: string;
  file: string;
  operation: string;
  expect: string;
  why: string;
  policy: boolean;
}

/** A case through the checks a syncing device runs. */
export function runDeviceCase(operation: string, body: any): void {
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
export function runSchemaCase(operation: string, body: any): void {
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

/** "ok", or the name of the ModelSyncError ``run`` threw (anything else is rethrown). */
export function verdictOf(run: () => void): string {
  try {
    run();
    return "ok";
  } catch (err) {
    if (err instanceof ModelSyncError) return err.name;
    throw err;
  }
}

/** What is wrong with one canonical-JSON case, or null. */
export function canonicalProblem(c: any): string | null {
  const value = JSON.parse(c.json);
  if (canonicalText(value) !== c.canonical_utf8) return `${c.name}: text ${canonicalText(value)}`;
  if (bytesToHex(canonicalBytes(value)) !== c.canonical_hex) return `${c.name}: bytes differ`;
  return null;
}

/** What is wrong with one signing case, or null: bytes, digest, the signature, and a
 * signature that must not verify once the document changes. */
export function signingProblem(c: any, keys: Record<string, { public_hex: string }>): string | null {
  const data = canonicalBytes(c.signed);
  if (bytesToHex(data) !== c.canonical_hex) return `${c.name}: canonical bytes differ`;
  if (sha256Hex(data) !== c.sha256) return `${c.name}: sha256 differs`;
  const key = keys[c.key]!.public_hex;
  if (!verifyEd25519(c.sig, data, key)) return `${c.name}: signature does not verify`;
  const altered = canonicalBytes({ ...c.signed, version: c.signed.version + 1 });
  if (verifyEd25519(c.sig, altered, key)) return `${c.name}: signature verifies an altered document`;
  return null;
}

export function keyIdProblem(k: { public_hex: string; keyid: string }): string | null {
  return sha256Hex(hexToBytes(k.public_hex)) === k.keyid ? null : `key id ${k.keyid} is not its key's sha256`;
}

export function rolloutProblem(c: any): string | null {
  const bucket = rolloutBucket(c.salt, c.device_id);
  if (bucket !== c.bucket) return `${c.salt} | ${c.device_id}: bucket ${bucket}, not ${c.bucket}`;
  if ((bucket < c.percent * 100) !== c.included) return `${c.salt} | ${c.device_id} @ ${c.percent}%: inclusion`;
  return null;
}

export interface PackCase {
  name: string;
  file: string;
  expect: string;
  why: string;
  device: { id: string; fleet: string; channel: string; target: string; runtime: string };
  now: string;
  trusted_version: number | null;
  installed: Record<string, number>;
  models: unknown[];
}

/** An offline pack through planPack (checks P.1 to 4.2): the per-model verdicts, as
 * device_sim.pack_install.plan_pack's PlannedModel.verdict. Throws the pack-wide refusal. */
export function runPackCase(c: PackCase, trustedRoot: unknown, bytes: Uint8Array): unknown[] {
  const plan = planPack(bytes, {
    trustedRoot,
    deviceId: c.device.id,
    fleet: c.device.fleet,
    channel: c.device.channel,
    target: c.device.target,
    runtime: c.device.runtime,
    trustedVersion: c.trusted_version,
    installed: c.installed,
    failed: {},
    nowMs: parseTime(c.now),
  });
  return plan.models.map(packVerdict);
}

/** Canonical text of a JSON value with sorted keys, to compare verdict lists. */
function sortedJson(v: unknown): string {
  return canonicalText(v);
}

/** What is wrong with one pack case, or null. */
export function packProblem(c: PackCase, trustedRoot: unknown, bytes: Uint8Array): string | null {
  let models: unknown[] | null = null;
  const verdict = verdictOf(() => {
    models = runPackCase(c, trustedRoot, bytes);
  });
  if (verdict !== c.expect) return `${c.name}: planPack says ${verdict}, expected ${c.expect}`;
  if (verdict === "ok" && sortedJson(models) !== sortedJson(c.models)) {
    return `${c.name}: verdicts ${sortedJson(models)}, expected ${sortedJson(c.models)}`;
  }
  return null;
}

export interface BehaviourCase {
  why: string;
  score_edges: number[] | null;
  calls: { labels: number[]; scores: (number | null)[]; ms: number; provider: string }[];
  expect: Record<string, unknown>;
}

/** A behaviour case's calls through a BehaviourWindow (a null score is NaN, which JSON
 * cannot carry): its report, `since` left out. */
export function runBehaviourCase(c: BehaviourCase): Record<string, unknown> {
  const window = new BehaviourWindow(c.score_edges, "2026-01-01T00:00:00Z");
  for (const call of c.calls) {
    window.observe(call.labels, call.scores.map((s) => (s === null ? Number.NaN : s)), call.ms, call.provider);
  }
  const { since, ...rest } = window.report();
  if (since !== "2026-01-01T00:00:00Z") throw new Error(`since ${since}`);
  return rest;
}

/** What is wrong with one behaviour case, or null: the report, field for field. */
export function behaviourWindowProblem(c: BehaviourCase): string | null {
  const got = sortedJson(runBehaviourCase(c));
  return got === sortedJson(c.expect) ? null : `${c.why}: report ${got}, expected ${sortedJson(c.expect)}`;
}

export interface ShadowWindowCase {
  name: string;
  /** Calls of rows [active_score, active_label, shadow_score, shadow_label]. */
  calls: number[][][];
  expected: Record<string, unknown>;
}

export interface ShadowPickCase {
  name: string;
  entries: { version: number; rollout: { percent: number; salt: string } }[];
  device_id: string;
  runs_version: number;
  failed: number[];
  expected_version: number | null;
}

/** A shadow.json `windows` case through an AgreementWindow: its report, `since` and
 * `active_version` (not in the vectors) left out. */
export function runShadowWindowCase(c: ShadowWindowCase): Record<string, unknown> {
  const w = new AgreementWindow("m", 2, 1, Date.UTC(2026, 0, 1));
  for (const call of c.calls) w.observeRows(call);
  const { since: _since, active_version: _active, ...rest } = w.report();
  return rest;
}

export function shadowWindowProblem(c: ShadowWindowCase): string | null {
  const got = sortedJson(runShadowWindowCase(c));
  return got === sortedJson(c.expected) ? null : `${c.name}: window ${got}, expected ${sortedJson(c.expected)}`;
}

export function shadowPickProblem(c: ShadowPickCase): string | null {
  const got = pickShadow(c.entries, c.device_id, c.runs_version, c.failed)?.version ?? null;
  return got === c.expected_version ? null : `${c.name}: picked ${got}, expected ${c.expected_version}`;
}

/** Every case of every vector file, as "file: problem" lines (empty: all agree). With
 * `loadBytes`, the offline packs of packs.json too. */
export function allProblems(load: Load, loadBytes?: LoadBytes): { checked: number; problems: string[] } {
  const problems: string[] = [];
  let checked = 0;
  const note = (p: string | null): void => {
    checked += 1;
    if (p !== null) problems.push(p);
  };
  const index = load("manifest.json") as { cases: CaseRef[]; packs?: string; behaviour?: string; shadow?: string };
  for (const c of index.cases) {
    const body = load(c.file);
    const device = verdictOf(() => runDeviceCase(c.operation, body));
    note(device === c.expect ? null : `${c.name}: device checks say ${device}, expected ${c.expect}`);
    if (!c.policy) {
      const schema = verdictOf(() => runSchemaCase(c.operation, body));
      note(schema === c.expect ? null : `${c.name}: schema layer says ${schema}, expected ${c.expect}`);
    }
  }
  for (const c of load("canonical.json").cases) note(canonicalProblem(c));
  const keys = load("keys.json").keys as Record<string, { public_hex: string; keyid: string }>;
  for (const k of Object.values(keys)) note(keyIdProblem(k));
  for (const c of load("signing.json").cases) note(signingProblem(c, keys));
  for (const c of load("rollout.json").cases) note(rolloutProblem(c));
  note(utf8ToBytes("Gerät").length === 6 ? null : "UTF-8 is not what rollout buckets hash");
  for (const c of load(index.behaviour ?? "behaviour.json").cases) note(behaviourWindowProblem(c));
  if (index.shadow !== undefined) {
    const shadow = load(index.shadow) as { windows: ShadowWindowCase[]; pick: ShadowPickCase[] };
    for (const c of shadow.windows) note(shadowWindowProblem(c));
    for (const c of shadow.pick) note(shadowPickProblem(c));
  }
  if (loadBytes !== undefined) {
    const packs = load(index.packs ?? "packs.json") as { trusted_root: unknown; cases: PackCase[] };
    for (const c of packs.cases) note(packProblem(c, packs.trusted_root, loadBytes(c.file)));
  }
  return { checked, problems };
}
