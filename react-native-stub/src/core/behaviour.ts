/**
 * What a model did on this device since its last report, per model version: rows scored,
 * anomalies, the score histogram in the manifest's bins, latency p50/p95 per call and the
 * execution provider that ran it. Only these aggregates leave the device, as one
 * `behaviour` report per model version at the next sync (docs/behaviour.md); no telemetry
 * row does. The same arithmetic as device_sim/behaviour.py and packager/behaviour.py;
 * tests/vectors/behaviour.json holds the cases both run.
 *
 * Bins are total: with interior edges `e[0] < … < e[B-2]` a score `s` falls in bin
 * `#{k : e[k] <= s}` (below `e[0]` bin 0, at or above the last edge bin B-1), and a NaN
 * score, which no edge orders, in the last bin. Bounded: the histogram has the manifest's
 * bin count, latencies are kept for at most LATENCY_SAMPLES calls per window (a seeded
 * reservoir beyond, so a run is repeatable), percentiles by nearest rank.
 */
import { formatTime } from "./documents";

/** Latencies kept per window; beyond, a reservoir sample (device_sim's LATENCY_SAMPLES). */
export const LATENCY_SAMPLES = 512;
/** A report's histogram has at most this many bins (packager.behaviour.MAX_BINS). */
export const MAX_BINS = 64;

export interface BehaviourLatency {
  p50: number;
  p95: number;
}

/** The `data` of a `behaviour` report (docs/protocol.md): exactly these fields, the
 * service refuses any other. */
export interface BehaviourData {
  /** ISO-8601 UTC time the window started; the event's `at` is its end. */
  since: string;
  /** Rows scored in the window, at least 1 (a window without rows is not reported). */
  rows: number;
  /** Rows whose label was -1. */
  anomalies: number;
  /** run() calls in the window. */
  calls: number;
  /** Counts per bin of the manifest's `behaviour.score_edges`; [] when it has no profile. */
  histogram: number[];
  /** Per call, nearest rank, rounded to 4 decimals. */
  latency_ms: BehaviourLatency;
  /** onnxruntime's name of the provider that ran the last call, e.g. CPUExecutionProvider. */
  provider: string;
}

/** The bin of one score: the number of edges at or below it (Python's bisect_right);
 * NaN in the last bin. */
export function binOf(edges: readonly number[], score: number): number {
  if (Number.isNaN(score)) return edges.length;
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (edges[mid]! <= score) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Counts per bin (edges.length + 1 of them) of `scores`. */
export function histogram(edges: readonly number[], scores: ArrayLike<number>): number[] {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (let i = 0; i < scores.length; i++) counts[binOf(edges, Number(scores[i]))]! += 1;
  return counts;
}

/** The `q` quantile of ascending `sorted` by nearest rank: the value at 1-based rank
 * ceil(q * n), at least 1; 0 when there is none. */
export function nearestRank(sorted: readonly number[], q: number): number {
  const n = sorted.length;
  if (n === 0) return 0;
  const rank = Math.min(n, Math.max(1, Math.ceil(q * n)));
  return sorted[rank - 1]!;
}

/** Python's round(x, digits): the nearest number of `digits` decimals, an exact tie to the
 * even last digit. toFixed rounds the double's exact value, ties upward; a double is an
 * exact tie at d decimals only when x * 2^(d+1) is an odd integer (x = m / 2^(d+1), m odd),
 * and then x * 10^d = m * 5^d / 2 is exact. */
export function roundHalfEven(x: number, digits: number): number {
  if (!Number.isFinite(x)) return x;
  const twice = 2 ** (digits + 1);
  if (Number.isInteger(x * twice) && !Number.isInteger(x * (twice / 2))) {
    const scale = 10 ** digits;
    const scaled = x * scale; // exact: an odd multiple of 5^digits / 2
    const down = Math.floor(scaled);
    return (down % 2 === 0 ? down : down + 1) / scale;
  }
  return Number(x.toFixed(digits));
}

/** Python's round(x, 4) (a behaviour report's latencies). */
export function round4(x: number): number {
  return roundHalfEven(x, 4);
}

/** onnxruntime's own name of an onnxruntime-common provider ("cpu" → CPUExecutionProvider),
 * the name the Python device reports. */
export function ortProviderName(name: string): string {
  const known = ORT_NAMES[name.toLowerCase()];
  if (known !== undefined) return known;
  if (/ExecutionProvider$/.test(name)) return name;
  const clean = name.replace(/[^A-Za-z0-9._-]/g, "");
  return clean === "" ? ORT_NAMES.cpu! : `${clean[0]!.toUpperCase()}${clean.slice(1)}ExecutionProvider`;
}

const ORT_NAMES: Record<string, string> = {
  cpu: "CPUExecutionProvider",
  nnapi: "NnapiExecutionProvider",
  coreml: "CoreMLExecutionProvider",
  xnnpack: "XnnpackExecutionProvider",
  qnn: "QNNExecutionProvider",
  webgpu: "WebGpuExecutionProvider",
  cuda: "CUDAExecutionProvider",
};

/** A small seeded generator (mulberry32) for the reservoir: repeatable, no crypto needed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One model version's window: observe() every run() call, report() at the next sync. */
export class BehaviourWindow {
  readonly edges: readonly number[] | null;
  /** ISO-8601 UTC start of the window. */
  readonly since: string;
  rows = 0;
  anomalies = 0;
  calls = 0;
  provider = "";
  private readonly counts: number[];
  private readonly latencies: number[] = [];
  private readonly random = seeded(0);

  /** `edges`: the manifest's `behaviour.score_edges`, or null for a manifest without a
   * profile. `since`: an ISO time, or milliseconds since the epoch. */
  constructor(edges: readonly number[] | null, since: string | number) {
    this.edges = edges === null ? null : [...edges];
    this.since = typeof since === "number" ? formatTime(since) : since;
    this.counts = edges === null ? [] : new Array<number>(edges.length + 1).fill(0);
  }

  /** One call: its rows' labels and scores (a missing score counts as NaN), how long it
   * took and the provider that ran it. */
  observe(labels: ArrayLike<number | bigint>, scores: ArrayLike<number>, ms: number, provider: string): void {
    this.calls += 1;
    this.rows += labels.length;
    for (let i = 0; i < labels.length; i++) {
      if (Number(labels[i]) === -1) this.anomalies += 1;
      if (this.edges !== null) {
        const s = i < scores.length ? Number(scores[i]) : Number.NaN;
        this.counts[binOf(this.edges, s)]! += 1;
      }
    }
    const took = Number.isFinite(ms) && ms > 0 ? ms : 0;
    if (this.latencies.length < LATENCY_SAMPLES) {
      this.latencies.push(took);
    } else {
      // reservoir: every call kept with the same chance
      const j = Math.floor(this.random() * this.calls);
      if (j < LATENCY_SAMPLES) this.latencies[j] = took;
    }
    this.provider = provider;
  }

  /** The `data` of this window's `behaviour` report. */
  report(): BehaviourData {
    const ordered = [...this.latencies].sort((a, b) => a - b);
    return {
      since: this.since,
      rows: this.rows,
      anomalies: this.anomalies,
      calls: this.calls,
      histogram: this.edges === null ? [] : [...this.counts],
      latency_ms: { p50: round4(nearestRank(ordered, 0.5)), p95: round4(nearestRank(ordered, 0.95)) },
      provider: this.provider,
    };
  }
}

const PROVIDER = /^[A-Za-z0-9._-]{1,64}$/;
const SINCE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** What the service would refuse in a report's data (sync_service/behaviour.py
 * BehaviourData, apart from the bin count, which only the manifest knows), or null. A
 * refused batch would stay queued, so the client checks before it queues. */
export function behaviourProblem(data: BehaviourData): string | null {
  const keys = Object.keys(data).sort().join(",");
  if (keys !== "anomalies,calls,histogram,latency_ms,provider,rows,since") return `fields ${keys}`;
  const count = (v: unknown, min: number): boolean =>
    typeof v === "number" && Number.isInteger(v) && v >= min && v <= 1e9;
  if (typeof data.since !== "string" || !SINCE.test(data.since)) return `since ${JSON.stringify(data.since)}`;
  if (!count(data.rows, 1)) return `rows ${data.rows}`;
  if (!count(data.calls, 1)) return `calls ${data.calls}`;
  if (!count(data.anomalies, 0) || data.anomalies > data.rows) return `anomalies ${data.anomalies} of ${data.rows} rows`;
  if (!Array.isArray(data.histogram) || data.histogram.length > MAX_BINS || !data.histogram.every((c) => count(c, 0))) {
    return `histogram: at most ${MAX_BINS} counts`;
  }
  if (data.histogram.length > 0 && data.histogram.reduce((a, b) => a + b, 0) !== data.rows) {
    return `the histogram counts ${data.histogram.reduce((a, b) => a + b, 0)} rows, the report ${data.rows}`;
  }
  const l = data.latency_ms as BehaviourLatency | undefined;
  const ms = (v: unknown): boolean => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 600_000;
  if (l === undefined || l === null || Object.keys(l).sort().join(",") !== "p50,p95" || !ms(l.p50) || !ms(l.p95)) {
    return "latency_ms: {p50, p95} in 0..600000";
  }
  if (l.p50 > l.p95) return "latency p50 is above p95";
  if (typeof data.provider !== "string" || !PROVIDER.test(data.provider)) return `provider ${JSON.stringify(data.provider)}`;
  return null;
}
