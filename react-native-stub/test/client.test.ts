/**
 * The client's flow against a small HTTP server on loopback that speaks docs/protocol.md
 * and serves documents forged with the TEST keys: what the real service never sends (a
 * rotated or bad root, an index for another channel, a rolled-back index, endless data, a
 * mix-and-match manifest, a refused report batch). Runs without Python.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";

import { BehaviourWindow } from "../src/core/behaviour";
import { sha256Hex } from "../src/core/bytes";
import { MAX_MANIFEST_BYTES, ModelSyncClient } from "../src/core/client";
import type { HttpFetch } from "../src/core/ports";
import { NodeOrtRunner } from "../src/node/ortRunner";
import { StaticNetwork } from "../src/node/network";
import { NodeStorage } from "../src/node/storage";
import { ROLES_V1, ROLES_V2, bytesOf, entryFor, indexSigned, manifestSigned, rootSigned, sign } from "./forge";

interface Route {
  status?: number;
  body?: Uint8Array;
  headers?: Record<string, string>;
  /** Send the headers and a few bytes, then nothing, ever (a server trickling to a halt). */
  hang?: boolean;
}

class FakeService {
  routes = new Map<string, Route>();
  reports: unknown[][] = [];
  reportStatus = 200;
  requests: { path: string; headers: IncomingMessage["headers"] }[] = [];
  private server: Server | undefined;
  url = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }

  reset(): void {
    this.routes.clear();
    this.reports = [];
    this.reportStatus = 200;
    this.requests = [];
    this.routes.set("/v1/devices/register", {
      status: 201,
      body: bytesOf({ device_token: "msd_test", fleet: "field", device_id: "d" }),
    });
  }

  json(path: string, doc: unknown): Uint8Array {
    const body = bytesOf(doc);
    this.routes.set(path, { body, headers: { ETag: `"${sha256Hex(body)}"` } });
    return body;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = (req.url ?? "").split("?")[0]!;
    this.requests.push({ path, headers: req.headers });
    if (path.endsWith("/reports")) {
      if (this.reportStatus === 200) this.reports.push(JSON.parse(Buffer.concat(chunks).toString()).events);
      res.writeHead(this.reportStatus, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ accepted: 0, duplicates: 0 }));
      return;
    }
    const route = this.routes.get(path);
    if (route === undefined) {
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ detail: "not found", code: "not_found" }));
      return;
    }
    const etag = route.headers?.ETag;
    if (etag !== undefined && req.headers["if-none-match"] === etag) {
      res.writeHead(304, route.headers);
      res.end();
      return;
    }
    if (route.hang === true) {
      res.writeHead(200, { "Content-Length": "1000000" });
      res.write(new Uint8Array(10));
      return;
    }
    res.writeHead(route.status ?? 200, route.headers ?? {});
    res.end(route.body ?? new Uint8Array(0));
  }
}

const svc = new FakeService();
let dirs: string;
let n = 0;
const root1 = sign(rootSigned(1, ROLES_V1), "root-1", "root-2");

async function newClient(): Promise<{ client: ModelSyncClient; storage: NodeStorage }> {
  const storage = new NodeStorage(join(dirs, `d${++n}`));
  const client = new ModelSyncClient({
    server: svc.url,
    channel: "stable",
    deviceId: `device-${n}`,
    platform: "linux",
    ortVersion: "1.24.3",
    storage,
    fetch: fetch as unknown as HttpFetch,
    network: new StaticNetwork(),
    runner: new NodeOrtRunner(),
    shippedRoot: root1,
  });
  await client.register("mse_test");
  return { client, storage };
}

async function savedJson(storage: NodeStorage, path: string): Promise<any> {
  const data = await storage.read(path);
  return data === null ? null : JSON.parse(new TextDecoder().decode(data));
}

describe("client flow against forged documents", () => {
  before(async () => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-client-"));
    await svc.start();
  });
  after(() => svc.stop());
  beforeEach(() => svc.reset());

  it("1.2-1.5: walks to a rotated root and saves each step", async () => {
    svc.json("/v1/root/2.json", sign(rootSigned(2, ROLES_V2), "root-1", "root-2", "root-4"));
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, {}), "index-1"));
    const { client, storage } = await newClient();
    const r = await client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.equal((await savedJson(storage, "root.json")).signed.version, 2);
    assert.ok(svc.requests.some((q) => q.path === "/v1/root/3.json"), "asked for v3 and got 404");
  });

  it("1.5: a rotated index key makes the device forget the old key's index version", async () => {
    svc.json("/v1/channels/stable/index", sign(indexSigned(9, {}), "index-1"));
    const { client, storage } = await newClient();
    assert.equal((await client.sync()).indexVersion, 9);
    // The index key is rotated (say index-1 leaked and signed v9 far ahead); the new key's
    // index starts over at v1. Without fast-forward recovery that would be a "rollback".
    const roles = { ...ROLES_V1, index: [["index-2"], 1] as [string[], number] };
    svc.json("/v1/root/2.json", sign(rootSigned(2, roles), "root-1", "root-2"));
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, {}), "index-2"));
    const r = await client.sync();
    assert.equal(r.outcome, "up_to_date", r.error?.message);
    assert.equal(r.indexVersion, 1);
    assert.equal((await savedJson(storage, "index/stable.json")).signed.version, 1);
  });

  it("1.3: a root signed only by keys the old root does not know is refused, nothing saved", async () => {
    svc.json("/v1/root/2.json", sign(rootSigned(2, ROLES_V2), "root-4", "root-5"));
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, {}), "index-1"));
    const { client, storage } = await newClient();
    const r = await client.sync();
    assert.equal(r.outcome, "failed");
    assert.equal(r.error?.name, "UnknownKeyError");
    assert.equal((await savedJson(storage, "root.json")).signed.version, 1);
    assert.equal(await storage.read("index/stable.json"), null, "no index fetched past a bad root");
  });

  it("1.6: an expired final root stops the sync", async () => {
    svc.json("/v1/root/2.json", sign(rootSigned(2, ROLES_V2, "2020-01-01T00:00:00Z"), "root-1", "root-2", "root-4"));
    const { client } = await newClient();
    const r = await client.sync();
    assert.equal(r.error?.name, "ExpiredError");
  });

  it("2.3: an index for another channel is refused and not saved", async () => {
    svc.json("/v1/channels/stable/index", sign({ ...indexSigned(1, {}), channel: "beta" }, "index-1"));
    const { client, storage } = await newClient();
    const r = await client.sync();
    assert.equal(r.error?.name, "WrongChannelError");
    assert.equal(await storage.read("index/stable.json"), null);
  });

  it("2.4: a rolled-back index is refused and the saved one kept", async () => {
    svc.json("/v1/channels/stable/index", sign(indexSigned(6, {}), "index-1"));
    const { client, storage } = await newClient();
    assert.equal((await client.sync()).indexVersion, 6);
    svc.json("/v1/channels/stable/index", sign(indexSigned(5, {}), "index-1"));
    const r = await client.sync();
    assert.equal(r.error?.name, "RollbackError");
    assert.equal((await savedJson(storage, "index/stable.json")).signed.version, 6);
  });

  it("3.1: a manifest that is not the one the index names is refused, fetched once more, reported as a transfer failure", async () => {
    const genuine = sign(manifestSigned(3), "publisher-1", "publisher-2");
    const entry = entryFor(genuine, "battery-anomaly", 3);
    svc.routes.set(`/v1/${entry.manifest.path}`, { body: bytesOf(sign(manifestSigned(2), "publisher-1", "publisher-2")) });
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, { "battery-anomaly": [entry] }), "index-1"));
    const { client } = await newClient();
    const r = await client.sync();
    assert.equal(r.models[0]?.error?.name, "MixAndMatchError");
    assert.equal(r.models[0]?.transport, true);
    assert.equal(svc.requests.filter((q) => q.path === `/v1/${entry.manifest.path}`).length, 2);
    // the bytes at the path could be anyone's on the way: not counted against the model
    assert.deepEqual(
      svc.reports.flat().map((e: any) => [e.kind, e.model, e.version, e.reason]),
      [["transfer_failed", "battery-anomaly", 3, "mix_and_match"]],
    );
  });

  it("3.1: a manifest declared over MAX_MANIFEST_BYTES is refused unread", async () => {
    const big = sign({ ...manifestSigned(3), padding: "x".repeat(MAX_MANIFEST_BYTES) }, "publisher-1", "publisher-2");
    const entry = entryFor(big, "battery-anomaly", 3); // genuine, and named with its true length
    svc.routes.set(`/v1/${entry.manifest.path}`, { body: bytesOf(big) });
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, { "battery-anomaly": [entry] }), "index-1"));
    const { client } = await newClient();
    const r = await client.sync();
    assert.equal(r.models[0]?.error?.name, "FormatError", r.models[0]?.error?.message);
    assert.match(r.models[0]?.error?.message ?? "", new RegExp(`more than the ${MAX_MANIFEST_BYTES}`));
    assert.equal(svc.requests.filter((q) => q.path === `/v1/${entry.manifest.path}`).length, 0);
  });

  it("4.1: endless data is cut at the declared length and not resumed", async () => {
    const blob = new Uint8Array(5000).map((_, i) => i % 251);
    const signed = manifestSigned(3, { sha256: sha256Hex(blob), length: blob.length, compressed: null });
    const env = sign(signed, "publisher-1", "publisher-2");
    const entry = entryFor(env, "battery-anomaly", 3);
    svc.routes.set(`/v1/${entry.manifest.path}`, { body: bytesOf(env) });
    svc.routes.set(`/v1/blobs/${sha256Hex(blob)}`, { body: new Uint8Array(blob.length * 4) });
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, { "battery-anomaly": [entry] }), "index-1"));
    const { client, storage } = await newClient();
    const r = await client.sync();
    assert.equal(r.models[0]?.error?.name, "LengthMismatchError");
    assert.equal(await storage.size(`cache/${sha256Hex(blob)}.part`), null);
    assert.equal(await client.currentModel(), null);
  });

  it("C.1 lets an urgent release through a metered link; 4.3 refuses an artifact that does not load, for good", async () => {
    const blob = new Uint8Array(3000).map((_, i) => (i * 7) % 256); // not an ORT file
    const signed = manifestSigned(3, { sha256: sha256Hex(blob), length: blob.length, compressed: null });
    const env = sign(signed, "publisher-1", "publisher-2");
    const entry = { ...entryFor(env, "battery-anomaly", 3), urgent: true };
    svc.routes.set(`/v1/${entry.manifest.path}`, { body: bytesOf(env) });
    svc.routes.set(`/v1/blobs/${sha256Hex(blob)}`, { body: blob });
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, { "battery-anomaly": [entry] }), "index-1"));
    const { client, storage } = await newClient();
    const metered = new ModelSyncClient({
      ...(client as unknown as { opts: ConstructorParameters<typeof ModelSyncClient>[0] }).opts,
      network: new StaticNetwork({ connected: true, metered: true }),
    });
    const r = await metered.sync();
    assert.equal(r.models[0]?.error?.name, "ArtifactLoadError", r.models[0]?.error?.message);
    assert.deepEqual(await savedJson(storage, "failed.json"), { "battery-anomaly": [3] });
    assert.deepEqual(await storage.list("models/battery-anomaly"), [], "the refused version's files are gone");
    assert.equal((await metered.sync()).models.length, 0, "never retried");
  });

  it("5.3 keeps current and previous only; currentModel falls back to previous", async () => {
    const { client, storage } = await newClient();
    const installed = (v: number): any => ({
      name: "m", version: v, target: "cpu", sha256: "0".repeat(64), length: 4,
      artifact_path: `models/m/v${v}/a.ort`, manifest_path: `models/m/v${v}/manifest.json`,
      providers: ["cpu"], fixed_batch: null, installed_at: "2026-01-01T00:00:00Z",
    });
    for (const v of [1, 2, 3, 4]) await storage.writeAtomic(`models/m/v${v}/a.ort`, new Uint8Array(4));
    await storage.writeAtomic("models/m/current.json.tmp-123", new Uint8Array(1));
    const state = (client as unknown as { state: import("../src/core/state").State }).state;
    await state.swap("m", installed(3));
    await state.swap("m", installed(4));
    await state.cleanUp("m");
    assert.deepEqual(await storage.list("models/m"), ["current.json", "v3", "v4"]);
    assert.equal((await client.currentModel("m"))?.source, "installed");
    await storage.remove("models/m/v4/a.ort"); // a damaged install
    const fallback = await client.currentModel("m");
    assert.equal(fallback?.source, "previous");
    assert.equal(fallback?.version, 3);
  });

  it("4.1: a zstd body that expands past the declared length is cut off (a zstd bomb)", async () => {
    // One zstd frame, hand-made: a single RLE block of 4,000 × "A" in 11 bytes
    // (magic, single-segment header with a 2-byte content size, block header, the byte).
    const bomb = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x60, 0xa0, 0x0e, 0x03, 0x7d, 0x00, 0x41]);
    const declared = new Uint8Array(1000).fill(0x41);
    const signed = manifestSigned(3, { sha256: sha256Hex(declared), length: declared.length, compressed: null });
    const env = sign(signed, "publisher-1", "publisher-2");
    const entry = entryFor(env, "battery-anomaly", 3);
    svc.routes.set(`/v1/${entry.manifest.path}`, { body: bytesOf(env) });
    svc.routes.set(`/v1/blobs/${sha256Hex(declared)}`, { body: bomb, headers: { "Content-Encoding": "zstd" } });
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, { "battery-anomaly": [entry] }), "index-1"));
    const { client, storage } = await newClient();
    const r = await client.sync();
    assert.equal(r.models[0]?.error?.name, "LengthMismatchError", r.models[0]?.error?.message);
    assert.equal(await storage.size(`cache/${sha256Hex(declared)}.part`), null, "nothing kept to resume");
    assert.equal(svc.requests.find((q) => q.path.startsWith("/v1/blobs/") && q.path !== `/v1/${entry.manifest.path}`)?.headers["accept-encoding"], "zstd");
  });

  it("a server that stops sending cannot hold the device past its deadline (SlowRetrievalError)", async () => {
    const blob = new Uint8Array(2000).map((_, i) => i % 13);
    const signed = manifestSigned(3, { sha256: sha256Hex(blob), length: blob.length, compressed: null });
    const env = sign(signed, "publisher-1", "publisher-2");
    const entry = entryFor(env, "battery-anomaly", 3);
    svc.routes.set(`/v1/${entry.manifest.path}`, { body: bytesOf(env) });
    svc.routes.set(`/v1/blobs/${sha256Hex(blob)}`, { hang: true });
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, { "battery-anomaly": [entry] }), "index-1"));
    const { client } = await newClient();
    const quick = new ModelSyncClient({
      ...(client as unknown as { opts: ConstructorParameters<typeof ModelSyncClient>[0] }).opts,
      deadlineMs: 1500,
    });
    const started = Date.now();
    const r = await quick.sync();
    assert.equal(r.models[0]?.error?.name, "SlowRetrievalError", r.models[0]?.error?.message);
    assert.ok(Date.now() - started < 10_000);
    assert.equal(r.reportsSent, 0, "nothing to report: a network failure is retried next time");
  });

  it("reports wait on disk while the server refuses them, then go in batches of 500", async () => {
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, {}), "index-1"));
    const { client } = await newClient();
    for (let i = 0; i < 501; i++) {
      const w = new BehaviourWindow(null, "2026-01-01T00:00:00Z");
      w.observe([1], [0], i, "CPUExecutionProvider");
      await client.reportBehaviour("m", 1, w.report());
    }
    svc.reportStatus = 503;
    assert.equal((await client.sync()).reportsSent, 0);
    assert.equal((await client.pendingReports()).length, 501);
    svc.reportStatus = 200;
    assert.equal((await client.sync()).reportsSent, 501);
    assert.deepEqual(svc.reports.map((b) => b.length), [500, 1]);
    const ids = new Set(svc.reports.flat().map((e: any) => e.event_id));
    assert.equal(ids.size, 501, "event ids are unique");
    for (const id of ids) assert.match(String(id), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(await client.pendingReports(), []);
  });

  it("queues a behaviour report as the wire format says, and refuses data the service would", async () => {
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, {}), "index-1"));
    const { client } = await newClient();
    const w = new BehaviourWindow([0, 1], Date.UTC(2026, 11, 3, 10));
    w.observe([1, -1, 1], [-0.5, 0.5, 7], 2.5, "CPUExecutionProvider");
    const data = w.report();
    await client.reportBehaviour("battery-anomaly", 3, data);
    await assert.rejects(client.reportBehaviour("battery-anomaly", 3, { ...data, histogram: [1, 1] }), RangeError);
    await assert.rejects(client.reportBehaviour("battery-anomaly", 3, { ...data, calls: 0 }), RangeError);
    assert.equal((await client.pendingReports()).length, 1, "only the good one is queued");
    assert.equal((await client.sync()).reportsSent, 1);
    const [event] = svc.reports.flat() as any[];
    assert.deepEqual(Object.keys(event).sort(), ["at", "data", "event_id", "kind", "model", "version"]);
    assert.equal(event.kind, "behaviour");
    assert.deepEqual([event.model, event.version], ["battery-anomaly", 3]);
    assert.match(event.at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.deepEqual(event.data, {
      since: "2026-12-03T10:00:00Z",
      rows: 3,
      anomalies: 1,
      calls: 1,
      histogram: [1, 1, 1],
      latency_ms: { p50: 2.5, p95: 2.5 },
      provider: "CPUExecutionProvider",
    });
  });

  it("installedManifest is null for a version this device does not keep", async () => {
    const { client } = await newClient();
    assert.equal(await client.installedManifest("battery-anomaly", 1), null);
  });

  it("a torn queue file is dropped instead of blocking every later report", async () => {
    svc.json("/v1/channels/stable/index", sign(indexSigned(1, {}), "index-1"));
    const { client, storage } = await newClient();
    await client.reportInferenceStats("m", 1, { count: 1 });
    await storage.writeAtomic("queue/000000000000001-000000000.json", new Uint8Array([123, 34]));
    const r = await client.sync();
    assert.equal(r.reportsSent, 1);
    assert.deepEqual(await client.pendingReports(), []);
  });

  it("sync() before register() is a clear error", async () => {
    const client = new ModelSyncClient({
      server: svc.url,
      channel: "stable",
      deviceId: "unregistered",
      platform: "linux",
      ortVersion: "1.24.3",
      storage: new NodeStorage(join(dirs, "unregistered")),
      fetch: fetch as unknown as HttpFetch,
      network: new StaticNetwork(),
      runner: new NodeOrtRunner(),
      shippedRoot: root1,
    });
    await assert.rejects(client.sync(), /not registered/);
  });
});
