/**
 * Report batches the real sync service refuses (test/fixtures/live_service.py on loopback).
 * It takes a batch whole or not at all: 422 when any event is invalid (a `behaviour` report
 * for a version the device never reported installing), 413 when the body is over its cap.
 * The queue halves such a batch, oldest half first, until the refused event stands alone,
 * drops and counts it (refusedReports()), and sends the others. Any other failure (401,
 * 403, 404, 5xx, no network) leaves the batch queued whole; what an earlier half got
 * through stays sent. Faults are injected in the client's fetch, in front of the service.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { BehaviourWindow } from "../src/core/behaviour";
import { ModelSyncClient } from "../src/core/client";
import type { HttpFetch, HttpResponse } from "../src/core/ports";
import type { ReportEvent } from "../src/core/reports";
import { NodeOrtRunner } from "../src/node/ortRunner";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import { type Service, SKIP_REASON, api, startService } from "./helpers";

let svc: Service;
let dirs: string;

/** One POST of a report batch as the client sent it. */
interface Post {
  events: string[];
  status: number | "offline";
}

/** What to do to the `n`th report POST (from 0): answer a status without passing it on,
 * fail as an unreachable network, or (undefined) let the service answer. */
type Fault = (n: number) => number | "offline" | undefined;

/** The client's fetch: the real one, with report POSTs recorded and, while `fault` is set,
 * answered by it instead of the service. */
function tapped(): { fetch: HttpFetch; posts: Post[]; fault: Fault | undefined } {
  const tap: { fetch: HttpFetch; posts: Post[]; fault: Fault | undefined } = {
    posts: [],
    fault: undefined,
    fetch: async (url, init) => {
      if (init.method !== "POST" || !url.endsWith("/reports")) {
        return (await fetch(url, init as RequestInit)) as unknown as HttpResponse;
      }
      const events = (JSON.parse(String(init.body)) as { events: ReportEvent[] }).events.map((e) => e.event_id);
      const injected = tap.fault?.(tap.posts.length);
      if (injected === "offline") {
        tap.posts.push({ events, status: "offline" });
        throw new TypeError("fetch failed: connect ECONNREFUSED (injected)");
      }
      if (injected !== undefined) {
        tap.posts.push({ events, status: injected });
        return new Response(JSON.stringify({ detail: `injected ${injected}`, code: "injected" }), {
          status: injected,
          headers: { "Content-Type": "application/json" },
        }) as unknown as HttpResponse;
      }
      const res = (await fetch(url, init as RequestInit)) as unknown as HttpResponse;
      tap.posts.push({ events, status: res.status });
      return res;
    },
  };
  return tap;
}

function newClient(deviceId: string, fetchFn: HttpFetch): { client: ModelSyncClient; storage: NodeStorage } {
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
  });
  return { client, storage };
}

/** A device that registered, installed v1 and reported it. */
async function installedDevice(deviceId: string): Promise<{
  client: ModelSyncClient;
  storage: NodeStorage;
  tap: ReturnType<typeof tapped>;
}> {
  const tap = tapped();
  const { client, storage } = newClient(deviceId, tap.fetch);
  await client.register(svc.enrollment_token);
  const first = await client.sync();
  assert.equal(first.outcome, "updated", first.error?.message ?? first.models[0]?.error?.message);
  assert.equal(first.reportsSent, 1, "the installed report went through");
  tap.posts.length = 0;
  return { client, storage, tap };
}

async function behaviourFor(client: ModelSyncClient, version: number): Promise<void> {
  const edges = (await client.installedManifest("fleet-iforest", 1))!.behaviour!.score_edges;
  const w = new BehaviourWindow(edges, Date.now() - 60_000);
  w.observe([1, -1, 1], [edges[0]! - 1, edges.at(-1)!, 0], 1.5, "CPUExecutionProvider");
  await client.reportBehaviour("fleet-iforest", version, w.report());
}

/** Queues five events the service takes and, fourth of the six, one it refuses (behaviour
 * for v2, which this device never reported installing). Returns the queued event ids. */
async function queueWithOnePoisoned(client: ModelSyncClient, storage: NodeStorage): Promise<{
  good: string[];
  bad: string;
  all: string[];
}> {
  await client.reportInferenceStats("fleet-iforest", 1, { count: 1 });
  await behaviourFor(client, 1);
  await client.reportInferenceStats("fleet-iforest", 1, { count: 2 });
  await behaviourFor(client, 2);
  await client.reportInferenceStats("fleet-iforest", 1, { count: 3 });
  await behaviourFor(client, 1);
  const all: string[] = [];
  for (const name of await client.pendingReports()) {
    const event = JSON.parse(new TextDecoder().decode((await storage.read(`queue/${name}`))!)) as ReportEvent;
    all.push(event.event_id);
  }
  assert.equal(all.length, 6);
  return { good: [...all.slice(0, 3), ...all.slice(4)], bad: all[3]!, all };
}

/** The event ids the service stored for a device (its report history), as it keys them. */
async function stored(deviceId: string): Promise<Set<string>> {
  const history = (await api(svc, "GET", `/v1/devices/${deviceId}/history?limit=1000`)) as { event_id: string }[];
  return new Set(history.map((r) => r.event_id));
}

const key = (eventId: string): string => eventId.toLowerCase().replaceAll("-", "");

describe("report batches the service refuses", { skip: SKIP_REASON, timeout: 240_000 }, () => {
  before(async () => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-refused-"));
    svc = await startService();
    await api(svc, "POST", "/v1/releases", {
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

  it("halves a refused batch: the five valid events reach the service, the invalid one is dropped and counted", async () => {
    const { client, storage, tap } = await installedDevice("ts-refused-422");
    assert.deepEqual(await client.refusedReports(), { count: 0, last: null });
    const { good, bad, all } = await queueWithOnePoisoned(client, storage);

    const r = await client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.equal(r.reportsSent, 5);
    assert.deepEqual(await client.pendingReports(), [], "nothing left to block later reports");
    // oldest half first, each refused half halved again, until the invalid event stands alone
    assert.deepEqual(tap.posts, [
      { events: all, status: 422 },
      { events: all.slice(0, 3), status: 200 },
      { events: all.slice(3), status: 422 },
      { events: [bad], status: 422 },
      { events: all.slice(4), status: 200 },
    ]);
    const refused = await client.refusedReports();
    assert.equal(refused.count, 1);
    assert.equal(refused.last?.kind, "behaviour");
    assert.equal(refused.last?.status, 422);
    assert.match(refused.last?.detail ?? "", /never reported installing/);
    assert.doesNotMatch(refused.last?.detail ?? "", /\n/, "one line");

    const seen = await stored("ts-refused-422");
    for (const id of good) assert.ok(seen.has(key(id)), `valid event ${id} reached the service`);
    assert.ok(!seen.has(key(bad)), "the invalid event was never stored");

    // the count survives a restart (status.json)
    const again = newClient("ts-refused-422", tap.fetch).client;
    assert.equal((await again.refusedReports()).count, 1);

    // and the next sync sends new events as usual, in one batch
    tap.posts.length = 0;
    await client.reportInferenceStats("fleet-iforest", 1, { count: 4 });
    await behaviourFor(client, 1);
    const later = await client.sync();
    assert.equal(later.reportsSent, 2);
    assert.deepEqual(tap.posts.map((p) => [p.events.length, p.status]), [[2, 200]]);
    assert.deepEqual(await client.pendingReports(), []);
    assert.equal((await client.refusedReports()).count, 1, "nothing more refused");
    const after = await stored("ts-refused-422");
    for (const id of tap.posts[0]!.events) assert.ok(after.has(key(id)));
  });

  it("drops an event over the service's body cap (413) and sends the ones around it", async () => {
    const { client, tap } = await installedDevice("ts-refused-413");
    await client.reportInferenceStats("fleet-iforest", 1, { count: 1 });
    await client.reportInferenceStats("fleet-iforest", 1, { blob: "x".repeat(5 * 1024 * 1024) });
    await client.reportInferenceStats("fleet-iforest", 1, { count: 2 });
    const r = await client.sync();
    assert.equal(r.reportsSent, 2);
    assert.deepEqual(tap.posts.map((p) => [p.events.length, p.status]), [
      [3, 413],
      [1, 200],
      [2, 413],
      [1, 413],
      [1, 200],
    ]);
    assert.deepEqual(await client.pendingReports(), []);
    const refused = await client.refusedReports();
    assert.equal(refused.count, 1);
    assert.equal(refused.last?.kind, "inference_stats");
    assert.equal(refused.last?.status, 413);
    assert.match(refused.last?.detail ?? "", /cap/);
  });

  it("a batch answered 401, 403, 404, 500 or 503, or no network at all, stays queued whole", async () => {
    const { client, storage, tap } = await installedDevice("ts-refused-outage");
    const { good, bad, all } = await queueWithOnePoisoned(client, storage);
    const queued = await client.pendingReports();
    for (const fault of [401, 403, 404, 500, 503, "offline"] as const) {
      tap.posts.length = 0;
      tap.fault = () => fault;
      const r = await client.sync();
      assert.equal(r.reportsSent, 0, `${fault}`);
      assert.deepEqual(tap.posts, [{ events: all, status: fault }], `${fault}: sent once, not halved`);
      assert.deepEqual(await client.pendingReports(), queued, `${fault}: nothing dropped`);
      assert.deepEqual(await client.refusedReports(), { count: 0, last: null }, `${fault}: nothing counted`);
    }
    assert.equal((await stored("ts-refused-outage")).size, 1, "only the installed report reached the service");

    tap.fault = undefined;
    tap.posts.length = 0;
    const back = await client.sync();
    assert.equal(back.reportsSent, 5);
    assert.equal((await client.refusedReports()).count, 1);
    const seen = await stored("ts-refused-outage");
    for (const id of good) assert.ok(seen.has(key(id)));
    assert.ok(!seen.has(key(bad)));
  });

  it("events an earlier half got through stay sent when a later half meets a 503", async () => {
    const { client, storage, tap } = await installedDevice("ts-refused-half");
    const { good, bad, all } = await queueWithOnePoisoned(client, storage);
    const queued = await client.pendingReports();
    tap.fault = (n) => (n === 2 ? 503 : undefined); // the whole (422), the first half (200), then the outage
    await client.sync();
    assert.deepEqual(tap.posts, [
      { events: all, status: 422 },
      { events: all.slice(0, 3), status: 200 },
      { events: all.slice(3), status: 503 },
    ]);
    assert.deepEqual(await client.pendingReports(), queued.slice(3), "the first half left the queue, the rest waits");
    assert.equal((await client.refusedReports()).count, 0, "nothing was refused on its own yet");
    const seen = await stored("ts-refused-half");
    for (const id of all.slice(0, 3)) assert.ok(seen.has(key(id)));

    tap.fault = undefined;
    tap.posts.length = 0;
    const next = await client.sync();
    assert.equal(next.reportsSent, 2);
    assert.deepEqual(tap.posts, [
      { events: all.slice(3), status: 422 },
      { events: [bad], status: 422 },
      { events: all.slice(4), status: 200 },
    ]);
    assert.deepEqual(await client.pendingReports(), []);
    assert.equal((await client.refusedReports()).count, 1);
    const after = await stored("ts-refused-half");
    for (const id of good) assert.ok(after.has(key(id)));
    assert.ok(!after.has(key(bad)));
  });
});

describe("the refused-report count in saved state", () => {
  it("is 0 in a status.json written before it existed, and kept as events are queued", async () => {
    const dir = mkdtempSync(join(tmpdir(), "modelsync-refused-state-"));
    const storage = new NodeStorage(dir);
    await storage.writeAtomic(
      "status.json",
      new TextEncoder().encode(JSON.stringify({ stale_reported_index: 4, event_seq: 7 })),
    );
    const client = new ModelSyncClient({
      server: "http://127.0.0.1:9",
      channel: "stable",
      deviceId: "old-state",
      platform: "linux",
      ortVersion: "1.24.3",
      storage,
      fetch: fetch as unknown as HttpFetch,
      network: new StaticNetwork(),
      runner: new NodeOrtRunner(),
      shippedRoot: null,
    });
    assert.deepEqual(await client.refusedReports(), { count: 0, last: null });
    await client.reportInferenceStats("m", 1, { count: 1 });
    const saved = JSON.parse(new TextDecoder().decode((await storage.read("status.json"))!));
    assert.deepEqual(saved, { stale_reported_index: 4, event_seq: 8, reports_refused: 0, last_refused: null });
    const [name] = await client.pendingReports();
    assert.match(name ?? "", /-000000008\.json$/, "the event sequence went on from the old state");
  });
});
