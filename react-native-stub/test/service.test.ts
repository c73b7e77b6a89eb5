/**
 * The client against the real Python sync service on loopback, with bundles the packager
 * just made (test/fixtures/live_service.py): register, sync, verify, install; 304 on the
 * second check; a cut download resumed with Range; zstd transfer; a tampered blob refused
 * with the state unchanged; an expired index reported as stale; offline fallbacks. The
 * installed .ort runs under onnxruntime-node and must match the manifest's golden vectors
 * and the Python device's outputs.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { createElement } from "react";
import { type ReactTestRenderer, act, create } from "react-test-renderer";

import { BehaviourWindow } from "../src/core/behaviour";
import { type ClientOptions, ModelSyncClient, type SyncResult } from "../src/core/client";
import { HashMismatchError } from "../src/core/errors";
import type { HttpFetch } from "../src/core/ports";
import { NodeOrtRunner, openNodeSession } from "../src/node/ortRunner";
import { type AnomalyModel, type Score, useModel } from "../src/react/useModel";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import {
  type Service,
  SKIP_REASON,
  api,
  cutAfter,
  flipByte,
  pythonOutputs,
  recordingFetch,
  startService,
} from "./helpers";

const DAY = 86_400_000;
let svc: Service;
let dirs: string;
let release1: any;

function artifactOf(version: number, target = "cpu"): any {
  return svc.bundles[String(version)]!.manifest.signed.artifacts.find((a: any) => a.target === target);
}

async function makeClient(
  deviceId: string,
  extra: Partial<ClientOptions> = {},
  fetchFn: HttpFetch = fetch as unknown as HttpFetch,
): Promise<{ client: ModelSyncClient; storage: NodeStorage }> {
  const storage = new NodeStorage(join(dirs, deviceId));
  const client = new ModelSyncClient({
    server: svc.url,
    channel: svc.channel,
    deviceId,
    platform: "linux",
    ortVersion: "1.24.3",
    appVersion: "test",
    storage,
    fetch: fetchFn,
    network: new StaticNetwork(),
    runner: new NodeOrtRunner(),
    shippedRoot: svc.root,
    availableProviders: ["cpu"],
    ...extra,
  });
  return { client, storage };
}

async function registered(
  deviceId: string,
  extra: Partial<ClientOptions> = {},
  fetchFn?: HttpFetch,
): Promise<{ client: ModelSyncClient; storage: NodeStorage }> {
  const made = await makeClient(deviceId, extra, fetchFn);
  await made.client.register(svc.enrollment_token);
  return made;
}

/** Everything a failed model install must leave as it was: root, identity, installed
 * models and pointers. (A newer index that passed checks 2.x is saved before any model is
 * fetched, so it is left out; queue and cache are bookkeeping.) */
function snapshot(storage: NodeStorage): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (rel: string): void => {
    const full = join(storage.root, rel);
    if (!existsSync(full)) return;
    for (const name of readdirSync(full)) {
      const r = rel === "" ? name : `${rel}/${name}`;
      if (/^(queue|cache|index)(\/|$)/.test(r) || r === "status.json") continue;
      const st = statSync(join(storage.root, r));
      if (st.isDirectory()) walk(r);
      else out[r] = st.mtimeMs * 1000 + st.size;
    }
  };
  walk("");
  return out;
}

describe("against the real sync service", { skip: SKIP_REASON, timeout: 240_000 }, () => {
  before(async () => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-devices-"));
    svc = await startService();
    release1 = await api(svc, "POST", "/v1/releases", {
      fleet: svc.fleet,
      channel: svc.channel,
      model: "fleet-iforest",
      version: 1,
      percent: 100,
    });
  });

  after(async () => {
    await svc?.stop();
  });

  it("registers, syncs, verifies and installs; the second check is a 304", async (t) => {
    const rec = recordingFetch();
    const { client, storage } = await registered("ts-device-1", {}, rec.fetch);
    const phases = new Set<string>();
    client.onProgress((e) => phases.add(e.phase));

    const started = performance.now();
    const first = await client.sync();
    const firstMs = performance.now() - started;
    assert.equal(first.outcome, "updated", first.error?.message ?? first.models[0]?.error?.message);
    assert.deepEqual(first.models.map((m) => [m.model, m.version, m.outcome]), [["fleet-iforest", 1, "installed"]]);
    assert.equal(first.notModified, false);
    for (const p of ["root", "index", "manifest", "download", "verify", "activate", "reports", "done"]) {
      assert.ok(phases.has(p), `no ${p} progress event`);
    }
    const current = await client.currentModel();
    assert.ok(current !== null);
    assert.equal(current.version, 1);
    assert.equal(current.source, "installed");
    assert.deepEqual(current.providers, ["cpu"]);
    assert.equal(statSync(current.path).size, artifactOf(1).length);
    assert.equal(first.reportsSent, 1, "the installed report reached the server");
    assert.deepEqual(await client.pendingReports(), []);

    const again = performance.now();
    const second = await client.sync();
    t.diagnostic(
      `first sync (root, index, manifest, ${artifactOf(1).length}-byte artifact over zstd, golden check, ` +
        `install, report) ${firstMs.toFixed(0)} ms; 304 re-check ${(performance.now() - again).toFixed(0)} ms`,
    );
    assert.equal(second.outcome, "up_to_date");
    assert.equal(second.notModified, true);
    const indexCalls = rec.seen.filter((s) => s.url.endsWith("/index"));
    assert.equal(indexCalls.length, 2);
    assert.equal(indexCalls[1]!.status, 304);
    assert.match(indexCalls[1]!.headers["If-None-Match"] ?? "", /^"?[0-9a-f]{64}"?$/);

    const status = await api(svc, "GET", `/v1/releases/${release1.id}/status`);
    assert.equal(status.installs, 1);
    assert.ok(existsSync(join(storage.root, "models", "fleet-iforest", "current.json")));
  });

  it("runs the installed artifact under onnxruntime-node like the manifest and the Python device", async (t) => {
    const { client } = await registered("ts-device-parity");
    assert.equal((await client.sync()).outcome, "updated");
    const current = (await client.currentModel())!;
    const manifest = svc.bundles["1"]!.manifest.signed;
    const tol = artifactOf(1).golden_tolerance;
    const model = await new NodeOrtRunner().load(current.path, current.providers, current.fixedBatch);
    const node = await model.run(manifest.golden.inputs);
    await model.release();
    const python = pythonOutputs(current.path, manifest.golden.inputs);
    const n = manifest.golden.inputs.length;
    assert.ok(n >= 10, "a few dozen golden rows");
    let vsGolden = 0;
    let vsPython = 0;
    for (let i = 0; i < n; i++) {
      assert.equal(Number(node.label[i]), manifest.golden.label[i], `row ${i} label vs golden`);
      assert.equal(Number(node.label[i]), python.label[i], `row ${i} label vs Python`);
      vsGolden = Math.max(vsGolden, Math.abs(Number(node.score[i]) - manifest.golden.score[i]));
      vsPython = Math.max(vsPython, Math.abs(Number(node.score[i]) - python.score[i]!));
    }
    t.diagnostic(
      `${n} golden rows: max |onnxruntime-node - manifest golden| = ${vsGolden.toExponential(2)}, ` +
        `max |onnxruntime-node - Python device| = ${vsPython.toExponential(2)}, tolerance ${tol.score_atol}`,
    );
    assert.ok(vsGolden <= tol.score_atol, `|node - golden| = ${vsGolden} > ${tol.score_atol}`);
    assert.ok(vsPython <= tol.score_atol, `|node - python| = ${vsPython} > ${tol.score_atol}`);
  });

  it("useModel (the hook behind useAnomalyModel) serves the embedded model, then the synced one", async () => {
    (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
    const manifest = svc.bundles["1"]!.manifest.signed;
    const embeddedPath = join(svc.bundles["1"]!.dir, artifactOf(1).path);
    const { client } = await registered("ts-device-hook", {
      embedded: [{ name: "fleet-iforest", version: 1, path: embeddedPath }],
    });
    const seen: AnomalyModel[] = [];
    function Probe(): null {
      seen.push(useModel(client, openNodeSession, { model: "fleet-iforest", syncIntervalMs: 0 }));
      return null;
    }
    const latest = (): AnomalyModel => seen[seen.length - 1]!;
    let renderer: ReactTestRenderer | undefined;
    await act(async () => {
      renderer = create(createElement(Probe));
    });
    for (let i = 0; i < 200 && !(latest().syncState === "updated" && latest().source === "installed"); i++) {
      await act(() => new Promise((r) => setTimeout(r, 50)));
    }
    assert.ok(seen.some((m) => m.source === "embedded" && m.status === "ready"), "served the embedded model first");
    const m = latest();
    assert.equal(m.status, "ready", m.error ?? "");
    assert.equal(m.source, "installed");
    assert.equal(m.version, 1);
    assert.deepEqual(m.providers, ["cpu"]);
    let scores: Score[] = [];
    await act(async () => {
      scores = await m.run(manifest.golden.inputs);
    });
    assert.deepEqual(scores.map((x) => x.label), manifest.golden.label);
    scores.forEach((x, i) => {
      assert.ok(Math.abs(x.score - manifest.golden.score[i]) <= artifactOf(1).golden_tolerance.score_atol);
      assert.equal(x.anomaly, x.label === -1);
    });
    const one = await m.run(manifest.golden.inputs[0]);
    assert.equal(one.length, 1, "a single row is one score");

    // The next sync queues one behaviour report for v1 and the service takes it (200).
    let synced: SyncResult | null = null;
    await act(async () => {
      synced = await latest().sync();
    });
    assert.ok(synced !== null);
    const done = synced as SyncResult;
    assert.equal(done.reportsSent, 1, "the behaviour report went with the sync");
    assert.deepEqual(await client.pendingReports(), [], "and the service answered 200");
    const n = manifest.golden.inputs.length;
    const edges: number[] = manifest.behaviour.score_edges;
    const seen1 = await api(svc, "GET", `/v1/releases/${release1.id}/behaviour`);
    assert.equal(seen1.candidate.version, 1);
    assert.equal(seen1.candidate.devices, 1, JSON.stringify(seen1.candidate));
    assert.equal(seen1.candidate.reports, 1);
    assert.equal(seen1.candidate.rows, n + 1);
    assert.equal(seen1.candidate.anomalies, scores.filter((x) => x.anomaly).length + (one[0]!.anomaly ? 1 : 0));
    assert.equal(seen1.candidate.histogram.length, edges.length + 1, "the manifest's bins");
    assert.deepEqual(seen1.candidate.providers, { CPUExecutionProvider: 1 });
    const again = await client.sync();
    assert.equal(again.reportsSent, 0, "a window is reported once");
    await act(async () => {
      renderer!.unmount();
    });
  });

  it("sends a behaviour report the service takes; it refuses one for a version not installed or in other bins", async () => {
    const { client } = await registered("ts-device-behaviour");
    assert.equal((await client.sync()).outcome, "updated");
    const manifest = (await client.installedManifest("fleet-iforest", 1))!;
    assert.deepEqual(manifest.behaviour, svc.bundles["1"]!.manifest.signed.behaviour, "the installed manifest's profile");
    assert.equal(await client.installedManifest("fleet-iforest", 2), null, "v2 is not installed here");
    const edges = manifest.behaviour!.score_edges;
    const window = new BehaviourWindow(edges, Date.now() - 60_000);
    window.observe([1, -1, 1], [edges[0]! - 1, edges.at(-1)!, Number.NaN], 1.25, "CPUExecutionProvider");
    const data = window.report();
    assert.deepEqual(data.histogram.slice(0, 1).concat(data.histogram.slice(-1)), [1, 2]);
    await client.reportBehaviour("fleet-iforest", 1, data);
    const sent = await client.sync();
    assert.equal(sent.reportsSent, 1);
    assert.deepEqual(await client.pendingReports(), []);

    // What the client must never queue (a refused batch would stay queued): the service's 422s.
    const id = (await client.identity())!;
    const post = async (version: number, body: Record<string, unknown>): Promise<{ status: number; text: string }> => {
      const res = await fetch(`${svc.url}/v1/devices/${id.device_id}/reports`, {
        method: "POST",
        headers: { Authorization: `Bearer ${id.device_token}`, "Content-Type": "application/json" },
        body: JSON.stringify({
          events: [
            {
              event_id: `0b6f7a52-3c1d-4e8f-9a2b-${String(version).padStart(12, "0")}`,
              kind: "behaviour",
              at: "2026-01-01T00:00:00Z",
              model: "fleet-iforest",
              version,
              data: body,
            },
          ],
        }),
      });
      return { status: res.status, text: await res.text() };
    };
    const bins2: number = svc.bundles["2"]!.manifest.signed.behaviour.score_edges.length + 1;
    const notInstalled = await post(2, { ...data, histogram: [3, ...new Array<number>(bins2 - 1).fill(0)] });
    assert.equal(notInstalled.status, 422, notInstalled.text);
    assert.match(notInstalled.text, /never reported installing|behaviour_not_installed/);
    const otherBins = await post(1, { ...data, histogram: [3] });
    assert.equal(otherBins.status, 422, otherBins.text);
    assert.match(otherBins.text, /histogram bins|wrong_bin_count/);
    const extra = await post(1, { ...data, mean_ms_per_call: 1 });
    assert.equal(extra.status, 422, extra.text);
  });

  it("resumes a download cut halfway with a Range request, within the same sync", async () => {
    const art = artifactOf(1);
    const half = Math.floor(art.length / 2);
    const rec = recordingFetch([cutAfter(art.sha256, half)]);
    const { client, storage } = await registered("ts-device-resume", { compression: false }, rec.fetch);

    // the cut is a transport failure: fetched once more at once, resuming the half kept
    const resumed = await client.sync();
    assert.equal(resumed.outcome, "updated", resumed.error?.message);
    const blobCalls = rec.seen.filter((s) => s.url.endsWith(`/v1/blobs/${art.sha256}`));
    assert.equal(blobCalls.length, 2);
    assert.equal(blobCalls[1]!.headers.Range, `bytes=${half}-`);
    assert.equal(blobCalls[1]!.status, 206);
    assert.equal(await storage.size(`cache/${art.sha256}.part`), null, "cache cleaned after install");
    assert.equal((await client.currentModel())?.version, 1);
  });

  it("resumes a cut zstd transfer from the bytes already decoded", async () => {
    const art = artifactOf(1);
    const rec = recordingFetch([cutAfter(art.sha256, Math.floor(art.compressed.length / 2))]);
    const { client, storage } = await registered("ts-device-zstd", {}, rec.fetch);
    const resumed = await client.sync(); // cut, then fetched once more within the sync
    assert.equal(resumed.outcome, "updated", resumed.error?.message);
    const blobs = rec.seen.filter((s) => s.url.endsWith(`/v1/blobs/${art.sha256}`));
    assert.equal(blobs.length, 2);
    assert.equal(blobs[0]!.headers["Accept-Encoding"], "zstd");
    assert.equal(blobs[0]!.contentEncoding, "zstd", "the service sent zstd");
    const kept = Number(/^bytes=(\d+)-$/.exec(blobs[1]!.headers.Range ?? "bytes=0-")?.[1]);
    assert.ok(kept >= 0 && kept < art.length, "the retry resumes from the bytes already decoded");
    assert.equal(await storage.size(`cache/${art.sha256}.part`), null);
    assert.equal((await client.currentModel())?.version, 1);
  });

  it("refuses a tampered blob and leaves the installed model as it was", async () => {
    const { client, storage } = await registered("ts-device-tamper", { compression: false });
    assert.equal((await client.sync()).outcome, "updated");
    await api(svc, "POST", "/v1/releases", {
      fleet: svc.fleet,
      channel: svc.channel,
      model: "fleet-iforest",
      version: 2,
      percent: 100,
    });
    const art2 = artifactOf(2);
    const before = snapshot(storage);
    const tampered = new ModelSyncClient({
      ...(client as unknown as { opts: ClientOptions }).opts,
      fetch: recordingFetch([flipByte(art2.sha256, 100)]).fetch,
    });
    const bad = await tampered.sync();
    assert.equal(bad.outcome, "failed");
    assert.ok(bad.models[0]?.error instanceof HashMismatchError, String(bad.models[0]?.error));
    assert.equal(bad.models[0]?.reason, "hash_mismatch");
    assert.deepEqual(snapshot(storage), before, "saved state changed after a refused blob");
    assert.equal((await client.currentModel())?.version, 1);
    assert.equal(await storage.size(`cache/${art2.sha256}.part`), null, "a bad blob is not resumed");
    assert.equal(bad.reportsSent, 1, "transfer_failed was reported (fetched twice, spoilt twice)");

    const good = await client.sync();
    assert.equal(good.outcome, "updated", good.error?.message);
    const pointer = JSON.parse(
      new TextDecoder().decode((await storage.read("models/fleet-iforest/current.json"))!),
    );
    assert.equal(pointer.current.version, 2);
    assert.equal(pointer.previous.version, 1, "the previous version stays for instant fallback");
  });

  it("reports an expired index as stale and keeps serving the installed model", async () => {
    const { client, storage } = await registered("ts-device-stale");
    assert.equal((await client.sync()).outcome, "updated");
    const installed = (await client.currentModel())!.version;
    const before = snapshot(storage);
    const later = new ModelSyncClient({
      ...(client as unknown as { opts: ClientOptions }).opts,
      now: () => Date.now() + 30 * DAY, // past the index's expiry, before the root's
    });
    const stale = await later.sync();
    assert.equal(stale.outcome, "stale");
    assert.equal(stale.error?.name, "StaleIndexError");
    assert.equal(stale.reportsSent, 1, "one stale_index report");
    assert.equal((await later.sync()).reportsSent, 0, "reported once per index version");
    assert.deepEqual(snapshot(storage), before);
    assert.equal((await later.currentModel())?.version, installed);
  });

  it("waits for Wi-Fi and for storage, and serves offline", async () => {
    const metered = await registered("ts-device-metered", { network: new StaticNetwork({ connected: true, metered: true }) });
    const r1 = await metered.client.sync();
    assert.equal(r1.outcome, "deferred");
    assert.equal(r1.models[0]?.reason, "metered");

    const small = await registered("ts-device-budget", { storageBudgetBytes: 1000 });
    const r2 = await small.client.sync();
    assert.equal(r2.outcome, "deferred");
    assert.equal(r2.models[0]?.reason, "storage_budget");

    const embeddedPath = join(svc.bundles["1"]!.dir, artifactOf(1).path);
    const offline = await registered("ts-device-offline", {
      network: new StaticNetwork({ connected: false, metered: false }),
      embedded: [{ name: "fleet-iforest", version: 1, path: embeddedPath }],
    });
    assert.equal((await offline.client.sync()).outcome, "offline");
    const fallback = await offline.client.currentModel();
    assert.equal(fallback?.source, "embedded");
    assert.equal(fallback?.path, embeddedPath);
  });

  it("an Android device installs the android-nnapi artifact; an iOS device without a CoreML one says so", async () => {
    const android = await registered("ts-device-android", { platform: "android" });
    const r = await android.client.sync();
    assert.equal(r.outcome, "updated", r.models[0]?.error?.message);
    const current = (await android.client.currentModel())!;
    const pointer = JSON.parse(
      new TextDecoder().decode((await android.storage.read("models/fleet-iforest/current.json"))!),
    );
    assert.equal(pointer.current.target, "android-nnapi");
    assert.deepEqual(current.providers, ["cpu"], "NNAPI is not available under Node: CPU only");

    const ios = await registered("ts-device-ios", { platform: "ios" });
    const r2 = await ios.client.sync();
    assert.equal(r2.models[0]?.error?.name, "NoArtifactForTargetError");
    assert.equal(r2.models[0]?.reason, "no_artifact_for_target");
    assert.equal(await ios.client.currentModel(), null);
    assert.equal((await ios.client.sync()).models.length, 0, "not retried");
  });

  // Last: releasing v3 at 100% changes what every later device would be offered.
  it("refuses a genuinely signed model that misses its golden vectors, and never retries it", async () => {
    const { client, storage } = await registered("ts-device-golden");
    assert.equal((await client.sync()).outcome, "updated");
    const installed = (await client.currentModel())!.version;
    const release3 = await api(svc, "POST", "/v1/releases", {
      fleet: svc.fleet,
      channel: svc.channel,
      model: "fleet-iforest",
      version: 3,
      percent: 100,
    });
    const before = snapshot(storage);
    const bad = await client.sync();
    assert.equal(bad.outcome, "failed");
    assert.equal(bad.models[0]?.error?.name, "GoldenVectorError", bad.models[0]?.error?.message);
    assert.equal(bad.models[0]?.reason, "golden_vector");
    const after = snapshot(storage);
    assert.ok("failed.json" in after, "v3 is remembered as failed");
    delete after["failed.json"];
    assert.deepEqual(after, before, "nothing else changed");
    assert.equal((await client.currentModel())?.version, installed);
    const again = await client.sync();
    assert.equal(again.outcome, "up_to_date", "a version that failed its golden vectors is not retried");
    const status = await api(svc, "GET", `/v1/releases/${release3.id}/status`);
    assert.equal(status.failures_by_reason.golden_vector, 1, JSON.stringify(status));
  });
});
