/** The shared offline-pack vectors (tests/vectors/packs.json and packs/*.mspack, written by
 * generate.py's build_packs): every pack through planPack, the same checks P.1 to 4.2 that
 * device_sim.pack_install.plan_pack runs in tests/test_vectors.py::test_pack_verdict. The
 * pack-wide verdict is the exact error class name; on "ok" the per-model verdicts deep-equal
 * Python's. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { parseTime } from "../src/core/documents";
import { ModelSyncError, PackFormatError } from "../src/core/errors";
import { findMember, parsePack, planPack, readMember, packVerdict } from "../src/core/pack";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");
const packs = JSON.parse(readFileSync(join(VECTORS, "packs.json"), "utf8")) as {
  trusted_root: unknown;
  cases: {
    name: string;
    file: string;
    expect: string;
    why: string;
    device: { id: string; fleet: string; channel: string; target: string; runtime: string };
    now: string;
    trusted_version: number | null;
    installed: Record<string, number>;
    models: unknown[];
  }[];
};

function plan(c: (typeof packs.cases)[number]): unknown[] {
  const bytes = new Uint8Array(readFileSync(join(VECTORS, c.file)));
  const p = planPack(bytes, {
    trustedRoot: packs.trusted_root,
    deviceId: c.device.id,
    fleet: c.device.fleet,
    channel: c.device.channel,
    target: c.device.target,
    runtime: c.device.runtime,
    trustedVersion: c.trusted_version,
    installed: c.installed,
    failed: {},
    nowMs: parseTime(c.now),
  });
  return p.models.map(packVerdict);
}

describe("offline pack vectors through planPack", () => {
  it("has the cases generate.py writes", () => {
    assert.ok(packs.cases.length >= 15, `${packs.cases.length} cases`);
    assert.ok(packs.cases.some((c) => c.expect === "ok") && packs.cases.some((c) => c.expect !== "ok"));
  });
  for (const c of packs.cases) {
    it(`${c.name} → ${c.expect}`, () => {
      if (c.expect === "ok") {
        assert.deepEqual(plan(c), c.models, c.why);
        return;
      }
      let got = "ok";
      try {
        plan(c);
      } catch (err) {
        if (!(err instanceof ModelSyncError)) throw err;
        got = err.name;
      }
      assert.equal(got, c.expect, c.why);
    });
  }
});

describe("the .mspack container", () => {
  const good = new Uint8Array(readFileSync(join(VECTORS, "packs", "good.mspack")));

  it("lists its members in order, each read back whole and as listed", () => {
    const header = parsePack(good);
    assert.equal(header.fleet, "pumps-eu");
    assert.equal(header.size, good.length);
    assert.deepEqual(
      [...new Set(header.members.map((m) => m.kind))],
      ["root", "offline-index", "manifest", "artifact"],
    );
    assert.ok(header.members.some((m) => m.encoding === "zstd"), "compressed members too");
    for (const m of header.members) assert.equal(readMember(good, m).length, m.length);
    const art = header.members.find((m) => m.kind === "artifact")!;
    assert.equal(findMember(header, "artifact", art.sha256), art);
    assert.equal(findMember(header, "artifact", "0".repeat(64), art.name), art);
    assert.equal(findMember(header, "manifest", art.sha256), undefined);
  });

  function rewritten(edit: (header: any) => void, extra = new Uint8Array(0)): Uint8Array {
    const view = new DataView(good.buffer, good.byteOffset, good.byteLength);
    const hlen = view.getUint32(8, false);
    const header = JSON.parse(new TextDecoder().decode(good.subarray(12, 12 + hlen)));
    edit(header);
    const head = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(12 + head.length + good.length - 12 - hlen + extra.length);
    out.set(good.subarray(0, 8));
    new DataView(out.buffer).setUint32(8, head.length, false);
    out.set(head, 12);
    out.set(good.subarray(12 + hlen), 12 + head.length);
    out.set(extra, out.length - extra.length);
    return out;
  }

  const refusals: [string, () => Uint8Array][] = [
    ["an empty file", () => new Uint8Array(0)],
    ["another file type", () => new TextEncoder().encode("PK\x03\x04 not a pack at all")],
    ["a header length past the cap", () => {
      const b = good.slice();
      new DataView(b.buffer).setUint32(8, (4 << 20) + 1, false);
      return b;
    }],
    ["a header cut short", () => good.subarray(0, 40)],
    ["a header that is not JSON", () => {
      const b = good.slice();
      b[12] = 0x7b + 1; // '{' → '|'
      return b;
    }],
    ["format 2", () => rewritten((h) => (h.format = 2))],
    ["no members", () => rewritten((h) => (h.members = []))],
    ["more than 4096 members", () => rewritten((h) => (h.members = Array(4097).fill(h.members[0])))],
    ["an unknown kind", () => rewritten((h) => (h.members[0].kind = "script"))],
    ["an unknown encoding", () => rewritten((h) => (h.members[0].encoding = "gzip"))],
    ["a length past 1 GiB", () => rewritten((h) => (h.members.at(-1).length = 2 ** 30 + 1))],
    ["a float length", () => rewritten((h) => (h.members[0].length = 1.5))],
    ["identity with differing lengths", () => rewritten((h) => {
      const m = h.members.find((x: any) => x.encoding === "identity");
      m.length += 1;
    })],
    ["an uppercase sha256", () => rewritten((h) => (h.members[0].sha256 = h.members[0].sha256.toUpperCase()))],
    ["bytes after the last member", () => rewritten(() => undefined, new Uint8Array([0]))],
    ["two offline indexes", () => rewritten((h) => {
      const idx = h.members.find((x: any) => x.kind === "offline-index");
      const root = h.members.find((x: any) => x.kind === "root");
      root.kind = "offline-index";
      void idx;
    })],
  ];
  for (const [what, make] of refusals) {
    it(`refuses ${what} (PackFormatError)`, () => {
      assert.throws(() => parsePack(make()), PackFormatError);
    });
  }

  it("refuses a zstd member that expands past its declared length, bounded", () => {
    const header = parsePack(good);
    const z = header.members.find((m) => m.encoding === "zstd")!;
    assert.throws(() => readMember(good, { ...z, length: z.length - 1 }), /decompresses to more bytes/);
    assert.throws(() => readMember(good, { ...z, length: z.length + 1 }), /decompresses to \d+ bytes/);
  });
});
