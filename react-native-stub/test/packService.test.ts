/**
 * Offline packs end to end with the real Python service (test/fixtures/live_service.py):
 * the service exports a pack (POST /v1/fleets/{fleet}/channels/{channel}/pack, release
 * scope, signed by its offline key); a registered TypeScript client with no network
 * installs it with installFromPackFile, the golden vectors run on onnxruntime-node and the
 * model serves; a stale, other-fleet, truncated, tampered or lower-version pack is refused
 * with the state unchanged; back online, the queued report reaches the service, whose
 * release status counts the install from a pack.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";

import { sha256Hex } from "../src/core/bytes";
import { type ClientOptions, ModelSyncClient } from "../src/core/client";
import * as errors from "../src/core/errors";
import { parsePack } from "../src/core/pack";
import type { HttpFetch } from "../src/core/ports";
import { StaticNetwork } from "../src/node/network";
import { NodeOrtRunner, openNodeSession } from "../src/node/ortRunner";
import { installFromPackFile } from "../src/node/pack";
import { NodeStorage } from "../src/node/storage";
import { type Service, SKIP_REASON, api, startService } from "./helpers";

const DAY = 86_400_000;
const MODEL = "fleet-iforest";
let svc: Service;
let dirs: string;
const releases: Record<number, any> = {};
const packs: Record<string, { path: string; bytes: Uint8Array; id: string; indexVersion: number }> = {};

const noNetwork: HttpFetch = async (url) => {
  throw new Error(`no network on site (${url})`);
};

function client(deviceId: string, online: boolean, extra: Partial<ClientOptions> = {}): ModelSyncClient {
  return new ModelSyncClient({
    server: svc.url,
    channel: svc.channel,
    deviceId,
    platform: "linux",
    ortVersion: "1.24.3",
    storage: new NodeStorage(join(dirs, deviceId)),
    fetch: online ? (fetch as unknown as HttpFetch) : noNetwork,
    network: new StaticNetwork({ connected: online, metered: false }),
    runner: new NodeOrtRunner(),
    shippedRoot: svc.root,
    availableProviders: ["cpu"],
    ...extra,
  });
}

/** Enrolled at the depot (online), then taken to a site with no network. */
async function enrolled(deviceId: string, extra: Partial<ClientOptions> = {}): Promise<ModelSyncClient> {
  await client(deviceId, true).register(svc.enrollment_token);
  return client(deviceId, false, extra);
}

async function exportPack(label: string, body: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${svc.url}/v1/fleets/${svc.fleet}/channels/${svc.channel}/pack`, {
    method: "POST",
    headers: { Authorization: `Bearer ${svc.publisher_token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  assert.equal(res.status, 200, new TextDecoder().decode(bytes.subarray(0, 500)));
  assert.equal(res.headers.get("content-type"), "application/vnd.modelsync.pack");
  const path = join(dirs, `${label}.mspack`);
  writeFileSync(path, bytes);
  packs[label] = {
    path,
    bytes,
    id: res.headers.get("x-pack-id")!,
    indexVersion: Number(res.headers.get("x-pack-index-version")),
  };
}

async function release(version: number): Promise<void> {
  releases[version] = await api(svc, "POST", "/v1/releases", {
    fleet: svc.fleet,
    channel: svc.channel,
    model: MODEL,
    version,
    percent: 100,
  });
}

function snapshot(deviceId: string): Record<string, string> {
  const dir = join(dirs, deviceId);
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = sha256Hex(new Uint8Array(readFileSync(p)));
    }
  };
  walk(dir);
  return out;
}

function queued(deviceId: string): any[] {
  const dir = join(dirs, deviceId, "queue");
  return readdirSync(dir).sort().map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")));
}

async function refused(deviceId: string, c: ModelSyncClient, bytes: Uint8Array, cls: new (...a: never[]) => Error): Promise<Error> {
  await c.currentModel(); // a start, before the snapshot
  const before = snapshot(deviceId);
  let caught: unknown;
  await assert.rejects(c.installFromPack(bytes), (err: Error) => {
    caught = err;
    assert.ok(err instanceof cls, `${err.name}: ${err.message}`);
    return true;
  });
  assert.deepEqual(snapshot(deviceId), before, "a refused pack changes nothing");
  return caught as Error;
}

describe("offline packs exported by the real sync service", { skip: SKIP_REASON, timeout: 300_000 }, () => {
  before(async () => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-packsvc-"));
    svc = await startService();
    await release(1);
    await exportPack("v1", { model: MODEL, targets: ["cpu"], valid_days: 7 });
  });

  after(async () => {
    await svc?.stop();
  });

  it("the exported pack: the channel's model for the chosen target, valid for 7 days", () => {
    const header = parsePack(packs.v1!.bytes);
    assert.equal(header.fleet, svc.fleet);
    assert.equal(header.channel, svc.channel);
    const kinds = header.members.map((m) => m.kind);
    assert.ok(kinds.includes("root") && kinds.includes("manifest"));
    assert.equal(kinds.filter((k) => k === "offline-index").length, 1);
    const cpu = svc.bundles["1"]!.manifest.signed.artifacts.find((a: any) => a.target === "cpu");
    assert.deepEqual(
      header.members.filter((m) => m.kind === "artifact").map((m) => m.sha256),
      [cpu.sha256],
      "only the cpu artifact",
    );
    assert.match(packs.v1!.id, /^[0-9a-f]{32}$/);
  });

  it("a client with no network installs it; the model runs and matches its golden vectors", async () => {
    const c = await enrolled("site-1");
    const started = Date.now();
    const r = await installFromPackFile(c, packs.v1!.path);
    const ms = Date.now() - started;
    assert.equal(r.outcome, "updated", r.models[0]?.error?.message);
    assert.deepEqual(r.models.map((m) => [m.model, m.version, m.outcome]), [[MODEL, 1, "installed"]]);
    assert.equal(r.packId, packs.v1!.id);
    assert.equal(r.indexVersion, packs.v1!.indexVersion);
    assert.ok(Date.parse(r.expires) - Date.parse(r.validFrom) <= 7 * DAY);
    const cpu = svc.bundles["1"]!.manifest.signed.artifacts.find((a: any) => a.target === "cpu");
    console.log(
      `# installed ${MODEL} v1 from a ${packs.v1!.bytes.length}-byte pack (cpu artifact ${cpu.length} bytes, ` +
        `${cpu.compressed?.length ?? "no"} compressed) in ${ms} ms, golden vectors included`,
    );

    const current = await c.currentModel(MODEL);
    assert.equal(current?.version, 1);
    assert.equal(current?.source, "installed");
    const golden = svc.bundles["1"]!.manifest.signed.golden;
    const session = await openNodeSession(current!.path, current!.providers, current!.fixedBatch);
    const out = await session.run(golden.inputs);
    await session.release();
    for (let i = 0; i < golden.inputs.length; i++) assert.equal(Number(out.label[i]), golden.label[i], `row ${i}`);

    const events = queued("site-1");
    assert.deepEqual(events.map((e) => e.kind), ["installed"]);
    assert.equal(events[0].data.source, "pack");
    assert.equal(events[0].data.pack_id, packs.v1!.id);
    assert.equal(events[0].data.transfer, "pack");
  });

  it("refuses a stale pack (StalePackError), state unchanged", async () => {
    const c = await enrolled("site-stale", { now: () => Date.now() + 8 * DAY });
    await refused("site-stale", c, packs.v1!.bytes, errors.StalePackError);
  });

  it("refuses a pack for another fleet (WrongChannelError), state unchanged", async () => {
    const c = await enrolled("site-other-fleet");
    // the same device, enrolled in another fleet (its saved identity names it)
    const idPath = join(dirs, "site-other-fleet", "device.json");
    writeFileSync(idPath, JSON.stringify({ ...JSON.parse(readFileSync(idPath, "utf8")), fleet: "elsewhere" }));
    await refused("site-other-fleet", c, packs.v1!.bytes, errors.WrongChannelError);
  });

  it("refuses a truncated pack and a tampered one (PackFormatError), state unchanged", async () => {
    const c = await enrolled("site-damaged");
    const bytes = packs.v1!.bytes;
    await refused("site-damaged", c, bytes.subarray(0, Math.floor(bytes.length * 0.9)), errors.PackFormatError);
    const tampered = bytes.slice();
    tampered[tampered.length - 100]! ^= 0x01; // inside the last member, the header untouched
    await refused("site-damaged", c, tampered, errors.PackFormatError);
  });

  it("back online, the queued report reaches the service: an install from a pack", async () => {
    const online = client("site-1", true);
    const r = await online.sync();
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.outcome, "up_to_date", "the pack's version is the online one: nothing to fetch");
    assert.ok(r.reportsSent >= 1);
    assert.deepEqual(await online.pendingReports(), []);
    const status = await api(svc, "GET", `/v1/releases/${releases[1].id}/status`);
    assert.ok(status.installs_from_packs >= 1, JSON.stringify(status));
    assert.ok(status.installs >= 1, JSON.stringify(status));
  });

  it("refuses a pack with a lower version than one installed (RollbackError), state unchanged", async () => {
    await release(2);
    await exportPack("v2", { valid_days: 7 });
    assert.ok(packs.v2!.indexVersion > packs.v1!.indexVersion);
    const c = await enrolled("site-2");
    const r = await c.installFromPack(packs.v2!.bytes);
    assert.deepEqual(r.models.map((m) => [m.version, m.outcome]), [[2, "installed"]], r.models[0]?.error?.message);
    const err = await refused("site-2", c, packs.v1!.bytes, errors.RollbackError);
    assert.match(err.message, /older than trusted/);
    // online again: the service's index (the pack's version) is accepted, the report sent
    const back = await client("site-2", true).sync();
    assert.equal(back.error, undefined, back.error?.message);
    assert.ok(back.reportsSent >= 1);
    const status = await api(svc, "GET", `/v1/releases/${releases[2].id}/status`);
    assert.ok(status.installs_from_packs >= 1, JSON.stringify(status));
  });
});
