/** Behaviour reports (src/core/behaviour.ts): every case of ../tests/vectors/behaviour.json
 * (written by tests/vectors/generate.py, run by the Python device in tests/test_vectors.py)
 * through a BehaviourWindow, field by field; the bin rule's edges; nearest rank; Python's
 * rounding; what the service would refuse; the manifest's optional profile. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import {
  BehaviourWindow,
  LATENCY_SAMPLES,
  behaviourProblem,
  binOf,
  histogram,
  nearestRank,
  ortProviderName,
  round4,
  roundHalfEven,
} from "../src/core/behaviour";
import { FormatError } from "../src/core/errors";
import { validateManifest } from "../src/core/schema";
import { manifestSigned } from "./forge";
import { type BehaviourCase, runBehaviourCase } from "./vectorCases";

const VECTORS = join(import.meta.dirname, "..", "..", "tests", "vectors");
const cases = (JSON.parse(readFileSync(join(VECTORS, "behaviour.json"), "utf8")) as { cases: BehaviourCase[] }).cases;

describe("behaviour vectors through BehaviourWindow", () => {
  it("has cases", () => assert.ok(cases.length >= 4));
  for (const c of cases) {
    it(c.why, () => {
      const window = new BehaviourWindow(c.score_edges, "2026-12-03T10:00:00Z");
      for (const call of c.calls) {
        window.observe(call.labels, call.scores.map((s) => (s === null ? Number.NaN : s)), call.ms, call.provider);
      }
      const report = window.report();
      assert.deepEqual(Object.keys(report).sort(), [
        "anomalies",
        "calls",
        "histogram",
        "latency_ms",
        "provider",
        "rows",
        "since",
      ]);
      assert.equal(report.since, "2026-12-03T10:00:00Z");
      const want = c.expect as any;
      assert.equal(report.rows, want.rows, "rows");
      assert.equal(report.anomalies, want.anomalies, "anomalies");
      assert.equal(report.calls, want.calls, "calls");
      assert.deepEqual(report.histogram, want.histogram, "histogram");
      assert.deepEqual(report.latency_ms, want.latency_ms, "latency_ms");
      assert.equal(report.provider, want.provider, "provider");
      if (c.score_edges === null) assert.deepEqual(report.histogram, []);
      else assert.equal(report.histogram.length, c.score_edges.length + 1);
      assert.equal(behaviourProblem(report), null, "a report the service takes");
      // the helper the Hermes runner uses (vectorCases.ts) agrees
      const { since: _since, ...rest } = report;
      assert.deepEqual(runBehaviourCase(c), rest);
    });
  }
});

describe("binOf", () => {
  const edges = [-0.1, 0, 0.1];
  it("below the first edge is bin 0, on an edge the bin above it", () => {
    assert.equal(binOf(edges, -0.2), 0);
    assert.equal(binOf(edges, -0.1), 1);
    assert.equal(binOf(edges, -0.05), 1);
    assert.equal(binOf(edges, 0), 2);
    assert.equal(binOf(edges, -0), 2, "-0 is not below the edge 0");
    assert.equal(binOf(edges, 0.05), 2);
  });
  it("at or above the last edge is the last bin", () => {
    assert.equal(binOf(edges, 0.1), 3);
    assert.equal(binOf(edges, 1e9), 3);
    assert.equal(binOf(edges, Number.POSITIVE_INFINITY), 3);
    assert.equal(binOf(edges, Number.NEGATIVE_INFINITY), 0);
  });
  it("NaN is the last bin", () => {
    assert.equal(binOf(edges, Number.NaN), edges.length);
    assert.equal(binOf([0.5], Number.NaN), 1);
  });
  it("one edge: two bins", () => {
    assert.equal(binOf([0], -1), 0);
    assert.equal(binOf([0], 0), 1);
    assert.equal(binOf([0], 1), 1);
  });
  it("is the count of edges at or below the score, for many edges and scores", () => {
    const many = Array.from({ length: 63 }, (_, i) => (i - 31) / 8);
    for (let k = -300; k <= 300; k++) {
      const s = k / 64;
      assert.equal(binOf(many, s), many.filter((e) => e <= s).length, `score ${s}`);
    }
  });
  it("histogram counts every score once, in edges.length + 1 bins", () => {
    assert.deepEqual(histogram(edges, [-0.2, -0.1, 0, 0.1, 0.05, Number.NaN]), [1, 1, 2, 2]);
    assert.deepEqual(histogram([1], []), [0, 0]);
  });
});

describe("nearest rank and rounding", () => {
  it("takes rank ceil(q n), at least 1; 0 for no values", () => {
    assert.equal(nearestRank([], 0.5), 0);
    assert.equal(nearestRank([7], 0.5), 7);
    assert.equal(nearestRank([7], 0.95), 7);
    assert.equal(nearestRank([1, 2], 0.5), 1);
    assert.equal(nearestRank([1, 2, 3], 0.5), 2);
    assert.equal(nearestRank([1, 2, 3, 4], 0.5), 2);
    const twenty = Array.from({ length: 20 }, (_, i) => i + 1);
    assert.equal(nearestRank(twenty, 0.5), 10);
    assert.equal(nearestRank(twenty, 0.95), 19);
    assert.equal(nearestRank(twenty, 0), 1);
    assert.equal(nearestRank(twenty, 1), 20);
  });
  it("rounds to 4 decimals as Python's round(x, 4) does, exact ties to even", () => {
    // the right-hand values are Python's
    const python: [number, number][] = [
      [0.03125, 0.0312],
      [0.09375, 0.0938],
      [0.15625, 0.1562],
      [1.00005, 1.0001],
      [2.675, 2.675],
      [1234.56785, 1234.5678],
      [0.00005, 0.0001],
      [12.34565, 12.3456],
      [0.1 + 0.2, 0.3],
      [7.000049999, 7],
      [4.25, 4.25],
    ];
    for (const [x, want] of python) assert.equal(round4(x), want, `round(${x}, 4)`);
  });
  it("rounds to 6 decimals as Python's round(x, 6) does (the band check's anomaly_rate)", () => {
    // the right-hand values are Python's
    const python: [number, number][] = [
      [1 / 128, 0.007812],
      [3 / 128, 0.023438],
      [5 / 128, 0.039062],
      [1 / 3, 0.333333],
      [2 / 3, 0.666667],
      [0.1000001, 0.1],
      [0.0000005, 0.0],
      [0.0000015, 0.000002],
      [0.25, 0.25],
      [1, 1],
      [0, 0],
    ];
    for (const [x, want] of python) assert.equal(roundHalfEven(x, 6), want, `round(${x}, 6)`);
  });
});

describe("BehaviourWindow", () => {
  it("counts rows, anomalies and calls; bigint labels; a missing score is NaN", () => {
    const w = new BehaviourWindow([0], Date.UTC(2026, 11, 3, 10, 0, 0, 250));
    w.observe([1n, -1n, 1n], [-1, 2], 3, "CPUExecutionProvider");
    w.observe([], [], 1, "NnapiExecutionProvider");
    const r = w.report();
    assert.equal(r.since, "2026-12-03T10:00:00Z");
    assert.deepEqual([r.rows, r.anomalies, r.calls], [3, 1, 2]);
    assert.deepEqual(r.histogram, [1, 2], "the third row's missing score falls in the last bin");
    assert.deepEqual(r.latency_ms, { p50: 1, p95: 3 });
    assert.equal(r.provider, "NnapiExecutionProvider", "the provider of the last call");
  });
  it("keeps at most LATENCY_SAMPLES latencies: beyond, a repeatable reservoir", () => {
    const run = (): ReturnType<BehaviourWindow["report"]> => {
      const w = new BehaviourWindow(null, "2026-01-01T00:00:00Z");
      for (let i = 0; i < 5000; i++) w.observe([1], [0], i < 4000 ? 1 : 1000, "CPUExecutionProvider");
      assert.equal((w as unknown as { latencies: number[] }).latencies.length, LATENCY_SAMPLES);
      return w.report();
    };
    const r = run();
    assert.equal(r.calls, 5000);
    assert.equal(r.rows, 5000);
    assert.deepEqual(r.histogram, []);
    assert.equal(r.latency_ms.p50, 1, "a fifth of the calls were slow: the median is fast");
    assert.equal(r.latency_ms.p95, 1000, "and the 95th percentile slow");
    assert.deepEqual(run(), r, "seeded: the same calls, the same report");
  });
  it("reports what the service would refuse as such", () => {
    const w = new BehaviourWindow([0], "2026-01-01T00:00:00Z");
    w.observe([1, -1], [0.5, -0.5], 2.5, "CPUExecutionProvider");
    const good = w.report();
    assert.equal(behaviourProblem(good), null);
    assert.match(behaviourProblem({ ...good, anomalies: 3 })!, /anomalies/);
    assert.match(behaviourProblem({ ...good, histogram: [2, 1] })!, /histogram counts 3 rows/);
    assert.match(behaviourProblem({ ...good, latency_ms: { p50: 3, p95: 2 } })!, /p50 is above p95/);
    assert.match(behaviourProblem({ ...good, rows: 0, anomalies: 0, histogram: [] })!, /rows/);
    assert.match(behaviourProblem({ ...good, provider: "" })!, /provider/);
    assert.match(behaviourProblem({ ...good, since: "yesterday" })!, /since/);
    assert.match(behaviourProblem({ ...good, extra: 1 } as never)!, /fields/);
    assert.equal(behaviourProblem({ ...good, histogram: [] }), null, "a manifest without a profile");
  });
  it("names providers as onnxruntime does", () => {
    assert.equal(ortProviderName("cpu"), "CPUExecutionProvider");
    assert.equal(ortProviderName("nnapi"), "NnapiExecutionProvider");
    assert.equal(ortProviderName("coreml"), "CoreMLExecutionProvider");
    assert.equal(ortProviderName("xnnpack"), "XnnpackExecutionProvider");
    assert.equal(ortProviderName("CPUExecutionProvider"), "CPUExecutionProvider");
    assert.match(ortProviderName("some thing!"), /^[A-Za-z0-9._-]+ExecutionProvider$/);
  });
});

describe("the manifest's optional behaviour profile", () => {
  const profile = {
    score_edges: [-0.1, 0, 0.1],
    reference_histogram: [0.25, 0.25, 0.25, 0.25],
    anomaly_rate: 0.05,
    rows: 400,
    expected_band: [0.01, 0.2],
  };
  const withProfile = (b: unknown): Record<string, unknown> => ({ ...manifestSigned(1), behaviour: b });

  it("is null in a manifest without one", () => {
    const base = manifestSigned(1);
    delete base.behaviour;
    assert.equal(validateManifest(base).behaviour, null);
    assert.equal(validateManifest(withProfile(null)).behaviour, null);
  });
  it("is read when present; expected_band may be null or absent", () => {
    assert.deepEqual(validateManifest(withProfile(profile)).behaviour, profile);
    assert.equal(validateManifest(withProfile({ ...profile, expected_band: null })).behaviour?.expected_band, null);
    const { expected_band: _band, ...noBand } = profile;
    assert.equal(validateManifest(withProfile(noBand)).behaviour?.expected_band, null);
  });
  it("refuses edges that are not strictly increasing or not finite, and a histogram of another length", () => {
    const bad: unknown[] = [
      { ...profile, score_edges: [0, 0, 0.1] },
      { ...profile, score_edges: [0.1, 0, -0.1] },
      { ...profile, score_edges: [0, Number.POSITIVE_INFINITY, 1] },
      { ...profile, score_edges: [], reference_histogram: [1] },
      { ...profile, score_edges: Array.from({ length: 64 }, (_, i) => i), reference_histogram: new Array(65).fill(1 / 65) },
      { ...profile, reference_histogram: [0.5, 0.5] },
      { ...profile, anomaly_rate: 1.5 },
      { ...profile, rows: 0 },
      { ...profile, expected_band: [0.3, 0.1] },
      { ...profile, expected_band: [0.1] },
      "a profile",
    ];
    for (const b of bad) {
      assert.throws(() => validateManifest(withProfile(b)), FormatError, JSON.stringify(b));
    }
  });
});
