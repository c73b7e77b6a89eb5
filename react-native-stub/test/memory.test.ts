/**
 * A zstd bomb costs the client no more memory than a normal download (docs/device.md 4.1):
 * each sync runs in a node process of its own (test/fixtures/memory_child.ts) and reports
 * its peak RSS. Measured: normal 119 MiB; the bomb 133 MiB before fzstd's output was
 * counted per block, 125 MiB after.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import { STUB } from "./helpers";

const SLACK_KIB = 16 << 10;

interface ChildResult {
  maxrss_kib: number;
  reasons: (string | null)[];
  transport: boolean[];
  models: string[];
  partials: string[];
}

function child(mode: "normal" | "bomb"): ChildResult {
  const state = mkdtempSync(join(tmpdir(), `modelsync-mem-${mode}-`));
  const run = spawnSync(process.execPath, ["--import", "tsx", join("test", "fixtures", "memory_child.ts"), mode, state], {
    cwd: STUB,
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout.trim().split("\n").at(-1)!) as ChildResult;
}

describe("bounded decompression", () => {
  it("an 8 KiB zstd bomb (256 MiB of RLE blocks) is refused within the memory of a normal download", () => {
    // Peak RSS of one node process moves by about 10 MiB from run to run (when V8 collects);
    // the least of three interleaved runs per mode is what each needs.
    const normals: ChildResult[] = [];
    const bombs: ChildResult[] = [];
    for (let i = 0; i < 3; i++) {
      normals.push(child("normal"));
      bombs.push(child("bomb"));
    }
    for (const normal of normals) {
      assert.deepEqual(normal.reasons, ["artifact_load"], "the normal artifact arrived whole and verified");
    }
    for (const bomb of bombs) {
      assert.deepEqual(bomb.reasons, ["length_mismatch"]);
      assert.deepEqual(bomb.transport, [true], "reported as a transfer failure");
      assert.deepEqual([bomb.models, bomb.partials], [[], []], "nothing installed, nothing kept to resume");
    }
    const least = (runs: ChildResult[]): number => Math.min(...runs.map((r) => r.maxrss_kib));
    const peaks = { normal: normals.map((r) => r.maxrss_kib), bomb: bombs.map((r) => r.maxrss_kib) };
    assert.ok(least(bombs) <= least(normals) + SLACK_KIB, JSON.stringify(peaks));
  });
});
