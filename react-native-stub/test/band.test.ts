/**
 * The expected-band check (ModelSyncClient.observeBand, the Python device's rule): a version
 * whose manifest sets `behaviour.expected_band` is judged once, on its first bandCheckRows
 * rows after it became current; outside the band it is failed for good, the previous
 * version (or the embedded model) serves again and an `install_failed` report with reason
 * `behaviour_out_of_band` is queued. Installed versions are written into the state directory
 * directly (no artifact is run); the network is a fake fetch serving forged documents.
 * The hook's part runs under react-test-renderer with fake sessions. Runs without Python.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, it } from "node:test";

import { createElement } from "react";
import { type ReactTestRenderer, act, create } from "react-test-renderer";

import { sha256Hex } from "../src/core/bytes";
import { BEHAVIOUR_OUT_OF_BAND, type ClientOptions, ModelSyncClient } from "../src/core/client";
import type { HttpFetch, HttpRequest, HttpResponse } from "../src/core/ports";
import type { Installed, State } from "../src/core/state";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import { type AnomalyModel, type ModelSession, useModel } from "../src/react/useModel";
import { ROLES_V1, bytesOf, entryFor, indexSigned, manifestSigned, rootSigned, sign } from "./forge";

const MODEL = "battery-anomaly"; // the name in the vectors' manifest
const ARTIFACT_BYTES = 16;
const root1 = sign(rootSigned(1, ROLES_V1), "root-1", "root-2");
let dirs: string;
let n = 0;

type Band = [number, number] | null | "no-profile";

function manifestEnvelope(version: number, band: Band): any {
  const signed: any = manifestSigned(version);
  if (band === "no-profile") delete signed.behaviour;
  else {
    signed.behaviour = {
      score_edges: [0],
      reference_histogram: [0.5, 0.5],
      anomaly_rate: 0.05,
      rows: 400,
      expected_band: band,
    };
  }
  return sign(signed, "publisher-1", "publisher-2");
}

/** A fake service: the root walk ends at v1, the index offers `offered`, reports are taken. */
class FakeNet {
  requests: { method: string; path: string }[] = [];
  reports: any[] = [];
  offered: Record<string, unknown[]> = {};
  manifests = new Map<string, Uint8Array>();

  offer(version: number, band: Band): string {
    const env = manifestEnvelope(version, band);
    const entry = entryFor(env, MODEL, version);
    this.offered = { [MODEL]: [entry] };
    this.manifests.set(`/v1/${entry.manifest.path}`, bytesOf(env));
    return `/v1/${entry.manifest.path}`;
  }

  fetch: HttpFetch = async (url: string, init: HttpRequest): Promise<HttpResponse> => {
    const path = new URL(url).pathname;
    this.requests.push({ method: init.method, path });
    const json = (status: number, doc: unknown): HttpResponse =>
      new Response(bytesOf(doc), { status, headers: { "Content-Type": "application/json" } }) as unknown as HttpResponse;
    if (path.endsWith("/reports") && init.method === "POST") {
      this.reports.push(...(JSON.parse(init.body ?? "{}") as { events: unknown[] }).events);
      return json(200, { accepted: 0, duplicates: 0 });
    }
    if (path === "/v1/channels/stable/index") return json(200, sign(indexSigned(1, this.offered), "index-1"));
    const manifest = this.manifests.get(path);
    if (manifest !== undefined) return new Response(manifest, { status: 200 }) as unknown as HttpResponse;
    return json(404, { detail: "not found", code: "not_found" });
  };
}

interface Device {
  client: ModelSyncClient;
  storage: NodeStorage;
  net: FakeNet;
  state: State;
}

/** A registered client with `versions` installed in order (the last one current), each
 * manifest with `band`. */
async function device(versions: number[], band: Band, extra: Partial<ClientOptions> = {}): Promise<Device> {
  const id = `band-${++n}`;
  const storage = new NodeStorage(join(dirs, id));
  const net = new FakeNet();
  const client = new ModelSyncClient({
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
    ...extra,
  });
  const state = (client as unknown as { state: State }).state;
  await state.saveIdentity({ device_id: id, fleet: "field", platform: "linux", device_token: "msd_test" });
  await state.saveRoot(root1);
  for (const v of versions) {
    const dir = `models/${MODEL}/v${v}`;
    const artifact = new Uint8Array(ARTIFACT_BYTES).fill(v);
    const inst: Installed = {
      name: MODEL,
      version: v,
      target: "cpu",
      sha256: sha256Hex(artifact),
      length: ARTIFACT_BYTES,
      artifact_path: `${dir}/${sha256Hex(artifact)}.ort`,
      manifest_path: `${dir}/manifest.json`,
      providers: ["cpu"],
      fixed_batch: null,
      installed_at: "2026-12-03T10:00:00Z",
    };
    await storage.writeAtomic(inst.manifest_path, bytesOf(manifestEnvelope(v, band)));
    await storage.writeAtomic(inst.artifact_path, artifact);
    await state.swap(MODEL, inst);
    await state.cleanUp(MODEL);
  }
  return { client, storage, net, state };
}

async function queued(d: Device): Promise<any[]> {
  const out: any[] = [];
  for (const name of await d.client.pendingReports()) out.push(await d.state.readJson(`queue/${name}`));
  return out;
}

describe("the expected-band check (observeBand)", () => {
  before(() => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-band-"));
  });

  it("never falls back for a manifest without expected_band (null, or no profile at all)", async () => {
    for (const band of [null, "no-profile"] as const) {
      const d = await device([1, 2], band, { bandCheckRows: 100 });
      for (let i = 0; i < 30; i++) {
        const v = await d.client.observeBand(MODEL, 2, 100, 100); // every row an anomaly
        assert.equal(v.outcome, "off", String(band));
        assert.equal(v.expectedBand, null);
      }
      const now = await d.client.currentModel(MODEL);
      assert.deepEqual([now?.version, now?.source], [2, "installed"]);
      assert.equal((await d.state.pointer(MODEL))?.previous?.version, 1);
      assert.deepEqual(await d.state.failed(), {});
      assert.deepEqual(await d.client.pendingReports(), []);
    }
  });

  it("a rate inside the band passes after bandCheckRows rows and is never judged again", async () => {
    const d = await device([1, 2], [0.05, 0.2], { bandCheckRows: 100 });
    // 3 calls of 30 rows, 3 anomalies each: counting
    for (let i = 1; i <= 3; i++) {
      const v = await d.client.observeBand(MODEL, 2, 30, 3);
      assert.deepEqual([v.outcome, v.rows, v.anomalies, v.expectedBand], ["counting", 30 * i, 3 * i, [0.05, 0.2]]);
      assert.equal(v.anomalyRate, undefined);
    }
    // the 4th reaches 100: judged over all 120 rows counted, 12 / 120 = 0.1
    const judged = await d.client.observeBand(MODEL, 2, 30, 3);
    assert.deepEqual([judged.outcome, judged.rows, judged.anomalies, judged.anomalyRate], ["passed", 120, 12, 0.1]);
    // then all anomalies: not judged again
    for (let i = 0; i < 20; i++) {
      const v = await d.client.observeBand(MODEL, 2, 100, 100);
      assert.equal(v.outcome, "passed");
      assert.equal(v.rows, 120, "the verdict's rows are the judged ones");
    }
    assert.equal((await d.client.currentModel(MODEL))?.version, 2);
    assert.deepEqual(await d.state.failed(), {});
    assert.deepEqual(await d.client.pendingReports(), []);
  });

  it("a rate above the band falls back to the previous version, fails the version for good and reports it", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 100 });
    const first = await d.client.observeBand(MODEL, 2, 60, 20);
    assert.equal(first.outcome, "counting");
    // 120 rows, 40 anomalies: over all rows counted so far, past bandCheckRows by the last call
    const v = await d.client.observeBand(MODEL, 2, 60, 20);
    assert.equal(v.outcome, "fell_back");
    assert.deepEqual([v.rows, v.anomalies, v.anomalyRate, v.expectedBand], [120, 40, 0.333333, [0, 0.1]]);
    assert.deepEqual([v.serving?.version, v.serving?.source], [1, "installed"]);

    const now = await d.client.currentModel(MODEL);
    assert.deepEqual([now?.version, now?.source], [1, "installed"]);
    const pointer = await d.state.pointer(MODEL);
    assert.equal(pointer?.current.version, 1);
    assert.equal(pointer?.previous, null, "the failed version is no fallback either");
    assert.deepEqual((await d.storage.list(`models/${MODEL}`)).sort(), ["current.json", "v1"], "its files are gone");
    assert.deepEqual(await d.state.failed(), { [MODEL]: [2] });

    const events = await queued(d);
    assert.equal(events.length, 1);
    const [event] = events;
    assert.deepEqual(Object.keys(event).sort(), ["at", "data", "event_id", "kind", "model", "version", "reason"].sort());
    assert.deepEqual([event.kind, event.model, event.version, event.reason], ["install_failed", MODEL, 2, "behaviour_out_of_band"]);
    assert.equal(BEHAVIOUR_OUT_OF_BAND, "behaviour_out_of_band");
    // anomaly_rate as the Python device reports it: round(40 / 120, 6)
    assert.deepEqual(event.data, { rows: 120, anomalies: 40, anomaly_rate: 0.333333, expected_band: [0, 0.1] });
    assert.deepEqual(Object.keys(event.data), ["rows", "anomalies", "anomaly_rate", "expected_band"]);

    // later calls for it get the same verdict, nothing more happens
    const again = await d.client.observeBand(MODEL, 2, 60, 60);
    assert.equal(again.outcome, "fell_back");
    assert.equal((await d.client.pendingReports()).length, 1);

    // the next sync: the index still offers v2; it is not fetched, and the report goes out
    const manifestPath = d.net.offer(2, [0, 0.1]);
    const r = await d.client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.deepEqual(r.models, [], "v2 is not installed again");
    assert.ok(!d.net.requests.some((q) => q.path === manifestPath), "its manifest is not even fetched");
    assert.equal(r.reportsSent, 1);
    assert.deepEqual(
      d.net.reports.map((e) => [e.kind, e.model, e.version, e.reason, e.data]),
      [["install_failed", MODEL, 2, "behaviour_out_of_band", { rows: 120, anomalies: 40, anomaly_rate: 0.333333, expected_band: [0, 0.1] }]],
    );
    assert.equal((await d.client.currentModel(MODEL))?.version, 1);
  });

  it("a rate below the band falls back too", async () => {
    const d = await device([1, 2], [0.05, 0.5], { bandCheckRows: 10 });
    const v = await d.client.observeBand(MODEL, 2, 10, 0);
    assert.deepEqual([v.outcome, v.anomalyRate], ["fell_back", 0]);
    assert.equal((await d.client.currentModel(MODEL))?.version, 1);
    assert.deepEqual((await queued(d)).map((e) => e.data), [{ rows: 10, anomalies: 0, anomaly_rate: 0, expected_band: [0.05, 0.5] }]);
  });

  it("the band's bounds are inside it", async () => {
    for (const [anomalies, band] of [[1, [0.1, 0.2]], [2, [0.1, 0.2]]] as const) {
      const d = await device([1, 2], [band[0], band[1]], { bandCheckRows: 10 });
      assert.equal((await d.client.observeBand(MODEL, 2, 10, anomalies)).outcome, "passed");
    }
  });

  it("judges the exact rate and reports it as Python's round(rate, 6), an exact tie to even", async () => {
    // 100000 / 999999 = 0.1000001: outside [0, 0.1] though it rounds to 0.1
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 10 });
    const v = await d.client.observeBand(MODEL, 2, 999_999, 100_000);
    assert.deepEqual([v.outcome, v.anomalyRate], ["fell_back", 0.1]);
    // 1 / 128 = 0.0078125 exactly: Python's round gives 0.007812 (toFixed would say 0.007813)
    const tie = await device([1, 2], [0.5, 1], { bandCheckRows: 128 });
    const t = await tie.client.observeBand(MODEL, 2, 128, 1);
    assert.deepEqual([t.outcome, t.anomalyRate], ["fell_back", 0.007812]);
    assert.deepEqual((await queued(tie))[0].data, { rows: 128, anomalies: 1, anomaly_rate: 0.007812, expected_band: [0.5, 1] });
  });

  it("with no previous version the embedded model serves; without one, nothing", async () => {
    const embedded = [{ name: MODEL, version: 1, path: "/app/bundle/battery-anomaly.ort" }];
    const d = await device([2], [0, 0.1], { bandCheckRows: 10, embedded });
    const v = await d.client.observeBand(MODEL, 2, 10, 10);
    assert.equal(v.outcome, "fell_back");
    assert.deepEqual([v.serving?.source, v.serving?.version], ["embedded", 1]);
    assert.equal(await d.state.pointer(MODEL), null);
    assert.ok(!existsSync(join(dirs, `band-${n}`, "models", MODEL)), "the model's directory is gone");
    assert.deepEqual(await d.state.failed(), { [MODEL]: [2] });
    d.net.offer(2, [0, 0.1]);
    const r = await d.client.sync();
    assert.deepEqual(r.models, [], "not installed again with nothing installed either");
    assert.equal((await d.client.currentModel(MODEL))?.source, "embedded");

    const bare = await device([2], [0, 0.1], { bandCheckRows: 10 });
    const w = await bare.client.observeBand(MODEL, 2, 10, 10);
    assert.equal(w.outcome, "fell_back");
    assert.equal(w.serving, null);
    assert.equal(await bare.client.currentModel(MODEL), null);
  });

  it("bandCheckRows 0 disables the check", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 0 });
    for (let i = 0; i < 30; i++) assert.equal((await d.client.observeBand(MODEL, 2, 100, 100)).outcome, "off");
    assert.equal((await d.client.currentModel(MODEL))?.version, 2);
    assert.deepEqual(await d.state.failed(), {});
    assert.deepEqual(await d.client.pendingReports(), []);
  });

  it("judges on 1000 rows by default", async () => {
    const d = await device([1, 2], [0, 0.1]);
    assert.equal((await d.client.observeBand(MODEL, 2, 999, 999)).outcome, "counting");
    const v = await d.client.observeBand(MODEL, 2, 1, 1);
    assert.deepEqual([v.outcome, v.rows], ["fell_back", 1000]);
  });

  it("judges only the installed current version, never the previous, the embedded or an unknown one", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 10 });
    for (const version of [1, 7]) {
      assert.equal((await d.client.observeBand(MODEL, version, 50, 50)).outcome, "off", `v${version}`);
    }
    assert.equal((await d.client.observeBand("other-model", 1, 50, 50)).outcome, "off");
    assert.equal((await d.client.currentModel(MODEL))?.version, 2);
    assert.deepEqual(await d.client.pendingReports(), []);
  });

  it("concurrent calls judge once: one fallback, one report", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 10 });
    const verdicts = await Promise.all(Array.from({ length: 8 }, () => d.client.observeBand(MODEL, 2, 5, 5)));
    assert.deepEqual(verdicts.map((v) => v.outcome), ["counting", ...new Array(7).fill("fell_back")]);
    assert.ok(verdicts.slice(1).every((v) => v.rows === 10), "judged on the rows that reached the limit");
    assert.equal((await d.client.pendingReports()).length, 1);
    assert.deepEqual(await d.state.failed(), { [MODEL]: [2] });
    assert.equal((await d.client.currentModel(MODEL))?.version, 1);
  });

  it("refuses counts that are not counts", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 10 });
    await assert.rejects(d.client.observeBand(MODEL, 2, 3, 4), RangeError);
    await assert.rejects(d.client.observeBand(MODEL, 2, -1, 0), RangeError);
    await assert.rejects(d.client.observeBand(MODEL, 2, 1.5, 0), RangeError);
  });

  it("a new client over the same state counts again (in memory)", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 10 });
    assert.equal((await d.client.observeBand(MODEL, 2, 9, 9)).outcome, "counting");
    const opts = (d.client as unknown as { opts: ClientOptions }).opts;
    const restarted = new ModelSyncClient(opts);
    assert.equal((await restarted.observeBand(MODEL, 2, 9, 9)).outcome, "counting", "the 9 rows before are not counted");
    assert.equal((await restarted.observeBand(MODEL, 2, 1, 1)).outcome, "fell_back");
  });
});

describe("the hook and the expected band", () => {
  before(() => {
    dirs ??= mkdtempSync(join(tmpdir(), "modelsync-band-"));
    (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
  });

  async function until(cond: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 400 && !cond(); i++) await act(() => new Promise((r) => setTimeout(r, 10)));
    assert.ok(cond(), `timed out waiting for ${what}`);
  }

  /** Sessions that label every row of v2 an anomaly and none of v1's. */
  const opened: string[] = [];
  const openSession = async (path: string): Promise<ModelSession> => {
    opened.push(path);
    const bad = path.includes("/v2/");
    return {
      providers: ["cpu"],
      run: async (rows) => ({ label: rows.map(() => (bad ? -1 : 1)), score: rows.map(() => (bad ? -0.5 : 0.5)) }),
      release: async () => undefined,
    };
  };

  it("falls back to the previous version after bandCheckRows rows; the window is still reported", async () => {
    const d = await device([1, 2], [0, 0.1], { bandCheckRows: 10 });
    const seen: AnomalyModel[] = [];
    function Probe(): null {
      seen.push(useModel(d.client, openSession, { model: MODEL, syncOnMount: false, syncIntervalMs: 0 }));
      return null;
    }
    let renderer: ReactTestRenderer | undefined;
    await act(async () => {
      renderer = create(createElement(Probe));
    });
    const latest = (): AnomalyModel => seen[seen.length - 1]!;
    await until(() => latest().status === "ready", "the hook's model");
    assert.equal(latest().version, 2);

    const rows = Array.from({ length: 6 }, (_, i) => [i, i + 1, i + 2]);
    const first = await latest().run(rows);
    assert.ok(first.every((s) => s.anomaly));
    await act(() => new Promise((r) => setTimeout(r, 20)));
    assert.equal(latest().version, 2, "6 rows: still counting");
    const second = await latest().run(rows);
    assert.ok(second.every((s) => s.anomaly), "the call that crosses the limit is answered by the version it ran on");
    await until(() => latest().version === 1, "the fallback to v1");
    assert.equal(latest().source, "installed");
    assert.equal(latest().error, null);
    assert.ok(opened.at(-1)!.includes("/v1/"), "a v1 session was opened");
    const third = await latest().run(rows);
    assert.ok(third.every((s) => !s.anomaly), "v1 answers now");

    const done: { r: Awaited<ReturnType<AnomalyModel["sync"]>> } = { r: null };
    await act(async () => {
      done.r = await latest().sync();
    });
    assert.equal(done.r?.outcome, "up_to_date", done.r?.error?.message);
    const sent = d.net.reports.map((e) => [e.kind, e.version, e.reason ?? null, e.data.rows, e.data.anomalies]);
    assert.deepEqual(
      sent.sort(),
      [
        ["behaviour", 1, null, 6, 0],
        ["behaviour", 2, null, 12, 12],
        ["install_failed", 2, "behaviour_out_of_band", 12, 12],
      ],
    );
    await act(async () => renderer!.unmount());
  });

  it("keeps serving a version inside its band", async () => {
    const d = await device([1, 2], [0.9, 1], { bandCheckRows: 10 });
    const seen: AnomalyModel[] = [];
    function Probe(): null {
      seen.push(useModel(d.client, openSession, { model: MODEL, syncOnMount: false, syncIntervalMs: 0 }));
      return null;
    }
    let renderer: ReactTestRenderer | undefined;
    await act(async () => {
      renderer = create(createElement(Probe));
    });
    const latest = (): AnomalyModel => seen[seen.length - 1]!;
    await until(() => latest().status === "ready", "the hook's model");
    for (let i = 0; i < 5; i++) await latest().run(Array.from({ length: 6 }, () => [0, 0, 0]));
    await act(() => new Promise((r) => setTimeout(r, 50)));
    assert.equal(latest().version, 2);
    assert.deepEqual(await d.state.failed(), {});
    assert.deepEqual(await d.client.pendingReports(), []);
    await act(async () => renderer!.unmount());
  });
});
