/**
 * installFromPack on the client with the shared vector packs (tests/vectors/packs/*.mspack),
 * no network: what a successful install writes (root walk saved, pack floor, the model,
 * queued reports with source "pack"), a failed model reported as online, every refused
 * pack leaving the state directory byte for byte as it was, and the pack floor holding the
 * online sync's check 2.4 too. The vector artifacts are stand-in bytes, so the golden check
 * runs through a runner that answers what the manifest's golden vectors expect (the real
 * onnxruntime path is test/packService.test.ts's, with a pack the real service exported).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { before, describe, it } from "node:test";

import { sha256Hex } from "../src/core/bytes";
import { type ClientOptions, ModelSyncClient } from "../src/core/client";
import { parseTime } from "../src/core/documents";
import * as errors from "../src/core/errors";
import type { HttpFetch, InferenceRunner } from "../src/core/ports";
import { StaticNetwork } from "../src/node/network";
import { NodeOrtRunner } from "../src/node/ortRunner";
import { installFromPackFile } from "../src/node/pack";
import { NodeStorage } from "../src/node/storage";
import { bytesOf, rootSigned, sign } from "./forge";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");
const packs = JSON.parse(readFileSync(join(VECTORS, "packs.json"), "utf8"));
const NOW = parseTime("2026-03-01T00:00:00Z");
const MODEL = "battery-anomaly";
const packFile = (name: string): string => join(VECTORS, "packs", `${name}.mspack`);
const packBytes = (name: string): Uint8Array => new Uint8Array(readFileSync(packFile(name)));

/** Answers the golden vectors of the manifest beside the artifact (stand-in bytes cannot
 * run); `off` shifts every score. */
function echoRunner(off = 0): InferenceRunner {
  return {
    async load(path) {
      const golden = JSON.parse(readFileSync(join(dirname(path), "manifest.json"), "utf8")).signed.golden;
      return {
        providers: ["cpu"],
        run: async () => ({ label: golden.label, score: golden.score.map((s: number) => s + off) }),
        release: async () => undefined,
      };
    },
  };
}

const noNetwork: HttpFetch = async (url) => {
  throw new Error(`no network on site (${url})`);
};

let dirs: string;
let n = 0;

async function device(
  extra: Partial<ClientOptions> = {},
  floor: number | null = 6,
): Promise<{ client: ModelSyncClient; storage: NodeStorage; dir: string }> {
  const dir = join(dirs, `d${++n}`);
  const storage = new NodeStorage(dir);
  // Enrolled at the depot: the identity (and so the fleet) is known before going offline.
  await storage.writeAtomic(
    "device.json",
    bytesOf({ device_id: "pump-0001", fleet: "pumps-eu", platform: "linux", device_token: "msd_depot" }),
  );
  // The vectors' device trusts channel index v6 (packs.json trusted_version).
  if (floor !== null) await storage.writeAtomic("index/stable.pack.json", bytesOf({ version: floor, pack_id: "0".repeat(32) }));
  const client = new ModelSyncClient({
    server: "http://service.invalid",
    channel: "stable",
    deviceId: "pump-0001",
    platform: "linux",
    ortVersion: "1.24.4",
    storage,
    fetch: noNetwork,
    network: new StaticNetwork({ connected: false, metered: false }),
    runner: echoRunner(),
    shippedRoot: packs.trusted_root,
    availableProviders: ["cpu"],
    now: () => NOW,
    ...extra,
  });
  return { client, storage, dir };
}

/** Every file under the state directory and its sha256: what a refusal must not change. */
function snapshot(dir: string): Record<string, string> {
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

function queued(dir: string): any[] {
  let names: string[] = [];
  try {
    names = readdirSync(join(dir, "queue")).sort();
  } catch {
    return [];
  }
  return names.map((f) => JSON.parse(readFileSync(join(dir, "queue", f), "utf8")));
}

const json = (dir: string, rel: string): any => JSON.parse(readFileSync(join(dir, rel), "utf8"));

describe("installFromPack with the shared vector packs, offline", () => {
  before(() => {
    dirs = mkdtempSync(join(tmpdir(), "modelsync-pack-"));
  });

  it("installs what the device's own bucket picks, saves the roots and the pack floor, queues the report", async () => {
    const { client, dir } = await device();
    const r = await installFromPackFile(client, packFile("good"));
    const expected = packs.cases.find((c: any) => c.name === "pack-good");
    assert.equal(r.outcome, "updated");
    assert.deepEqual(
      r.models.map((m) => [m.model, m.version, m.outcome]),
      [[MODEL, 4, "installed"]],
      "v5 at 0% is passed over for v4 at 100%",
    );
    assert.equal(r.indexVersion, 7);
    assert.equal(r.rootVersion, 4);
    assert.equal(r.validFrom, "2026-02-25T00:00:00Z");
    assert.equal(r.expires, "2026-03-27T00:00:00Z");
    const current = json(dir, `models/${MODEL}/current.json`).current;
    assert.equal(current.version, 4);
    assert.equal(current.sha256, expected.models[0].artifact);
    assert.equal(sha256Hex(new Uint8Array(readFileSync(join(dir, current.artifact_path)))), current.sha256);
    assert.equal(json(dir, "root.json").signed.version, 4, "the root walk v1→v4 is saved");
    assert.deepEqual(json(dir, "index/stable.pack.json"), { version: 7, pack_id: r.packId });
    const model = await client.currentModel(MODEL);
    assert.equal(model?.version, 4);
    assert.equal(model?.source, "installed");
    const events = queued(dir);
    assert.deepEqual(events.map((e) => e.kind), ["installed"]);
    assert.deepEqual(events[0].data, {
      target: "cpu",
      transfer: "pack",
      wire_bytes: 0,
      source: "pack",
      pack_id: r.packId,
      index_version: 7,
      providers: ["cpu"],
    });
    // the same pack again: nothing newer, nothing done, nothing written
    const before = snapshot(dir);
    const again = await client.installFromPack(packBytes("good"));
    assert.equal(again.outcome, "up_to_date");
    assert.deepEqual(again.models, []);
    const after = snapshot(dir);
    delete before["index/stable.pack.json"];
    delete after["index/stable.pack.json"];
    assert.deepEqual(after, before);
  });

  it("under activation next-start a pack's model is staged, then activated and reported with its source", async () => {
    const { client, dir } = await device({ activation: "next-start" });
    const r = await client.installFromPack(packBytes("good"));
    assert.equal(r.outcome, "staged");
    assert.deepEqual(await client.stagedModel(MODEL), { name: MODEL, version: 4 });
    assert.equal(await client.currentModel(MODEL), null, "not served before the next start");
    assert.deepEqual(queued(dir), [], "reported when it takes effect");
    // the next cold start: a new client over the same state directory
    const restarted = new ModelSyncClient({
      server: "http://service.invalid",
      channel: "stable",
      deviceId: "pump-0001",
      platform: "linux",
      ortVersion: "1.24.4",
      storage: new NodeStorage(dir),
      fetch: noNetwork,
      network: new StaticNetwork({ connected: false, metered: false }),
      runner: echoRunner(),
      shippedRoot: packs.trusted_root,
      activation: "next-start",
      now: () => NOW,
    });
    assert.deepEqual((await restarted.start()).map((a) => [a.version, a.outcome]), [[4, "activated"]]);
    assert.equal((await restarted.currentModel(MODEL))?.version, 4);
    const [event] = queued(dir);
    assert.equal(event.kind, "installed");
    assert.equal(event.data.source, "pack");
    assert.equal(event.data.activation, "next-start");
    assert.equal(event.data.index_version, 7);
  });

  it("a model that fails is reported as online, with the pack's source, and not retried", async () => {
    const { client, dir } = await device({ runner: new NodeOrtRunner() });
    const r = await client.installFromPack(packBytes("good"));
    assert.equal(r.outcome, "failed");
    assert.deepEqual(r.models.map((m) => [m.version, m.outcome, m.reason]), [[4, "failed", "artifact_load"]]);
    assert.ok(r.models[0]!.error instanceof errors.ArtifactLoadError);
    assert.equal(await client.currentModel(MODEL), null, "nothing installed");
    assert.deepEqual(readdirSync(join(dir, "models", MODEL)), [], "its version directory is gone");
    assert.deepEqual(json(dir, "failed.json"), { [MODEL]: [4] });
    const [event] = queued(dir);
    assert.equal(event.kind, "install_failed");
    assert.equal(event.reason, "artifact_load");
    assert.equal(event.data.source, "pack");
    assert.equal(event.data.index_version, 7);
    // the snapshot was genuine: the floor moves even though the model failed (as Python's)
    assert.equal(json(dir, "index/stable.pack.json").version, 7);
    const again = await client.installFromPack(packBytes("good"));
    assert.deepEqual(again.models, [], "a permanent failure is known bad");
  });

  it("golden vectors that disagree: golden_failed, the model not installed", async () => {
    const { client, dir } = await device({ runner: echoRunner(0.5) });
    const r = await client.installFromPack(packBytes("good"));
    assert.deepEqual(r.models.map((m) => [m.outcome, m.reason]), [["failed", "golden_vector"]]);
    assert.equal(queued(dir)[0].kind, "golden_failed");
    assert.equal(await client.currentModel(MODEL), null);
  });

  it("a pack verdict per model, the same as planPack's, for the other ok cases", async () => {
    for (const c of packs.cases.filter((x: any) => x.expect === "ok" && x.name !== "pack-good")) {
      const platform = c.device.target === "android-nnapi" ? "android" : "linux";
      const { client, storage } = await device({ platform, ortVersion: c.device.runtime, now: () => parseTime(c.now) });
      for (const [name, version] of Object.entries(c.installed as Record<string, number>)) {
        // an installed version, as the state records it (only its version matters to 2.6)
        await storage.writeAtomic(`models/${name}/current.json`, bytesOf({ current: { version, length: 1 }, previous: null }));
      }
      const r = await client.installFromPack(packBytes(c.file.slice(6, -7)));
      assert.deepEqual(
        r.models.map((m) => ({ model: m.model, version: m.version, outcome: m.outcome, reason: m.reason })),
        c.models.map((m: any) => ({ model: m.model, version: m.version, outcome: "failed", reason: m.reason })),
        c.name,
      );
    }
  });

  for (const c of packs.cases.filter((x: any) => x.expect !== "ok")) {
    it(`refuses ${c.file.slice(6)} at ${c.now} (${c.expect}) with the state unchanged`, async () => {
      const { client, dir } = await device({ now: () => parseTime(c.now) }, c.trusted_version);
      await client.currentModel(); // what a start writes, before the snapshot
      const before = snapshot(dir);
      const cls = (errors as unknown as Record<string, new (...a: never[]) => errors.ModelSyncError>)[c.expect]!;
      await assert.rejects(client.installFromPack(packBytes(c.file.slice(6, -7))), (err: Error) => {
        assert.equal(err.name, c.expect, `${c.why}: ${err.message}`);
        assert.ok(err instanceof cls);
        return true;
      });
      assert.deepEqual(snapshot(dir), before, c.why);
    });
  }

  it("a pack with a lower version than one installed before is refused (RollbackError), state unchanged", async () => {
    const { client, dir } = await device({}, null);
    await client.installFromPack(packBytes("good")); // floor 7
    const before = snapshot(dir);
    await assert.rejects(client.installFromPack(packBytes("lower-version")), errors.RollbackError);
    assert.deepEqual(snapshot(dir), before);
  });

  it("an unreadable pack file is a PackFormatError", async () => {
    const { client } = await device();
    await assert.rejects(installFromPackFile(client, join(dirs, "no-such.mspack")), errors.PackFormatError);
  });

  it("an unregistered device refuses a pack (it does not know its fleet)", async () => {
    const storage = new NodeStorage(join(dirs, `unregistered-${++n}`));
    const client = new ModelSyncClient({
      server: "http://service.invalid",
      channel: "stable",
      deviceId: "pump-0001",
      platform: "linux",
      ortVersion: "1.24.4",
      storage,
      fetch: noNetwork,
      network: new StaticNetwork(),
      runner: echoRunner(),
      shippedRoot: packs.trusted_root,
      now: () => NOW,
    });
    await assert.rejects(client.installFromPack(packBytes("good")), errors.StoreError);
  });
});

describe("the pack floor holds the online sync too (check 2.4 after P.2.3)", () => {
  // After the pack's root walk the device trusts root v4, whose index key is index-2.
  const index = (version: number): unknown =>
    sign(
      {
        _type: "channel-index",
        spec_version: "1.0",
        fleet: "pumps-eu",
        channel: "stable",
        version,
        expires: "2026-03-08T00:00:00Z",
        models: {},
      },
      "index-2",
    );

  function online(served: { index: unknown; reports: any[][] }): HttpFetch {
    return async (url, init) => {
      const path = new URL(url).pathname;
      const reply = (status: number, body: unknown): any =>
        new Response(body === null ? null : JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
      if (path.startsWith("/v1/root/")) return reply(404, { detail: "no such root", code: "not_found" });
      if (path === "/v1/channels/stable/index") return reply(200, served.index);
      if (path.endsWith("/reports")) {
        served.reports.push(JSON.parse(init.body ?? "{}").events);
        return reply(200, { accepted: 1, duplicates: 0 });
      }
      return reply(404, { detail: "not found", code: "not_found" });
    };
  }

  it("an online index below the pack's version is a rollback; at it, the queued pack report is sent", async () => {
    const served = { index: index(6), reports: [] as any[][] };
    const { client, dir } = await device({ fetch: online(served), network: new StaticNetwork() }, null);
    await client.installFromPack(packBytes("good"));
    assert.equal(queued(dir).length, 1);
    const low = await client.sync();
    assert.equal(low.outcome, "failed");
    assert.ok(low.error instanceof errors.RollbackError, low.error?.message);
    assert.match(low.error!.message, /older than trusted v7/);
    // the report still went out with that sync: reports do not wait for a good index
    assert.equal(low.reportsSent, 1);
    assert.equal(served.reports.flat()[0].data.source, "pack");
    served.index = index(7);
    const ok = await client.sync();
    assert.equal(ok.outcome, "up_to_date", ok.error?.message);
    assert.equal(ok.indexVersion, 7);
    assert.equal(queued(dir).length, 0);
  });

  it("a root that rotates the offline role forgets the pack floor", async () => {
    const served = { index: index(6), reports: [] as any[][] };
    const { client, dir } = await device({ fetch: online(served), network: new StaticNetwork() }, null);
    await client.installFromPack(packBytes("good"));
    const roles = {
      root: [["root-1", "root-2", "root-4"], 2] as [string[], number],
      publisher: [["publisher-1", "publisher-2", "publisher-3"], 2] as [string[], number],
      index: [["index-2"], 1] as [string[], number],
      offline: [["attacker-1"], 1] as [string[], number],
    };
    const root5 = sign(rootSigned(5, roles, "2027-01-01T00:00:00Z"), "root-1", "root-4");
    const base = online(served);
    const withRoot5: HttpFetch = async (url, init) =>
      new URL(url).pathname === "/v1/root/5.json"
        ? (new Response(JSON.stringify(root5), { status: 200 }) as any)
        : base(url, init);
    const c2 = new ModelSyncClient({
      server: "http://service.invalid",
      channel: "stable",
      deviceId: "pump-0001",
      platform: "linux",
      ortVersion: "1.24.4",
      storage: new NodeStorage(dir),
      fetch: withRoot5,
      network: new StaticNetwork(),
      runner: echoRunner(),
      shippedRoot: packs.trusted_root,
      now: () => NOW,
    });
    const r = await c2.sync();
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.indexVersion, 6, "index v6 is accepted once the floor the old offline key set is gone");
    assert.equal(json(dir, "root.json").signed.version, 5);
    assert.throws(() => json(dir, "index/stable.pack.json"), /ENOENT/);
  });
});
