/** The device-side checks beyond the shared vectors (docs/device.md 1.2, 2.3-2.6, 3.x, 4.x):
 * one test per attack, each asserting the exact error class. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { utf8ToBytes } from "../src/core/bytes";
import { isWellFormed } from "../src/core/canonical";
import { parseTime, verifyRootSelf } from "../src/core/documents";
import {
  ExpiredError,
  GoldenVectorError,
  LengthMismatchError,
  MixAndMatchError,
  ModelRollbackError,
  NoArtifactForTargetError,
  RollbackError,
  RootChainError,
  RuntimeTooOldError,
  StaleIndexError,
  WrongChannelError,
  isPermanent,
} from "../src/core/errors";
import { executionProviders, fixedBatch } from "../src/core/providers";
import {
  MAX_ROOT_STEPS,
  checkArtifact,
  checkGolden,
  checkIndex,
  checkLengthSoFar,
  checkManifest,
  nextRoot,
  selectArtifact,
  wantedEntries,
} from "../src/core/trust";
import { ROLES_V1, ROLES_V2, bytesOf, entryFor, indexSigned, manifestSigned, rootSigned, sign } from "./forge";

const NOW = parseTime("2026-03-01T00:00:00Z");
const root1 = verifyRootSelf(sign(rootSigned(1, ROLES_V1), "root-1", "root-2"));
const ctx = { fleet: "field", channel: "stable", trustedVersion: null, nowMs: NOW };

describe("1. root", () => {
  it("1.2: the server answers another version than N+1", () => {
    const v3 = sign(rootSigned(3, ROLES_V2), "root-1", "root-2", "root-4");
    assert.throws(() => nextRoot(root1, v3), RootChainError);
  });
  it("1.2: at most 32 steps in one update", () => {
    const v2 = sign(rootSigned(2, ROLES_V2), "root-1", "root-2", "root-4");
    assert.throws(() => nextRoot(root1, v2, MAX_ROOT_STEPS + 1), RootChainError);
    assert.equal(nextRoot(root1, v2, MAX_ROOT_STEPS).version, 2);
  });
});

describe("2. index", () => {
  const index = sign(indexSigned(6, {}), "index-1");
  it("2.3: an index for another fleet", () => {
    const other = sign({ ...indexSigned(6, {}), fleet: "elsewhere" }, "index-1");
    assert.throws(() => checkIndex(other, root1, ctx), WrongChannelError);
  });
  it("2.3: an index for another channel", () => {
    assert.throws(() => checkIndex(index, root1, { ...ctx, channel: "beta" }), WrongChannelError);
  });
  it("2.4: lower than the saved version", () => {
    assert.throws(() => checkIndex(index, root1, { ...ctx, trustedVersion: 7 }), RollbackError);
  });
  it("2.5: expired is StaleIndexError (an ExpiredError) carrying the genuine index", () => {
    const old = sign(indexSigned(6, {}, "2026-02-01T00:00:00Z"), "index-1");
    assert.throws(
      () => checkIndex(old, root1, ctx),
      (err: unknown) => err instanceof StaleIndexError && err instanceof ExpiredError && (err.index as any).version === 6,
    );
  });
  it("2.6: first entry in the rollout; installed and failed versions skipped", () => {
    const e = (model: string, v: number, percent: number): any => entryFor({ v }, model, v, percent);
    const models = { m: [e("m", 3, 0), e("m", 2, 100)], n: [e("n", 5, 100)], x: [e("not-x", 1, 100)] };
    const idx = checkIndex(sign(indexSigned(6, models), "index-1"), root1, ctx);
    // x's entry names another model: never installed under the wrong name.
    assert.deepEqual(wantedEntries(idx, "dev", {}, {}).map((en) => [en.model, en.version]), [["m", 2], ["n", 5]]);
    assert.deepEqual(wantedEntries(idx, "dev", { m: 2 }, { n: [5] }), []);
    // Older than installed (a halted release's devices keep what they run): skipped too.
    assert.deepEqual(wantedEntries(idx, "dev", { m: 7, n: 6 }, {}), []);
  });
});

describe("3. manifest", () => {
  const env = sign(manifestSigned(3), "publisher-1", "publisher-2");
  const data = bytesOf(env);
  const entry = entryFor(env, "battery-anomaly", 3);
  it("accepts the manifest the entry names", () => {
    assert.equal(checkManifest(data, root1, entry, 2).version, 3);
  });
  it("3.1: bytes of another length or hash than the entry's", () => {
    assert.throws(() => checkManifest(data, root1, { ...entry, manifest: { ...entry.manifest, length: 10 } }, null), MixAndMatchError);
    const other = bytesOf(sign(manifestSigned(4), "publisher-1", "publisher-2"));
    assert.throws(() => checkManifest(other, root1, { ...entry, manifest: { ...entry.manifest, length: other.length } }, null), MixAndMatchError);
  });
  it("3.4: a genuine manifest of another version under this entry", () => {
    const v4 = sign(manifestSigned(4), "publisher-1", "publisher-2");
    assert.throws(() => checkManifest(bytesOf(v4), root1, entryFor(v4, "battery-anomaly", 3), null), MixAndMatchError);
  });
  it("3.5: lower than the installed version", () => {
    assert.throws(() => checkManifest(data, root1, entry, 4), ModelRollbackError);
  });
  it("3.6 and 3.7: no artifact for the target; written by a newer onnxruntime", () => {
    const m = checkManifest(data, root1, entry, null);
    assert.throws(() => selectArtifact(m, "ios-coreml", "1.24.3"), NoArtifactForTargetError);
    assert.equal(selectArtifact(m, "cpu", "1.24.3").target, "cpu"); // written by 1.24.4: same minor
    const newer = sign(manifestSigned(3, { ort_version: "1.25.0" }), "publisher-1", "publisher-2");
    const m2 = checkManifest(bytesOf(newer), root1, entryFor(newer, "battery-anomaly", 3), null);
    assert.throws(() => selectArtifact(m2, "cpu", "1.24.3"), RuntimeTooOldError);
    assert.ok(isPermanent(new RuntimeTooOldError("x")) && !isPermanent(new MixAndMatchError("x")));
  });
});

describe("4. artifact", () => {
  const env = sign(manifestSigned(3), "publisher-1", "publisher-2");
  const m = checkManifest(bytesOf(env), root1, entryFor(env, "battery-anomaly", 3), null);
  const art = m.artifacts[0]!;
  it("4.1: more bytes than declared stop the download at once", () => {
    checkLengthSoFar(art.length, art.length);
    assert.throws(() => checkLengthSoFar(art.length + 1, art.length), LengthMismatchError);
  });
  it("4.1, 4.2: final length, then sha256", () => {
    assert.throws(() => checkArtifact(new Uint8Array(3), art), LengthMismatchError);
    assert.throws(() => checkArtifact(new Uint8Array(art.length), art), /sha256/);
  });
  it("4.4: labels, scores and NaN against the tolerance", () => {
    const g = m.golden;
    const tol = art.golden_tolerance;
    assert.equal(checkGolden(g.label, g.score, g, tol), 0);
    assert.ok(checkGolden(g.label, g.score.map((s) => s + tol.score_atol / 2), g, tol) > 0);
    assert.throws(() => checkGolden(g.label, g.score.map((s) => s + tol.score_atol * 2), g, tol), GoldenVectorError);
    assert.throws(() => checkGolden(g.label.map((l) => -l), g.score, g, tol), GoldenVectorError);
    assert.throws(() => checkGolden(g.label, g.score.map(() => Number.NaN), g, tol), /NaN/);
    assert.throws(() => checkGolden(g.label.slice(1), g.score, g, tol), GoldenVectorError);
    assert.equal(checkGolden(g.label.map((l) => BigInt(l)), g.score, g, tol), 0, "int64 labels arrive as bigint");
  });
});

describe("execution providers and strings", () => {
  const env = sign(manifestSigned(3), "publisher-1", "publisher-2");
  const m = checkManifest(bytesOf(env), root1, entryFor(env, "battery-anomaly", 3), null);
  it("maps the plan to onnxruntime-common names, CPU last", () => {
    const art = { ...m.artifacts[0]!, ep_plan: { ...m.artifacts[0]!.ep_plan, providers: ["NNAPIExecutionProvider", "CPUExecutionProvider"] } };
    assert.deepEqual(executionProviders(art), ["nnapi", "cpu"]);
    assert.deepEqual(executionProviders(art, ["coreml", "cpu"]), ["cpu"]);
    assert.equal(fixedBatch({ ...art, input_shape: [1, 3] }), 1);
    assert.equal(fixedBatch({ ...art, input_shape: [null, 3] }), null);
  });
  it("the isWellFormed fallback finds lone surrogates like the built-in", () => {
    for (const s of ["abc", "😀", "\ud83d", "a\ude00b", "\ud83d\ude00\ud83d", ""]) {
      const builtIn = (s as unknown as { isWellFormed(): boolean }).isWellFormed();
      assert.equal(isWellFormed(s), builtIn, JSON.stringify(s));
    }
    assert.equal(utf8ToBytes("é").length, 2);
  });
});
