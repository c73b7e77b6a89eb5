/**
 * Shadow runs, the pure part (docs/behaviour.md "Shadow runs"): a held shadow candidate
 * scores the same rows as the active model, and an **agreement window** per
 * (model, candidate version, active version) sums what the two did: rows, rows where both
 * gave the same label, each side's anomalies, and Spearman's rank correlation over the
 * window's first RANK_PAIRS_MAX pairs of scores. One window becomes one `shadow` report
 * (ShadowData) when it reaches `report_after.rows` rows, when `report_after.hours` have
 * passed since its first row, or when the shadow is dropped. No I/O here: the client keeps
 * the windows (client.ts observeShadow) and the held files (held.ts).
 * tests/vectors/shadow.json holds the cases both clients run.
 */
import { roundHalfEven } from "./behaviour";
import { formatTime } from "./documents";
import type { ReportAfter } from "./schema";

/** The score pairs a window keeps for its rank correlation (the service's cap too). */
export const RANK_PAIRS_MAX = 2000;

/** The `data` of a `shadow` report (docs/protocol.md): exactly these fields. */
export interface ShadowData {
  /** ISO-8601 UTC time of the window's first row; the event's `at` is its end. */
  since: string;
  /** The version the candidate ran beside (lower than the candidate). */
  active_version: number;
  rows: number;
  /** Rows where both models gave the same label. */
  agree: number;
  active_anomalies: number;
  shadow_anomalies: number;
  /** Score pairs the correlation is over: the window's first ones, at most RANK_PAIRS_MAX. */
  rank_pairs: number;
  /** Spearman's rank correlation, rounded to 6 decimals; null with fewer than two pairs or
   * when either side's scores are all equal. */
  rank_correlation: number | null;
}

/** Each value's rank among `values`, 1-based, ties taking the mean of the ranks they span
 * (1 + the count of smaller values + (the count of equal ones - 1) / 2). */
export function meanRanks(values: readonly number[]): number[] {
  const order = values.map((_, i) => i).sort((a, b) => values[a]! - values[b]!);
  const ranks = new Array<number>(values.length);
  for (let i = 0; i < order.length; ) {
    let j = i + 1;
    while (j < order.length && values[order[j]!] === values[order[i]!]) j++;
    const rank = i + 1 + (j - i - 1) / 2; // ranks i+1 .. j, by their mean
    for (let k = i; k < j; k++) ranks[order[k]!] = rank;
    i = j;
  }
  return ranks;
}

/** Spearman's rank correlation of paired scores: the Pearson correlation of their mean
 * ranks, rounded to 6 decimals as Python's round(x, 6); null with fewer than two pairs or
 * when either side is constant. Summed in pair order, as the Python device's. */
export function spearman(active: readonly number[], shadow: readonly number[]): number | null {
  if (active.length !== shadow.length) throw new RangeError(`spearman: ${active.length} vs ${shadow.length} scores`);
  const n = active.length;
  if (n < 2) return null;
  const a = meanRanks(active);
  const b = meanRanks(shadow);
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < n; i++) {
    sa += a[i]!;
    sb += b[i]!;
  }
  const ma = sa / n;
  const mb = sb / n;
  let va = 0;
  let vb = 0;
  let cov = 0;
  // Ranks are half-integers: every sum and product here is exact, as in Python.
  for (let i = 0; i < n; i++) va += (a[i]! - ma) * (a[i]! - ma);
  for (let i = 0; i < n; i++) vb += (b[i]! - mb) * (b[i]! - mb);
  if (va === 0 || vb === 0) return null;
  for (let i = 0; i < n; i++) cov += (a[i]! - ma) * (b[i]! - mb);
  const r = roundHalfEven(cov / Math.sqrt(va * vb), 6);
  return Math.max(-1, Math.min(1, r)); // rounding error never takes it past ±1
}

/** An agreement window as it is saved across restarts (client.ts). */
export interface SavedWindow {
  model: string;
  candidate: number;
  active_version: number;
  since_ms: number;
  rows: number;
  agree: number;
  active_anomalies: number;
  shadow_anomalies: number;
  /** [active score, shadow score] of the window's first rows. */
  pairs: [number, number][];
}

type Labels = ArrayLike<number | bigint>;
type Scores = ArrayLike<number>;

/** One (model, candidate, active version) window: observe() every call both models
 * scored, report() when it is due (due()). */
export class AgreementWindow {
  readonly model: string;
  readonly candidate: number;
  readonly activeVersion: number;
  /** Milliseconds since the epoch of the window's first row. */
  readonly sinceMs: number;
  rows = 0;
  agree = 0;
  activeAnomalies = 0;
  shadowAnomalies = 0;
  private readonly activeScores: number[] = [];
  private readonly shadowScores: number[] = [];

  constructor(model: string, candidate: number, activeVersion: number, sinceMs: number) {
    this.model = model;
    this.candidate = candidate;
    this.activeVersion = activeVersion;
    this.sinceMs = sinceMs;
  }

  get key(): string {
    return windowKey(this.model, this.candidate, this.activeVersion);
  }

  get rankPairs(): number {
    return this.activeScores.length;
  }

  /** One call: the same rows' labels and scores from the active model and the candidate
   * (a missing score is NaN). A pair with a NaN score is not kept for the correlation: no
   * rank orders NaN. */
  observe(activeLabels: Labels, activeScores: Scores, shadowLabels: Labels, shadowScores: Scores): void {
    const n = activeLabels.length;
    if (shadowLabels.length !== n) {
      throw new RangeError(`shadow window: the active model labelled ${n} rows, the candidate ${shadowLabels.length}`);
    }
    for (let i = 0; i < n; i++) {
      const al = Number(activeLabels[i]);
      const sl = Number(shadowLabels[i]);
      this.rows += 1;
      if (al === sl) this.agree += 1;
      if (al === -1) this.activeAnomalies += 1;
      if (sl === -1) this.shadowAnomalies += 1;
      const as = i < activeScores.length ? Number(activeScores[i]) : Number.NaN;
      const ss = i < shadowScores.length ? Number(shadowScores[i]) : Number.NaN;
      if (this.activeScores.length < RANK_PAIRS_MAX && !Number.isNaN(as) && !Number.isNaN(ss)) {
        this.activeScores.push(as);
        this.shadowScores.push(ss);
      }
    }
  }

  /** Rows [active_score, active_label, shadow_score, shadow_label] (the vectors' form). */
  observeRows(rows: readonly (readonly [number, number, number, number] | readonly number[])[]): void {
    this.observe(
      rows.map((r) => r[1]!),
      rows.map((r) => r[0]!),
      rows.map((r) => r[3]!),
      rows.map((r) => r[2]!),
    );
  }

  /** Reached `report_after`: its rows, or its hours since the first row (at `nowMs`). */
  due(after: ReportAfter, nowMs: number): boolean {
    if (this.rows === 0) return false;
    return this.rows >= after.rows || nowMs - this.sinceMs >= after.hours * 3_600_000;
  }

  /** The `data` of this window's `shadow` report. */
  report(): ShadowData {
    return {
      since: formatTime(this.sinceMs),
      active_version: this.activeVersion,
      rows: this.rows,
      agree: this.agree,
      active_anomalies: this.activeAnomalies,
      shadow_anomalies: this.shadowAnomalies,
      rank_pairs: this.rankPairs,
      rank_correlation: spearman(this.activeScores, this.shadowScores),
    };
  }

  toJSON(): SavedWindow {
    return {
      model: this.model,
      candidate: this.candidate,
      active_version: this.activeVersion,
      since_ms: this.sinceMs,
      rows: this.rows,
      agree: this.agree,
      active_anomalies: this.activeAnomalies,
      shadow_anomalies: this.shadowAnomalies,
      pairs: this.activeScores.map((a, i) => [a, this.shadowScores[i]!]),
    };
  }

  /** A saved window, or null when it does not hold together (a torn or foreign file). */
  static fromJSON(raw: unknown): AgreementWindow | null {
    if (typeof raw !== "object" || raw === null) return null;
    const s = raw as Partial<SavedWindow>;
    const count = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;
    if (typeof s.model !== "string" || !count(s.candidate) || !count(s.active_version)) return null;
    if (typeof s.since_ms !== "number" || !Number.isFinite(s.since_ms)) return null;
    if (![s.rows, s.agree, s.active_anomalies, s.shadow_anomalies].every(count)) return null;
    if (!Array.isArray(s.pairs) || s.pairs.length > RANK_PAIRS_MAX) return null;
    const w = new AgreementWindow(s.model, s.candidate, s.active_version, s.since_ms);
    w.rows = s.rows!;
    w.agree = s.agree!;
    w.activeAnomalies = s.active_anomalies!;
    w.shadowAnomalies = s.shadow_anomalies!;
    for (const p of s.pairs) {
      if (!Array.isArray(p) || typeof p[0] !== "number" || typeof p[1] !== "number") return null;
      w.activeScores.push(p[0]);
      w.shadowScores.push(p[1]);
    }
    if (w.agree > w.rows || w.activeAnomalies > w.rows || w.shadowAnomalies > w.rows || w.rankPairs > w.rows) return null;
    return w;
  }
}

export function windowKey(model: string, candidate: number, activeVersion: number): string {
  return `${model}@${candidate}/${activeVersion}`;
}

const SINCE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** What the service would refuse in a `shadow` report for candidate `version`
 * (sync_service/shadow.py ShadowData and its version check), or null. */
export function shadowProblem(version: number, data: ShadowData): string | null {
  const keys = Object.keys(data).sort().join(",");
  if (keys !== "active_anomalies,active_version,agree,rank_correlation,rank_pairs,rows,shadow_anomalies,since") {
    return `fields ${keys}`;
  }
  const count = (v: unknown, min: number): boolean =>
    typeof v === "number" && Number.isInteger(v) && v >= min && v <= 1e9;
  if (typeof data.since !== "string" || !SINCE.test(data.since)) return `since ${JSON.stringify(data.since)}`;
  if (!count(data.rows, 1)) return `rows ${data.rows}`;
  for (const k of ["agree", "active_anomalies", "shadow_anomalies", "rank_pairs"] as const) {
    if (!count(data[k], 0) || data[k] > data.rows) return `${k} ${data[k]} of ${data.rows} rows`;
  }
  if (data.rank_pairs > RANK_PAIRS_MAX) return `rank_pairs ${data.rank_pairs} above ${RANK_PAIRS_MAX}`;
  const r = data.rank_correlation;
  if (r !== null && !(typeof r === "number" && r >= -1 && r <= 1)) return `rank_correlation ${r}`;
  if (!count(data.active_version, 1) || data.active_version >= version) {
    return `active_version ${data.active_version}: not below the candidate v${version}`;
  }
  return null;
}
