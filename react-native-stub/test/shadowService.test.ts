/**
 * Shadow runs against the real Python sync service on loopback (test/fixtures/live_service.py
 * with --with-v4; docs/behaviour.md "Shadow runs", docs/device.md check 2.7): a shadow
 * release of v2 is fetched, verified like an install and held beside v1, which alone is
 * served; the hook (useModel, onnxruntime-node) scores every call with both and its agreement
 * window reaches the service as a `shadow` report; promoting the release installs the held
 * files with transfer "held" and no byte of any blob downloaded; a candidate failing its
 * golden vectors is never held; a halted shadow release is dropped, its pending window
 * reported and its files deleted. One service, one device through all of it, in order.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { createElement } from "react";
import { type ReactTestRenderer, act, create } from "react-test-renderer";

import { sha256Hex } from "../src/core/bytes";
import { type ClientOptions, ModelSyncClient, type SyncResult } from "../src/core/client";
import type { ModelOutputs } from "../src/core/ports";
import { spearman } from "../src/core/shadow";
import { NodeOrtRunner, openNodeSession } from "../src/node/ortRunner";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import { type AnomalyModel, type Score, useModel } from "../src/react/useModel";
import { type Service, SKIP_REASON, api, countingFetch, startService } from "./helpers";

const MODEL = "fleet-iforest";
let svc: Service;
let dirs: string;
const counting = countingFetch();
let client: ModelSyncClient;
let storage: NodeStorage;
let shadow2: any;
let goldenRows: number[][];
let n: number;

async function registered(deviceId: string, extra: Partial<ClientOptions> = {}): Promise<{ client: ModelSyncClient; storage: NodeStorage }> {
  const storage = new NodeStorage(join(dirs, deviceId));
  const client = new ModelSyncClient({
    server: svc.url,
    channel: svc.channel,
    deviceId,
    platform: "linux",
    ortVersion: "1.24.3",
    appVersion: "test",
    storage,
    fetch: counting.fetch,
    network: new StaticNetwork(),
    runner: new NodeOrtRunner(),
    shippedRoot: svc.root,
    availableProviders: ["cpu"],
    ...extra,
  });
  await client.register(svc.enrollment_token);
  return { client, storage };
}

function releaseShadow(version: number, rows: number): Promise<any> {
  return api(svc, "POST", "/v1/releases", {
    fleet: svc.fleet,
    channel: svc.channel,
    model: MODEL,
    version,
    percent: 100,
    mode: "shadow",
    report_after: { rows, hours: 24 },
  });
}

function manifestSha(version: number): string {
  return sha256Hex(new Uint8Array(readFileSync(join(svc.bundles[String(version)]!.dir, "manifest.json"))));
}

/** What the artifact at `path` says on `rows`, in a session of its own. */
async function outputsOf(path: string, rows: number[][]): Promise<ModelOutputs> {
  const model = await new NodeOrtRunner().load(path, ["cpu"], null);
  try {
    return await model.run(rows);
  } finally {
    await model.release();
  }
}

/** The hook over `client`, rendered; `latest()` is its newest state. */
async function mountHook(): Promise<{ latest: () => AnomalyModel; until: (ok: (m: AnomalyModel) => boolean) => Promise<void>; unmount: () => Promise<void> }> {
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
  const seen: AnomalyModel[] = [];
  function Probe(): null {
    seen.push(useModel(client, openNodeSession, { model: MODEL, syncIntervalMs: 0, syncOnMount: false }));
    return null;
  }
  let renderer: ReactTestRenderer | undefined;
  await act(async () => {
    renderer = create(createElement(Probe));
  });
  const latest = (): AnomalyModel => seen[seen.length - 1]!;
  const until = async (ok: (m: AnomalyModel) => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !ok(latest()); i++) await act(() => new Promise((r) => setTimeout(r, 25)));
    assert.ok(ok(latest()), JSON.stringify({ ...latest(), run: undefined, sync: undefined }));
  };
  return {
    latest,
    until,
    unmount: async () => {
      await act(async () => {
        renderer!.unmount();
      });
    },
  };
}

async function hookSync(latest: () => AnomalyModel): Promise<SyncResult> {
  let out: SyncResult | null = null;
  await act(async () => {
    out = await latest().sync();
  });
  assert.ok(out !== null, latest().error ?? "the hook's sync threw");
  return out as SyncResult;
}

async function hookRun(latest: () => AnomalyModel, rows: number[][]): Promise<Score[]> {
  let out: Score[] = [];
  await act(async () => {
    out = await latest().run(rows);
  });
  return out;
}

describe("shadow runs against the real sync service", { skip: SKIP_REASON, timeout: 300_000 }, () => {
  before(async () => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-shadow-devices-"));
    svc = await startService(["--with-v4"]);
    await api(svc, "POST", "/v1/releases", { fleet: svc.fleet, channel: svc.channel, model: MODEL, version: 1, percent: 100 });
    goldenRows = svc.bundles["1"]!.manifest.signed.golden.inputs;
    n = goldenRows.length;
    ({ client, storage } = await registered("ts-shadow-1"));
    const first = await client.sync();
    assert.equal(first.outcome, "updated", first.error?.message ?? first.models[0]?.error?.message);
  });

  after(async () => {
    await svc?.stop();
  });

  it("holds a shadow release's candidate, verified as an install, and keeps serving the active version", async () => {
    shadow2 = await releaseShadow(2, n + 5);
    assert.equal(shadow2.mode, "shadow");
    const id = (await client.identity())!;
    const res = await fetch(`${svc.url}/v1/channels/${svc.channel}/index`, { headers: { Authorization: `Bearer ${id.device_token}` } });
    const index = (await res.json()) as any;
    assert.deepEqual(index.signed.models[MODEL].map((e: any) => e.version), [1], "never in models");
    assert.deepEqual(index.signed.shadows[MODEL].map((e: any) => [e.version, e.report_after]), [[2, { rows: n + 5, hours: 24 }]]);

    counting.reset();
    const r = await client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.deepEqual(r.models, []);
    assert.deepEqual(r.shadows, [{ model: MODEL, version: 2, outcome: "held" }], r.shadows[0]?.error?.message);
    assert.ok(counting.blobRequests() >= 2 && counting.blobBytes() > 0, "its manifest and artifact were downloaded");
    const current = (await client.currentModel(MODEL))!;
    assert.deepEqual([current.version, current.source], [1, "installed"]);
    const held = (await client.heldShadow(MODEL))!;
    assert.equal(held.version, 2);
    assert.equal(held.manifestSha256, manifestSha(2));
    assert.deepEqual(held.reportAfter, { rows: n + 5, hours: 24 });
    assert.ok(existsSync(held.path));
    assert.deepEqual((await storage.list(`models/${MODEL}`)).sort(), ["current.json", "v1"], "nothing installed");
    assert.deepEqual((await storage.list(`shadow/${MODEL}`)).sort(), ["held.json", "v2"]);

    counting.reset();
    const again = await client.sync();
    assert.deepEqual([again.outcome, again.shadows, counting.blobRequests()], ["up_to_date", [], 0], "held once");

    // a device that runs nothing yet installs v1 (2.6) and then holds v2 (2.7) in one sync
    const fresh = await registered("ts-shadow-fresh");
    const both = await fresh.client.sync();
    assert.deepEqual(both.models.map((m) => [m.version, m.outcome]), [[1, "installed"]]);
    assert.deepEqual(both.shadows.map((s) => [s.version, s.outcome]), [[2, "held"]]);
  });

  it("the hook serves v1's labels and scores only, runs v2 beside it, and the shadow report reaches the service", async () => {
    const hook = await mountHook();
    await hook.until((m) => m.status === "ready" && m.shadowVersion === 2);
    assert.deepEqual([hook.latest().version, hook.latest().source], [1, "installed"]);

    const current = (await client.currentModel(MODEL))!;
    const held = (await client.heldShadow(MODEL))!;
    const rows = [...goldenRows, ...goldenRows.slice(0, 5)];
    const v1 = await outputsOf(current.path, rows);
    const v2 = await outputsOf(held.path, rows);

    const first = await hookRun(hook.latest, goldenRows);
    assert.deepEqual(first.map((s) => s.label), Array.from(v1.label, Number).slice(0, n), "v1's labels");
    assert.deepEqual(first.map((s) => s.score), Array.from(v1.score, Number).slice(0, n), "v1's scores");
    const differs = Array.from(v2.score, Number).some((s, i) => s !== Number(v1.score[i]));
    assert.ok(differs, "v2 is another model: had its scores leaked, they would show");

    // not yet report_after.rows: the window stays open through a sync
    const s1 = await hookSync(hook.latest);
    assert.equal(s1.outcome, "up_to_date", s1.error?.message);
    assert.deepEqual((await client.shadowWindows(MODEL)).map((w) => [w.version, w.active_version, w.rows]), [[2, 1, n]]);

    const second = await hookRun(hook.latest, goldenRows.slice(0, 5));
    assert.deepEqual(second.map((s) => s.score), Array.from(v1.score, Number).slice(n));
    const s2 = await hookSync(hook.latest);
    assert.ok(s2.reportsSent >= 1, "the shadow report went with the sync");
    assert.deepEqual(await client.pendingReports(), [], "and the service took it");
    assert.deepEqual(await client.shadowWindows(MODEL), []);
    assert.deepEqual([hook.latest().version, hook.latest().shadowVersion], [1, 2]);

    const labels1 = Array.from(v1.label, Number);
    const labels2 = Array.from(v2.label, Number);
    const agree = labels1.filter((l, i) => l === labels2[i]).length;
    const seen = await api(svc, "GET", `/v1/releases/${shadow2.id}/behaviour`);
    assert.ok(seen.shadow, JSON.stringify(seen));
    assert.equal(seen.shadow.devices, 1);
    assert.equal(seen.shadow.reports, 1);
    assert.equal(seen.shadow.rows, n + 5);
    assert.ok(Math.abs(seen.shadow.agreement - agree / (n + 5)) < 1e-9, JSON.stringify(seen.shadow));
    assert.ok(Math.abs(seen.shadow.active_anomaly_rate - labels1.filter((l) => l === -1).length / (n + 5)) < 1e-9);
    assert.ok(Math.abs(seen.shadow.shadow_anomaly_rate - labels2.filter((l) => l === -1).length / (n + 5)) < 1e-9);
    const rho = spearman(Array.from(v1.score, Number), Array.from(v2.score, Number));
    assert.ok(rho !== null && Math.abs(seen.shadow.rank_correlation - rho) < 1e-6, JSON.stringify(seen.shadow));

    // rows of the next window, still open when the release is promoted (next test)
    await hookRun(hook.latest, goldenRows.slice(0, 3));
    await hookSync(hook.latest); // waits for the candidate's run of them
    assert.deepEqual((await client.shadowWindows(MODEL)).map((w) => w.rows), [3]);
    await hook.unmount();
  });

  it("promoted, the release installs the held files: transfer held, no blob byte downloaded", async () => {
    const promoted = await api(svc, "POST", `/v1/releases/${shadow2.id}/promote`, {});
    assert.equal(promoted.mode, "install");
    counting.reset();
    const r = await client.sync();
    assert.equal(r.outcome, "updated", r.error?.message ?? r.models[0]?.error?.message);
    assert.deepEqual(r.models, [{ model: MODEL, version: 2, outcome: "installed", transfer: "held" }]);
    assert.deepEqual(r.shadows, []);
    assert.equal(counting.blobRequests(), 0, "nothing fetched from /v1/blobs/");
    assert.equal(counting.blobBytes(), 0);
    const current = (await client.currentModel(MODEL))!;
    assert.deepEqual([current.version, current.source], [2, "installed"]);
    assert.equal(await client.heldShadow(MODEL), null);
    assert.deepEqual(await storage.list("shadow"), [], "the held area is cleared");
    const pointer = JSON.parse(new TextDecoder().decode((await storage.read(`models/${MODEL}/current.json`))!));
    assert.equal(pointer.previous.version, 1);
    assert.equal(pointer.current.manifest_path, `models/${MODEL}/v2/manifest.json`);
    assert.deepEqual(await client.pendingReports(), [], "installed and the pending window's shadow report were taken");
    // the service counts a release's behaviour from its health_since, which the promotion
    // restarts: what it shows now is the window that was open at the promotion
    const seen = await api(svc, "GET", `/v1/releases/${shadow2.id}/behaviour`);
    assert.deepEqual([seen.shadow?.reports, seen.shadow?.rows], [1, 3], "the window open at the promotion was reported");
    const status = await api(svc, "GET", `/v1/releases/${shadow2.id}/status`);
    assert.equal(status.installs, 1, JSON.stringify(status));
  });

  it("a shadow candidate failing its golden vectors is reported as for an install and never held", async () => {
    await releaseShadow(3, 1000);
    const r = await client.sync();
    assert.deepEqual(
      r.shadows.map((s) => [s.version, s.outcome, s.reason]),
      [[3, "failed", "golden_vector"]],
      r.shadows[0]?.error?.message,
    );
    assert.equal(r.outcome, "up_to_date", "what the app is served did not change");
    assert.equal(await client.heldShadow(MODEL), null);
    assert.deepEqual(await storage.list("shadow"), []);
    assert.equal((await client.currentModel(MODEL))?.version, 2);
    const history = await api(svc, "GET", `/v1/devices/ts-shadow-1/history`);
    assert.ok(history.some((e: any) => e.kind === "golden_failed" && e.version === 3), JSON.stringify(history.slice(0, 3)));
    counting.reset();
    const again = await client.sync();
    assert.deepEqual([again.shadows, counting.blobRequests()], [[], 0], "a failed candidate is not retried");
  });

  it("a halted shadow release is dropped: its pending window reported, its files deleted", async () => {
    const shadow4 = await releaseShadow(4, 1000);
    const hook = await mountHook();
    await hook.until((m) => m.status === "ready" && m.version === 2);
    const r = await hookSync(hook.latest);
    assert.deepEqual(r.shadows.map((s) => [s.version, s.outcome]), [[4, "held"]], r.shadows[0]?.error?.message);
    await hook.until((m) => m.shadowVersion === 4);
    await hookRun(hook.latest, goldenRows);
    const kept = await hookSync(hook.latest);
    assert.deepEqual(kept.shadows, []);
    assert.deepEqual((await client.shadowWindows(MODEL)).map((w) => [w.version, w.active_version, w.rows]), [[4, 2, n]]);

    await api(svc, "POST", `/v1/releases/${shadow4.id}/halt`, { reason: "shadow test" });
    const dropped = await hookSync(hook.latest);
    assert.deepEqual(dropped.shadows, [{ model: MODEL, version: 4, outcome: "dropped" }]);
    await hook.until((m) => m.shadowVersion === null);
    assert.equal(hook.latest().version, 2);
    assert.equal(await client.heldShadow(MODEL), null);
    assert.deepEqual(await storage.list("shadow"), []);
    assert.deepEqual(await client.pendingReports(), []);
    const seen = await api(svc, "GET", `/v1/releases/${shadow4.id}/behaviour`);
    assert.equal(seen.shadow.rows, n);
    assert.equal(seen.shadow.agreement, 1, "v4 is v2's artifact: the same labels");
    assert.equal((await hookRun(hook.latest, goldenRows.slice(0, 2))).length, 2, "v2 still serves");
    await hook.unmount();
  });
});
