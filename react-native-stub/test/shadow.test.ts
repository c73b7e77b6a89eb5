/**
 * Shadow runs (docs/behaviour.md "Shadow runs", docs/device.md check 2.7), without Python:
 * every case of ../tests/vectors/shadow.json (written by tests/vectors/generate_shadow.py,
 * run by the Python device too) through AgreementWindow and pickShadow; ranks and Spearman;
 * what the service would refuse; the index's `shadows`; and the client's held candidate and
 * its agreement windows over a state directory written directly (no artifact is run, the
 * network is a fake fetch serving forged documents): counted, reported at report_after rows
 * or hours, kept across a restart, reported and deleted when the index drops the candidate.
 * The live service's side is test/shadowService.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, it } from "node:test";

import { sha256Hex } from "../src/core/bytes";
import { type ClientOptions, ModelSyncClient, SHADOW_SAVE_INTERVAL_MS } from "../src/core/client";
import { verifyIndex } from "../src/core/documents";
import { FormatError, VerificationError } from "../src/core/errors";
import { type HeldRecord, HeldShadows } from "../src/core/held";
import type { HttpFetch, HttpRequest, HttpResponse } from "../src/core/ports";
import { pickShadow } from "../src/core/rollout";
import { validateIndex } from "../src/core/schema";
import {
  AgreementWindow,
  RANK_PAIRS_MAX,
  type ShadowData,
  meanRanks,
  shadowProblem,
  spearman,
} from "../src/core/shadow";
import type { Installed, State } from "../src/core/state";
import { trustedRoot } from "../src/core/trust";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import { ROLES_V1, bytesOf, entryFor, indexSigned, manifestSigned, rootSigned, sign } from "./forge";
import { type ShadowPickCase, type ShadowWindowCase, runShadowWindowCase } from "./vectorCases";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");
const vectors = JSON.parse(readFileSync(join(VECTORS, "shadow.json"), "utf8")) as {
  rank_pairs_max: number;
  windows: ShadowWindowCase[];
  pick: ShadowPickCase[];
};

describe("shadow vectors: agreement windows", () => {
  it("has cases, and the same pair cap", () => {
    assert.ok(vectors.windows.length >= 10);
    assert.equal(vectors.rank_pairs_max, RANK_PAIRS_MAX);
  });
  for (const c of vectors.windows) {
    it(c.name, () => {
      const w = new AgreementWindow("fleet-iforest", 3, 2, Date.UTC(2026, 11, 3, 10, 0, 0, 750));
      for (const call of c.calls) w.observeRows(call);
      const report = w.report();
      assert.deepEqual(Object.keys(report).sort(), [
        "active_anomalies",
        "active_version",
        "agree",
        "rank_correlation",
        "rank_pairs",
        "rows",
        "shadow_anomalies",
        "since",
      ]);
      assert.equal(report.since, "2026-12-03T10:00:00Z");
      assert.equal(report.active_version, 2);
      const want = c.expected as unknown as ShadowData;
      for (const k of ["rows", "agree", "active_anomalies", "shadow_anomalies", "rank_pairs", "rank_correlation"] as const) {
        assert.equal(report[k], want[k], k);
      }
      assert.equal(shadowProblem(3, report), null, "a report the service takes");
      // the helper the Hermes runner uses (vectorCases.ts) agrees
      assert.deepEqual(runShadowWindowCase(c), c.expected);
    });
  }
});

describe("shadow vectors: which entry a device holds (check 2.7)", () => {
  it("has cases", () => assert.ok(vectors.pick.length >= 10));
  for (const c of vectors.pick) {
    it(`${c.name} → ${c.expected_version ?? "none"}`, () => {
      const got = pickShadow(c.entries, c.device_id, c.runs_version, c.failed);
      assert.equal(got?.version ?? null, c.expected_version);
      if (got !== undefined) assert.equal(got, c.entries.find((e) => e.version === got.version), "the entry itself");
    });
  }
});

describe("ranks and Spearman's correlation", () => {
  it("ranks are 1-based, ties take the mean of the ranks they span", () => {
    assert.deepEqual(meanRanks([]), []);
    assert.deepEqual(meanRanks([5]), [1]);
    assert.deepEqual(meanRanks([0.3, 0.1, 0.2]), [3, 1, 2]);
    assert.deepEqual(meanRanks([1, 1, 2]), [1.5, 1.5, 3]);
    assert.deepEqual(meanRanks([2, 1, 2, 2, 0]), [4, 2, 4, 4, 1]);
    assert.deepEqual(meanRanks([0, -0]), [1.5, 1.5], "-0 equals 0");
    assert.deepEqual(meanRanks([Number.NEGATIVE_INFINITY, 1, Number.POSITIVE_INFINITY]), [1, 2, 3]);
  });
  it("agrees with counting (the vectors' definition) on many values with ties", () => {
    const values = Array.from({ length: 500 }, (_, k) => ((k * 37) % 23) / 7 - 1);
    const counted = values.map((v) => 1 + values.filter((w) => w < v).length + (values.filter((w) => w === v).length - 1) / 2);
    assert.deepEqual(meanRanks(values), counted);
  });
  it("is 1 for the same order, -1 for the reverse, null for fewer than two pairs or a constant side", () => {
    assert.equal(spearman([1, 2, 3, 4], [10, 20, 30, 1000]), 1);
    assert.equal(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1);
    assert.equal(spearman([], []), null);
    assert.equal(spearman([1], [2]), null);
    assert.equal(spearman([1, 1, 1], [1, 2, 3]), null);
    assert.equal(spearman([1, 2, 3], [7, 7, 7]), null);
    assert.throws(() => spearman([1, 2], [1]), RangeError);
  });
  it("rounds to 6 decimals", () => {
    // ranks [1,2,3,4] against [1,3,2,4]: 1 - 6*2/(4*15) = 0.8
    assert.equal(spearman([1, 2, 3, 4], [1, 3, 2, 4]), 0.8);
    const r = spearman([1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 7, 5, 6])!;
    assert.equal(r, Math.round(r * 1e6) / 1e6);
    assert.equal(r, 0.821429); // 1 - 6 * 10 / (7 * 48), as the vectors' generator computes it
  });
});

describe("AgreementWindow", () => {
  it("counts agreement and both sides' anomalies; bigint labels", () => {
    const w = new AgreementWindow("m", 3, 2, 0);
    w.observe([1n, -1n, 1n, -1n], [0.1, -0.2, 0.3, -0.4], [1n, 1n, -1n, -1n], [0.2, 0.1, -0.1, -0.3]);
    const r = w.report();
    assert.deepEqual([r.rows, r.agree, r.active_anomalies, r.shadow_anomalies, r.rank_pairs], [4, 2, 2, 2, 4]);
  });
  it("keeps the first RANK_PAIRS_MAX pairs, none with a NaN score; a missing score is NaN", () => {
    const w = new AgreementWindow("m", 3, 2, 0);
    w.observe([1, 1, 1], [0.1, Number.NaN, 0.3], [1, 1, 1], [0.2]);
    assert.deepEqual([w.rows, w.rankPairs], [3, 1]);
    for (let i = 0; i < 30; i++) w.observe(new Array(100).fill(1), new Array(100).fill(i), new Array(100).fill(1), new Array(100).fill(-i));
    assert.deepEqual([w.rows, w.rankPairs], [3003, RANK_PAIRS_MAX]);
    assert.equal(shadowProblem(3, w.report()), null);
  });
  it("refuses a call whose two sides labelled different row counts", () => {
    const w = new AgreementWindow("m", 3, 2, 0);
    assert.throws(() => w.observe([1, 1], [0, 0], [1], [0]), RangeError);
    assert.equal(w.rows, 0);
  });
  it("is due at report_after rows, or report_after hours after its first row; an empty one never", () => {
    const after = { rows: 10, hours: 2 };
    const t0 = Date.UTC(2026, 0, 1);
    const w = new AgreementWindow("m", 3, 2, t0);
    assert.equal(w.due(after, t0 + 10 * 3_600_000), false, "no rows yet");
    w.observe(new Array(9).fill(1), new Array(9).fill(0), new Array(9).fill(1), new Array(9).fill(0));
    assert.equal(w.due(after, t0), false);
    assert.equal(w.due(after, t0 + 2 * 3_600_000 - 1), false);
    assert.equal(w.due(after, t0 + 2 * 3_600_000), true);
    w.observe([1], [0], [1], [0]);
    assert.equal(w.due(after, t0), true);
  });
  it("is saved and restored as it was; a torn or foreign one is not restored", () => {
    const w = new AgreementWindow("m", 3, 2, Date.UTC(2026, 0, 1, 8));
    w.observeRows(vectors.windows[3]!.calls[0]!);
    const back = AgreementWindow.fromJSON(JSON.parse(JSON.stringify(w.toJSON())))!;
    assert.deepEqual(back.report(), w.report());
    assert.equal(back.key, w.key);
    const saved = w.toJSON();
    for (const bad of [null, "w", { ...saved, rows: -1 }, { ...saved, agree: 99 }, { ...saved, pairs: [[1]] }, { ...saved, model: 1 }]) {
      assert.equal(AgreementWindow.fromJSON(bad), null, JSON.stringify(bad));
    }
  });
});

describe("shadowProblem: what the service refuses", () => {
  const good: ShadowData = {
    since: "2026-01-01T00:00:00Z",
    active_version: 2,
    rows: 10,
    agree: 9,
    active_anomalies: 1,
    shadow_anomalies: 2,
    rank_pairs: 10,
    rank_correlation: 0.5,
  };
  it("takes a consistent window, a null correlation included", () => {
    assert.equal(shadowProblem(3, good), null);
    assert.equal(shadowProblem(3, { ...good, rank_correlation: null, rank_pairs: 1 }), null);
  });
  it("refuses counts above rows, too many pairs, a correlation outside [-1, 1], an active version not below", () => {
    assert.match(shadowProblem(3, { ...good, agree: 11 })!, /agree/);
    assert.match(shadowProblem(3, { ...good, shadow_anomalies: 11 })!, /shadow_anomalies/);
    assert.match(shadowProblem(3, { ...good, rank_pairs: 11 })!, /rank_pairs/);
    assert.match(shadowProblem(3, { ...good, rows: 5000, rank_pairs: 2001 })!, /rank_pairs/);
    assert.match(shadowProblem(3, { ...good, rank_correlation: 1.5 })!, /rank_correlation/);
    assert.match(shadowProblem(3, { ...good, rows: 0, agree: 0, active_anomalies: 0, shadow_anomalies: 0, rank_pairs: 0 })!, /rows/);
    assert.match(shadowProblem(2, good)!, /active_version/);
    assert.match(shadowProblem(3, { ...good, active_version: 0 })!, /active_version/);
    assert.match(shadowProblem(3, { ...good, since: "now" })!, /since/);
    assert.match(shadowProblem(3, { ...good, extra: 1 } as never)!, /fields/);
  });
});

describe("the signed index's shadows", () => {
  const root = sign(rootSigned(1, ROLES_V1), "root-1", "root-2");
  const entry = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
    ...entryFor(sign(manifestSigned(2), "publisher-1", "publisher-2"), "battery-anomaly", 2),
    report_after: { rows: 1000, hours: 24 },
    ...over,
  });
  const withShadows = (shadows: unknown): Record<string, unknown> => ({ ...indexSigned(3, {}), shadows });

  it("is {} when absent (an index of a channel without shadow releases)", () => {
    assert.deepEqual(validateIndex(indexSigned(3, {})).shadows, {});
  });
  it("is read per model, report_after included; hours may be fractional or whole", () => {
    const parsed = validateIndex(withShadows({ "battery-anomaly": [entry({ report_after: { rows: 1, hours: 0.5 } })] }));
    const e = parsed.shadows["battery-anomaly"]![0]!;
    assert.deepEqual([e.version, e.report_after, e.urgent], [2, { rows: 1, hours: 0.5 }, false]);
    const whole = validateIndex(withShadows({ m: [entry({ report_after: { rows: 1_000_000, hours: 720 } })] }));
    assert.deepEqual(whole.shadows.m![0]!.report_after, { rows: 1_000_000, hours: 720 });
  });
  it("refuses a malformed shadows map or report_after", () => {
    const bad: unknown[] = [
      null,
      [],
      { m: {} },
      { m: [entry({ report_after: undefined })] },
      { m: [entry({ report_after: { rows: 0, hours: 1 } })] },
      { m: [entry({ report_after: { rows: 1_000_001, hours: 1 } })] },
      { m: [entry({ report_after: { rows: 1.5, hours: 1 } })] },
      { m: [entry({ report_after: { rows: 10, hours: 0 } })] },
      { m: [entry({ report_after: { rows: 10, hours: 720.5 } })] },
      { m: [entry({ report_after: { rows: 10 } })] },
      { m: [entry({ report_after: { rows: 10, hours: "1" } })] },
      { m: [entry({ rollout: undefined })] },
    ];
    for (const s of bad) {
      assert.throws(() => validateIndex(withShadows(s)), FormatError, JSON.stringify(s));
    }
  });
  it("is signed with the rest: a changed report_after breaks the index's signature", () => {
    const signed = withShadows({ "battery-anomaly": [entry()] });
    const env = sign(signed, "index-1");
    const index = verifyIndex(env, trustedRoot(root));
    assert.equal(index.shadows["battery-anomaly"]![0]!.report_after.rows, 1000);
    const tampered = JSON.parse(JSON.stringify(env));
    tampered.signed.shadows["battery-anomaly"][0].report_after.rows = 1;
    assert.throws(() => verifyIndex(tampered, trustedRoot(root)), VerificationError);
  });
});

// ----------------------------------------------------------------------------- the client

const MODEL = "battery-anomaly"; // the name in the vectors' manifest
const root1 = sign(rootSigned(1, ROLES_V1), "root-1", "root-2");
let dirs: string;
let n = 0;

function manifestEnvelope(version: number): any {
  return sign(manifestSigned(version), "publisher-1", "publisher-2");
}

/** A fake service: root walk ends at v1, the index offers v1 to install and `shadows`. */
class FakeNet {
  reports: any[] = [];
  requests: string[] = [];
  shadows: Record<string, unknown[]> | undefined;
  indexVersion = 1;

  fetch: HttpFetch = async (url: string, init: HttpRequest): Promise<HttpResponse> => {
    const path = new URL(url).pathname;
    this.requests.push(path);
    const json = (status: number, doc: unknown): HttpResponse =>
      new Response(bytesOf(doc), { status, headers: { "Content-Type": "application/json" } }) as unknown as HttpResponse;
    if (path.endsWith("/reports") && init.method === "POST") {
      this.reports.push(...(JSON.parse(init.body ?? "{}") as { events: unknown[] }).events);
      return json(200, { accepted: 0, duplicates: 0 });
    }
    if (path === "/v1/channels/stable/index") {
      const signed: Record<string, unknown> = indexSigned(this.indexVersion, { [MODEL]: [entryFor(manifestEnvelope(1), MODEL, 1)] });
      if (this.shadows !== undefined) signed.shadows = this.shadows;
      return json(200, sign(signed, "index-1"));
    }
    return json(404, { detail: "not found", code: "not_found" });
  };

  offerShadow(version: number, reportAfter = { rows: 10, hours: 1 }): void {
    this.shadows = { [MODEL]: [{ ...entryFor(manifestEnvelope(version), MODEL, version), report_after: reportAfter }] };
    this.indexVersion += 1;
  }

  dropShadows(): void {
    this.shadows = undefined;
    this.indexVersion += 1;
  }
}

interface Device {
  client: ModelSyncClient;
  storage: NodeStorage;
  net: FakeNet;
  state: State;
  clock: { now: number };
  opts: ClientOptions;
}

/** A registered client running v1 (written into the state directly) and holding
 * v`candidate` as a shadow candidate with `reportAfter`. */
async function device(reportAfter = { rows: 10, hours: 1 }, candidate = 2): Promise<Device> {
  const id = `shadow-${++n}`;
  const net = new FakeNet();
  const storage = new NodeStorage(join(dirs, id));
  const clock = { now: Date.UTC(2026, 11, 3, 10, 0, 0) };
  const opts: ClientOptions = {
    server: "http://modelsync.test",
    channel: "stable",
    deviceId: id,
    platform: "linux",
    ortVersion: "1.24.3",
    storage,
    fetch: net.fetch,
    network: new StaticNetwork(),
    runner: { load: () => Promise.reject(new Error("no artifact is run in these tests")) },
    shippedRoot: root1,
    now: () => clock.now,
  };
  const client = new ModelSyncClient(opts);
  const state = (client as unknown as { state: State }).state;
  if ((await state.identity()) === null) {
    await state.saveIdentity({ device_id: id, fleet: "field", platform: "linux", device_token: "msd_test" });
    await state.saveRoot(root1);
    const art1 = new Uint8Array(16).fill(1);
    const inst: Installed = {
      name: MODEL,
      version: 1,
      target: "cpu",
      sha256: sha256Hex(art1),
      length: 16,
      artifact_path: `models/${MODEL}/v1/${sha256Hex(art1)}.ort`,
      manifest_path: `models/${MODEL}/v1/manifest.json`,
      providers: ["cpu"],
      fixed_batch: null,
      installed_at: "2026-12-03T10:00:00Z",
    };
    await storage.writeAtomic(inst.manifest_path, bytesOf(manifestEnvelope(1)));
    await storage.writeAtomic(inst.artifact_path, art1);
    await state.swap(MODEL, inst);
    const held = new HeldShadows(state);
    const manifest2 = bytesOf(manifestEnvelope(candidate));
    const art2 = new Uint8Array(16).fill(2);
    const rec: HeldRecord = {
      version: candidate,
      manifest_sha256: sha256Hex(manifest2),
      artifact_sha256: sha256Hex(art2),
      target: "cpu",
      report_after: reportAfter,
      length: 16,
      providers: ["cpu"],
      fixed_batch: null,
      held_at: "2026-12-03T10:00:00Z",
    };
    await storage.writeAtomic(held.manifestPath(MODEL, candidate), manifest2);
    await storage.writeAtomic(held.artifactPath(MODEL, rec), art2);
    await held.hold(MODEL, rec);
    net.offerShadow(candidate, reportAfter);
  }
  return { client, storage, net, state, clock, opts };
}

/** `rows` rows: the active model says normal with score k, the candidate agrees on the
 * first `agree` and flags the rest. */
function call(rows: number, agree = rows): [{ label: number[]; score: number[] }, { label: number[]; score: number[] }] {
  const idx = Array.from({ length: rows }, (_, k) => k);
  return [
    { label: idx.map(() => 1), score: idx.map((k) => k / 10) },
    { label: idx.map((k) => (k < agree ? 1 : -1)), score: idx.map((k) => k / 5) },
  ];
}

async function queued(d: Device): Promise<any[]> {
  const out: any[] = [];
  for (const name of await d.client.pendingReports()) out.push(await d.state.readJson(`queue/${name}`));
  return out;
}

describe("the client's held candidate and its agreement windows", () => {
  before(() => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-shadow-"));
  });

  it("heldShadow names the held version and manifest; a candidate whose file is not whole is not held", async () => {
    const d = await device();
    const held = await d.client.heldShadow(MODEL);
    assert.deepEqual(
      held && [held.name, held.version, held.manifestSha256, held.reportAfter, held.providers, held.fixedBatch],
      [MODEL, 2, sha256Hex(bytesOf(manifestEnvelope(2))), { rows: 10, hours: 1 }, ["cpu"], null],
    );
    assert.equal(held!.path, d.storage.localPath(`shadow/${MODEL}/v2/${sha256Hex(new Uint8Array(16).fill(2))}.ort`));
    assert.equal(await d.client.heldShadow("other-model"), null);
    assert.equal((await d.client.currentModel(MODEL))?.version, 1, "the held version is not served");
    await d.storage.writeAtomic(`shadow/${MODEL}/v2/${sha256Hex(new Uint8Array(16).fill(2))}.ort`, new Uint8Array(3));
    assert.equal(await d.client.heldShadow(MODEL), null);
  });

  it("counts calls into one window and queues one shadow report at report_after rows, then starts anew", async () => {
    const d = await device({ rows: 10, hours: 1 });
    assert.deepEqual(await d.client.observeShadow(MODEL, 2, 1, ...call(4, 3)), []);
    assert.deepEqual(await d.client.observeShadow(MODEL, 2, 1, ...call(4, 4)), []);
    const open = await d.client.shadowWindows(MODEL);
    assert.deepEqual(open.map((w) => [w.version, w.active_version, w.rows, w.agree]), [[2, 1, 8, 7]]);
    d.clock.now += 5_000;
    const reported = await d.client.observeShadow(MODEL, 2, 1, ...call(4, 2)); // 12 rows: due
    assert.equal(reported.length, 1);
    const want = {
      since: "2026-12-03T10:00:00Z",
      active_version: 1,
      rows: 12,
      agree: 9,
      active_anomalies: 0,
      shadow_anomalies: 3,
      rank_pairs: 12,
      rank_correlation: reported[0]!.rank_correlation,
    };
    assert.deepEqual(reported[0], want);
    const events = await queued(d);
    assert.deepEqual(events.map((e) => [e.kind, e.model, e.version, e.reason]), [["shadow", MODEL, 2, undefined]]);
    assert.deepEqual(events[0].data, want);
    assert.equal(events[0].at, "2026-12-03T10:00:05Z", "at: the window's end");
    assert.deepEqual(await d.client.shadowWindows(MODEL), [], "a new window starts with the next call");
    await d.client.observeShadow(MODEL, 2, 1, ...call(2));
    assert.deepEqual((await d.client.shadowWindows(MODEL)).map((w) => [w.rows, w.since]), [[2, "2026-12-03T10:00:05Z"]]);

    // the next sync sends it; the candidate is still offered, so it stays held
    const r = await d.client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.deepEqual(r.shadows, []);
    assert.deepEqual(d.net.reports.map((e) => [e.kind, e.version, e.data.rows]), [["shadow", 2, 12]]);
    assert.equal((await d.client.heldShadow(MODEL))?.version, 2);
  });

  it("rows of a version not held, or not below it, are not counted", async () => {
    const d = await device({ rows: 100, hours: 1 });
    await d.client.observeShadow(MODEL, 2, 1, ...call(3));
    await d.client.observeShadow(MODEL, 3, 1, ...call(3)); // not the held candidate
    await d.client.observeShadow(MODEL, 2, 2, ...call(3)); // not below it
    await d.client.observeShadow("other-model", 2, 1, ...call(3));
    assert.deepEqual((await d.client.shadowWindows(MODEL)).map((w) => [w.version, w.active_version, w.rows]), [[2, 1, 3]]);
    await assert.rejects(d.client.observeShadow(MODEL, 2, 1, call(3)[0], call(2)[1]), RangeError);
    assert.deepEqual(await d.client.pendingReports(), []);
  });

  it("keeps one window per model: the window of another active version is reported when the app is served a new one", async () => {
    const d = await device({ rows: 100, hours: 24 }, 3);
    await d.client.observeShadow(MODEL, 3, 1, ...call(4));
    assert.deepEqual(await d.client.pendingReports(), []);
    const done = await d.client.observeShadow(MODEL, 3, 2, ...call(2));
    assert.deepEqual(done.map((w) => [w.active_version, w.rows]), [[1, 4]]);
    assert.deepEqual((await d.client.shadowWindows(MODEL)).map((w) => [w.version, w.active_version, w.rows]), [[3, 2, 2]]);
    assert.deepEqual((await queued(d)).map((e) => [e.kind, e.version, e.data.active_version]), [["shadow", 3, 1]]);
  });

  it("reports a window report_after hours after its first row: at the next call, or at a sync", async () => {
    const d = await device({ rows: 1000, hours: 2 });
    await d.client.observeShadow(MODEL, 2, 1, ...call(5));
    d.clock.now += 2 * 3_600_000;
    const first = await d.client.observeShadow(MODEL, 2, 1, ...call(3));
    assert.deepEqual(first.map((w) => w.rows), [5], "the old window as it was; this call starts the next");
    assert.deepEqual((await d.client.shadowWindows(MODEL)).map((w) => w.rows), [3]);

    d.clock.now += 2 * 3_600_000 + 1;
    const r = await d.client.sync(); // no call since: the sync reports it
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.deepEqual(d.net.reports.map((e) => [e.kind, e.data.rows]), [["shadow", 5], ["shadow", 3]]);
    assert.deepEqual(await d.client.shadowWindows(MODEL), []);
  });

  it("keeps a window across a restart (saved at a sync, or after SHADOW_SAVE_INTERVAL_MS), never reports one twice", async () => {
    const d = await device({ rows: 10, hours: 24 });
    await d.client.observeShadow(MODEL, 2, 1, ...call(3));
    d.clock.now += SHADOW_SAVE_INTERVAL_MS;
    await d.client.observeShadow(MODEL, 2, 1, ...call(2)); // saved now
    await d.client.observeShadow(MODEL, 2, 1, ...call(1)); // not yet
    const restarted = new ModelSyncClient({ ...d.opts });
    assert.deepEqual((await restarted.shadowWindows(MODEL)).map((w) => [w.rows, w.since]), [[5, "2026-12-03T10:00:00Z"]]);

    await d.client.sync(); // saves the sixth row too
    const again = new ModelSyncClient({ ...d.opts });
    assert.deepEqual((await again.shadowWindows(MODEL)).map((w) => w.rows), [6]);
    const done = await again.observeShadow(MODEL, 2, 1, ...call(4));
    assert.deepEqual(done.map((w) => w.rows), [10]);
    const third = new ModelSyncClient({ ...d.opts });
    assert.deepEqual(await third.shadowWindows(MODEL), [], "a reported window is gone from disk at once");
  });

  it("drops the candidate when the index no longer offers it: its window reported first, its files gone", async () => {
    const d = await device({ rows: 100, hours: 24 });
    await d.client.observeShadow(MODEL, 2, 1, ...call(7, 6));
    d.net.dropShadows(); // halted
    const r = await d.client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.deepEqual(r.shadows, [{ model: MODEL, version: 2, outcome: "dropped" }]);
    assert.deepEqual(d.net.reports.map((e) => [e.kind, e.model, e.version, e.data.rows, e.data.agree]), [["shadow", MODEL, 2, 7, 6]]);
    assert.equal(await d.client.heldShadow(MODEL), null);
    assert.deepEqual(await d.storage.list("shadow"), []);
    assert.deepEqual(await d.client.observeShadow(MODEL, 2, 1, ...call(3)), [], "no longer counted");
    assert.deepEqual(await d.client.shadowWindows(MODEL), []);
    assert.equal((await d.client.currentModel(MODEL))?.version, 1);
    const again = await d.client.sync();
    assert.deepEqual(again.shadows, []);
    assert.equal(again.reportsSent, 0);
  });

  it("drops a candidate once the device runs its version or above, and one whose files were lost", async () => {
    const d = await device({ rows: 100, hours: 24 });
    // the index offers v2 as a shadow while the device now runs v2 (say, from an offline pack)
    const cur = (await d.state.pointer(MODEL))!.current;
    await d.state.swap(MODEL, { ...cur, version: 2, artifact_path: cur.artifact_path.replace("/v1/", "/v2/"), manifest_path: cur.manifest_path.replace("/v1/", "/v2/") });
    await d.storage.writeAtomic(`models/${MODEL}/v2/${cur.sha256}.ort`, new Uint8Array(16).fill(1));
    await d.storage.writeAtomic(`models/${MODEL}/v2/manifest.json`, bytesOf(manifestEnvelope(2)));
    const r = await d.client.sync();
    assert.deepEqual(r.shadows, [{ model: MODEL, version: 2, outcome: "dropped" }], r.error?.message);

    const lost = await device({ rows: 100, hours: 24 });
    await lost.storage.remove(`shadow/${MODEL}/v2`);
    const r2 = await lost.client.sync();
    assert.equal(r2.shadows[0]?.outcome, "dropped");
    assert.equal(r2.shadows[1]?.outcome, "failed", "fetched again (the fake service has no manifest to give)");
    assert.deepEqual(await lost.storage.list("shadow"), []);
  });

  it("a held directory without its record (a crash before the commit point) holds nothing and goes", async () => {
    const d = await device();
    await d.storage.remove(`shadow/${MODEL}/held.json`);
    assert.equal(await new ModelSyncClient({ ...d.opts }).heldShadow(MODEL), null);
    d.net.dropShadows();
    const r = await new ModelSyncClient({ ...d.opts }).sync();
    assert.deepEqual(r.shadows, []);
    assert.deepEqual(await d.storage.list("shadow"), []);
  });
});
