/**
 * Activation "next-start" and download progress against the real Python sync service
 * (its own instance: these tests decide which releases exist when). A staged version is
 * verified, golden vectors included, but not served until a new client starts over the
 * state directory; a staged file changed on disk is refused there and the current model
 * kept; a newer release replaces what is staged. The hook shows the staged version and the
 * download's bytes against a total known from the first event.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { createElement } from "react";
import { type ReactTestRenderer, act, create } from "react-test-renderer";

import { type ClientOptions, type ProgressEvent, ModelSyncClient } from "../src/core/client";
import { HashMismatchError } from "../src/core/errors";
import type { HttpFetch, HttpResponse } from "../src/core/ports";
import { NodeOrtRunner, openNodeSession } from "../src/node/ortRunner";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import { type AnomalyModel, useModel } from "../src/react/useModel";
import { type Fault, type Service, SKIP_REASON, api, recordingFetch, startService } from "./helpers";

const MODEL = "fleet-iforest";
let svc: Service;
let dirs: string;

function artifactOf(version: number): any {
  return svc.bundles[String(version)]!.manifest.signed.artifacts.find((a: any) => a.target === "cpu");
}

function client(deviceId: string, extra: Partial<ClientOptions> = {}): ModelSyncClient {
  return new ModelSyncClient({
    server: svc.url,
    channel: svc.channel,
    deviceId,
    platform: "linux",
    ortVersion: "1.24.3",
    storage: new NodeStorage(join(dirs, deviceId)),
    fetch: fetch as unknown as HttpFetch,
    network: new StaticNetwork(),
    runner: new NodeOrtRunner(),
    shippedRoot: svc.root,
    availableProviders: ["cpu"],
    ...extra,
  });
}

const nextStart = (deviceId: string, extra: Partial<ClientOptions> = {}): ModelSyncClient =>
  client(deviceId, { activation: "next-start", ...extra });

function release(version: number): Promise<any> {
  return api(svc, "POST", "/v1/releases", { fleet: svc.fleet, channel: svc.channel, model: MODEL, version, percent: 100 });
}

function pointer(deviceId: string): any {
  return JSON.parse(readFileSync(join(dirs, deviceId, "models", MODEL, "current.json"), "utf8"));
}

/** The artifact blob's body stops after its first chunk until release() is called. */
function heldBlob(sha: string): { fault: Fault; release: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const fault: Fault = (url, _init, res) => {
    if (!url.endsWith(`/v1/blobs/${sha}`) || res.status !== 200) return undefined;
    const reader = (res.body as unknown as ReadableStream<Uint8Array>).getReader();
    let chunks = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (chunks++ > 0) await gate;
        const { done, value } = await reader.read();
        if (done || value === undefined) controller.close();
        else controller.enqueue(value);
      },
    });
    const held: HttpResponse = {
      status: res.status,
      headers: res.headers,
      body: stream as unknown as HttpResponse["body"],
      arrayBuffer: () => new Response(stream).arrayBuffer(),
    };
    return held;
  };
  return { fault, release: () => open() };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1200 && !cond(); i++) await act(() => new Promise((r) => setTimeout(r, 25)));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

describe("activation next-start and download progress, against the real sync service", { skip: SKIP_REASON, timeout: 240_000 }, () => {
  before(async () => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-activation-"));
    svc = await startService();
    await release(1);
    // two devices run v1 (activation immediate) before v2 exists
    for (const id of ["ts-stage", "ts-stage-tamper"]) {
      const c = client(id);
      await c.register(svc.enrollment_token);
      assert.equal((await c.sync()).outcome, "updated");
    }
  });

  after(async () => {
    await svc?.stop();
  });

  // First: it needs v1 to be the newest release when it starts.
  it("a newer release replaces the staged one; the next start activates the newest", async () => {
    const embedded = [{ name: MODEL, version: 1, path: join(svc.bundles["1"]!.dir, artifactOf(1).path) }];
    const first = nextStart("ts-stage-replace", { embedded });
    await first.register(svc.enrollment_token);
    const r1 = await first.sync();
    assert.equal(r1.outcome, "staged", r1.models[0]?.error?.message);
    assert.deepEqual(await first.stagedModel(MODEL), { name: MODEL, version: 1 });
    assert.equal((await first.currentModel(MODEL))?.source, "embedded", "nothing installed is served while v1 waits");

    await release(2);
    const r2 = await first.sync();
    assert.deepEqual(r2.models.map((m) => [m.version, m.outcome]), [[2, "staged"]]);
    assert.deepEqual(await first.stagedModel(MODEL), { name: MODEL, version: 2 });
    const stagedDir = join(dirs, "ts-stage-replace", "staged", MODEL);
    assert.ok(!existsSync(join(stagedDir, "v1")), "the replaced staged version's files are gone");
    assert.ok(existsSync(join(stagedDir, "v2", `${artifactOf(2).sha256}.ort`)));

    const restarted = nextStart("ts-stage-replace", { embedded });
    assert.deepEqual((await restarted.start()).map((a) => [a.version, a.outcome]), [[2, "activated"]]);
    const now = await restarted.currentModel(MODEL);
    assert.equal(now?.source, "installed");
    assert.equal(now?.version, 2);
    assert.equal(await restarted.stagedModel(MODEL), null);
    assert.ok(!existsSync(stagedDir));
  });

  it("next-start: verified and staged, not served, until a new client starts; reported on activation", async () => {
    const rec = recordingFetch();
    const running = nextStart("ts-stage", { fetch: rec.fetch });
    const r = await running.sync();
    assert.equal(r.outcome, "staged", r.models[0]?.error?.message);
    assert.deepEqual(r.models.map((m) => [m.version, m.outcome]), [[2, "staged"]]);
    assert.equal(r.reportsSent, 0, "no installed report for a version not served");
    assert.equal((await running.currentModel(MODEL))?.version, 1, "the running app keeps v1");
    assert.equal(pointer("ts-stage").current.version, 1);
    assert.deepEqual(await running.stagedModel(MODEL), { name: MODEL, version: 2 });

    const again = await running.sync();
    assert.equal(again.outcome, "up_to_date", "a staged version is not fetched again");
    assert.equal(rec.seen.filter((s) => s.url.includes("/v1/blobs/")).length, 2, "one manifest and one artifact");
    assert.equal((await running.currentModel(MODEL))?.version, 1, "a later sync in the same run does not activate it");

    // the next cold start: the first thing the new client serves is v2
    const restarted = nextStart("ts-stage");
    const now = await restarted.currentModel(MODEL);
    assert.equal(now?.version, 2);
    assert.equal(now?.source, "installed");
    assert.equal(pointer("ts-stage").previous.version, 1, "v1 stays as previous");
    assert.equal(await restarted.stagedModel(MODEL), null);
    assert.equal((await restarted.pendingReports()).length, 1, "an installed report is queued");
    const after = await restarted.sync();
    assert.equal(after.outcome, "up_to_date");
    assert.equal(after.reportsSent, 1);
  });

  it("a staged file changed on disk is refused at the next start and the current model kept", async () => {
    const running = nextStart("ts-stage-tamper");
    assert.equal((await running.sync()).outcome, "staged");
    const file = join(dirs, "ts-stage-tamper", "staged", MODEL, "v2", `${artifactOf(2).sha256}.ort`);
    const bytes = readFileSync(file);
    bytes[100]! ^= 0xff;
    writeFileSync(file, bytes);

    const restarted = nextStart("ts-stage-tamper");
    const started = await restarted.start();
    assert.equal(started.length, 1);
    assert.equal(started[0]!.outcome, "refused");
    assert.ok(started[0]!.error instanceof HashMismatchError, String(started[0]!.error));
    const now = await restarted.currentModel(MODEL);
    assert.equal(now?.version, 1);
    assert.equal(now?.source, "installed");
    assert.equal(pointer("ts-stage-tamper").current.version, 1);
    assert.equal(await restarted.stagedModel(MODEL), null);
    assert.ok(!existsSync(join(dirs, "ts-stage-tamper", "staged", MODEL)), "the refused files are removed");
    assert.deepEqual(await restarted.pendingReports(), [], "nothing reported against the release");

    const refetched = await restarted.sync();
    assert.equal(refetched.outcome, "staged", "the next sync fetches and stages the release again");
  });

  it("the hook: download progress with the total from the first event; the staged version, served after a restart", async () => {
    (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
    const id = "ts-stage-hook";
    const art = artifactOf(2);
    const held = heldBlob(art.sha256);
    const c = nextStart(id, { fetch: recordingFetch([held.fault]).fetch });
    await c.register(svc.enrollment_token);
    const events: ProgressEvent[] = [];
    c.onProgress((e) => events.push(e));

    const mount = async (cl: ModelSyncClient): Promise<{ seen: AnomalyModel[]; renderer: ReactTestRenderer }> => {
      const seen: AnomalyModel[] = [];
      function Probe(): null {
        seen.push(useModel(cl, openNodeSession, { model: MODEL, syncIntervalMs: 0 }));
        return null;
      }
      let renderer: ReactTestRenderer | undefined;
      await act(async () => {
        renderer = create(createElement(Probe));
      });
      return { seen, renderer: renderer! };
    };
    const { seen, renderer } = await mount(c);
    const latest = (): AnomalyModel => seen[seen.length - 1]!;
    // the download is held after its first chunk: the hook must show it meanwhile
    await until(() => latest().progress?.phase === "download" && (latest().progress?.received ?? 0) > 0, "download progress");
    assert.equal(latest().progress?.total, art.length, "the hook shows the artifact's length as the total");
    held.release();
    await until(() => latest().syncState !== "syncing" && latest().syncState !== "never", "the sync's end");
    assert.equal(latest().syncState, "staged", latest().error ?? "");
    // the hook reloads after a staging sync; its staged version follows the sync's outcome
    await until(() => latest().staged !== null, "the staged version in the hook");
    assert.equal(latest().staged, 2);
    assert.equal(latest().version, null, "nothing was installed before: nothing served");

    const downloads = events.filter((e) => e.phase === "download");
    assert.ok(downloads.length >= 2);
    assert.deepEqual([downloads[0]!.received, downloads[0]!.total], [0, art.length], "total known before the first byte");
    let last = 0;
    for (const e of downloads) {
      assert.equal(e.total, art.length);
      assert.ok(e.received! >= last && e.received! <= art.length);
      last = e.received!;
    }
    assert.equal(last, art.length, "bytes reach the total");
    await act(async () => renderer.unmount());

    const next = await mount(nextStart(id));
    const after = (): AnomalyModel => next.seen[next.seen.length - 1]!;
    await until(() => after().status === "ready" && after().syncState !== "syncing" && after().syncState !== "never", "the restarted hook");
    assert.equal(after().version, 2);
    assert.equal(after().source, "installed");
    assert.equal(after().staged, null);
    assert.ok(
      next.seen.every((m) => m.version === null || m.version === 2),
      "the first model the restarted app served is the activated one",
    );
    await act(async () => next.renderer.unmount());
  });
});
