/**
 * ModelSyncClient: the device's whole update cycle (docs/device.md), platform-neutral.
 * Every platform dependency comes in through ports.ts: storage, network state, fetch and
 * an inference runner for the golden-vector check. Check numbers in comments are the
 * doc's, the same as device_sim's.
 */
import { type BehaviourData, behaviourProblem, roundHalfEven } from "./behaviour";
import { formatTime } from "./documents";
import {
  ArtifactLoadError,
  DownloadError,
  FormatError,
  GoldenVectorError,
  HashMismatchError,
  LengthMismatchError,
  MixAndMatchError,
  ModelSyncError,
  StaleIndexError,
  StoreError,
  VerificationError,
  isPermanent,
} from "./errors";
import { type HeldRecord, HeldShadows } from "./held";
import { type PlannedModel, planPack } from "./pack";
import type { HttpFetch, InferenceRunner, NetworkMonitor, NetworkStatus, Storage } from "./ports";
import { executionProviders, fixedBatch } from "./providers";
import { type RefusedReports, ReportQueue } from "./reports";
import { pickShadow } from "./rollout";
import {
  type Artifact,
  type ChannelIndex,
  type IndexEntry,
  type ModelManifest,
  type ReportAfter,
  type Root,
  type ShadowEntry,
  type Target,
  parseEnvelope,
  validateManifest,
} from "./schema";
import { AgreementWindow, type SavedWindow, type ShadowData, shadowProblem, windowKey } from "./shadow";
import { type Activation, type StagedModel, Staging } from "./staging";
import { type DeviceIdentity, type Installed, State, indexVersionOf } from "./state";
import {
  Damaged,
  Deadline,
  type Endpoint,
  damagedBy,
  downloadToPart,
  failure,
  getCapped,
  readAll,
  request,
} from "./transfer";
import {
  PLATFORM_TARGETS,
  checkArtifact,
  checkGolden,
  checkIndex,
  checkManifest,
  checkManifestBytes,
  finalRoot,
  indexRoleChanged,
  nextRoot,
  parseJson,
  roleChanged,
  selectArtifact,
  trustedRoot,
  wantedEntries,
} from "./trust";

export type { RefusedReports } from "./reports";
export type { RefusedReport } from "./state";

export type Platform = "android" | "ios" | "linux";

/** A model shipped inside the app: the last fallback when nothing is installed. */
export interface EmbeddedModel {
  name: string;
  version: number;
  /** Absolute path of the .ort file on the device (copied out of the app bundle). */
  path: string;
  providers?: string[];
}

export interface ClientOptions {
  server: string;
  channel: string;
  deviceId: string;
  platform: Platform;
  /** onnxruntime version of the app's runtime (check 3.7), e.g. "1.24.3". */
  ortVersion: string;
  appVersion?: string;
  storage: Storage;
  fetch: HttpFetch;
  network: NetworkMonitor;
  runner: InferenceRunner;
  /** The root envelope shipped with the app (check 1.1). */
  shippedRoot: unknown;
  embedded?: EmbeddedModel[];
  /** Execution providers this runtime build has, e.g. ["nnapi", "cpu"]; default: all. */
  availableProviders?: string[];
  /** On a metered link, artifacts above this wait for Wi-Fi unless urgent (C.1). Default 0. */
  meteredMaxBytes?: number;
  /** Installed models plus a new artifact must fit (C.2). Default: no limit. */
  storageBudgetBytes?: number;
  /** Ask for zstd transfer of artifacts (decoded in pure JS). Default true. */
  compression?: boolean;
  /** A sync that has not finished by then stops with SlowRetrievalError. Default 10 min. */
  deadlineMs?: number;
  /** "immediate" (default): a verified version is served at once. "next-start": it is
   * staged and becomes current when the next client over this state directory starts
   * (staging.ts). */
  activation?: Activation;
  /** The expected-band check (observeBand): a version whose manifest sets
   * `behaviour.expected_band` is judged on the first this-many rows scored with it after it
   * became current on this device, and falls back when its anomaly rate leaves the band.
   * Counted in memory: a new client (an app restart) counts again. Default 1000; 0 turns
   * the check off. */
  bandCheckRows?: number;
  now?: () => number;
}

/** The default of ClientOptions.bandCheckRows, the Python device's too. */
export const BAND_CHECK_ROWS = 1000;

/** The `reason` of the `install_failed` report a version that left its expected band gets. */
export const BEHAVIOUR_OUT_OF_BAND = "behaviour_out_of_band";

/** What observeBand() made of a version's rows so far. */
export interface BandVerdict {
  model: string;
  version: number;
  /** "off": not judged (the check is off, the manifest sets no band, the version is not
   * the installed current one, or its manifest is unreadable). "counting": fewer than
   * bandCheckRows rows yet. "passed": judged inside the band, never judged again.
   * "fell_back": judged outside it; the version is failed for good and no longer served. */
  outcome: "off" | "counting" | "passed" | "fell_back";
  /** Rows and anomalies counted for the version: at the judgement, the ones judged. */
  rows: number;
  anomalies: number;
  expectedBand: [number, number] | null;
  /** anomalies / rows, once judged, rounded to 6 decimals as the Python device reports it. */
  anomalyRate?: number;
  /** After "fell_back": the model served now (currentModel), null when there is none. */
  serving?: ActiveModel | null;
}

/** One version's count since it became current (in memory). */
interface BandCount {
  rows: number;
  anomalies: number;
  /** The manifest's band, null when the version is not judged. */
  band: Promise<[number, number] | null>;
  /** Set once it is judged (or known not to be): every later call gets this. */
  verdict: Promise<BandVerdict> | null;
}

export type SyncOutcome = "updated" | "staged" | "up_to_date" | "stale" | "deferred" | "offline" | "failed";

export interface ModelResult {
  model: string;
  version: number;
  outcome: "installed" | "staged" | "deferred" | "failed";
  /** Deferred: "metered" | "storage_budget". Failed: the error's code. */
  reason?: string;
  error?: ModelSyncError;
  /** Failed as a transfer (reported as transfer_failed), not as a verified model. */
  transport?: boolean;
  /** "held": installed from the held shadow candidate's files (check 2.7), nothing
   * downloaded; absent for a download. */
  transfer?: "held";
}

/** What check 2.7 did for one model's shadow candidate in a sync (nothing is listed for a
 * candidate held already and still chosen). */
export interface ShadowResult {
  model: string;
  version: number;
  /** "held": downloaded, verified like an install and held beside the active model.
   * "dropped": no longer chosen (halted, superseded, promoted, or no longer above what the
   * device runs); its pending agreement windows were queued as `shadow` reports first.
   * "deferred", "failed": as an install's. */
  outcome: "held" | "dropped" | "deferred" | "failed";
  reason?: string;
  error?: ModelSyncError;
  transport?: boolean;
}

/** The shadow candidate a device holds for a model (check 2.7): run it beside the active
 * model on the same rows (observeShadow), never serve its outputs. */
export interface HeldShadow {
  name: string;
  version: number;
  /** sha256 of its signed manifest, as the index entry names it. */
  manifestSha256: string;
  /** Absolute path of the .ort file. */
  path: string;
  providers: string[];
  fixedBatch: number | null;
  reportAfter: ReportAfter;
}

export interface SyncResult {
  outcome: SyncOutcome;
  indexVersion: number | null;
  /** The server answered 304 to If-None-Match. */
  notModified: boolean;
  models: ModelResult[];
  /** Check 2.7's shadow candidates: held, dropped, deferred or failed in this sync. They
   * never change `outcome`, which is about the models the app is served. */
  shadows: ShadowResult[];
  /** What stopped the sync before any model (root, index, network). */
  error?: ModelSyncError;
  reportsSent: number;
}

export type SyncPhase = "root" | "index" | "manifest" | "download" | "verify" | "activate" | "reports" | "done";

export interface ProgressEvent {
  phase: SyncPhase;
  model?: string;
  version?: number;
  /** The event is about a shadow candidate being fetched to be held (check 2.7). */
  shadow?: boolean;
  received?: number;
  total?: number;
}

/** What installFromPack() did: the pack's snapshot and, per model its own rules picked from
 * it, the outcome (as a sync's). A refused pack throws instead, with nothing changed. */
export interface PackInstallResult {
  outcome: "updated" | "staged" | "up_to_date" | "failed";
  packId: string;
  /** The channel-index version the pack's snapshot carries: now the pack floor. */
  indexVersion: number;
  validFrom: string;
  expires: string;
  /** The device's root version after the pack's roots. */
  rootVersion: number;
  models: ModelResult[];
}

/** What start() did with a version a previous run staged. */
export interface StagedActivation {
  model: string;
  version: number;
  outcome: "activated" | "refused";
  error?: ModelSyncError;
}

export interface ActiveModel {
  name: string;
  version: number;
  /** Absolute path of the .ort file. */
  path: string;
  providers: string[];
  fixedBatch: number | null;
  source: "installed" | "previous" | "embedded";
}

// Roots, indexes and manifests are small; anything larger is refused (the Python device's
// caps; MAX_MANIFEST_BYTES is packager.manifest's, which a packager never exceeds).
const MAX_ROOT_BYTES = 1 << 20;
const MAX_INDEX_BYTES = 8 << 20;
export const MAX_MANIFEST_BYTES = 1 << 20;
// A model's bytes that arrived damaged or cut are fetched once more (from byte 0 after a
// mismatch) before the failure is reported as transfer_failed (device_sim's TRANSFER_ATTEMPTS).
const TRANSFER_ATTEMPTS = 2;

const REPORT_DEADLINE_MS = 60_000;

/** An agreement window changed by observeShadow() is written to disk at most this often
 * (and at every sync, and whenever one is reported): a restart loses at most these last
 * rows of a window, never reports one twice. */
export const SHADOW_SAVE_INTERVAL_MS = 30_000;

/** What install() made of an entry. */
type Done = { outcome: "installed" | "staged" | "held"; transfer?: "held" } | { outcome: "deferred"; reason: string };

/** One model's agreement windows in memory, as loaded from shadow/<name>/windows.json. */
interface ModelWindows {
  windows: Map<string, AgreementWindow>;
  savedAt: number;
  dirty: boolean;
}

export class ModelSyncClient {
  private readonly state: State;
  private readonly reports: ReportQueue;
  private readonly now: () => number;
  private readonly listeners = new Set<(e: ProgressEvent) => void>();
  private running: Promise<SyncResult> | null = null;
  private readonly staging: Staging;
  private starting: Promise<StagedActivation[]> | null = null;
  // A sync and a pack install never run at once: both read and write the same state.
  private queue: Promise<unknown> = Promise.resolve();
  // The expected-band check's counts, per "<model>@<version>" (observeBand).
  private readonly bands = new Map<string, BandCount>();
  private readonly held: HeldShadows;
  // Agreement windows per model, and held records read once: observeShadow() runs per
  // scoring call. Every change to either goes through shadowLock, so a sync dropping a
  // candidate and a call scoring with it never interleave (scoring never waits for a
  // download: the sync takes the lock only to commit or drop).
  private readonly shadowWindowsByModel = new Map<string, ModelWindows>();
  private readonly heldRecords = new Map<string, HeldRecord | null>();
  private shadowLock: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: ClientOptions) {
    this.state = new State(opts.storage);
    this.now = opts.now ?? (() => Date.now());
    this.reports = new ReportQueue(this.state, this.now);
    this.staging = new Staging(this.state);
    this.held = new HeldShadows(this.state);
  }

  /** The cold start: activates what a previous run staged (activation "next-start"), once
   * per client. currentModel() and sync() wait for it, so the first model served is the
   * activated one. */
  start(): Promise<StagedActivation[]> {
    this.starting ??= this.activateStaged();
    return this.starting;
  }

  private async activateStaged(): Promise<StagedActivation[]> {
    const out: StagedActivation[] = [];
    for (const [name, rec] of Object.entries(await this.staging.all())) {
      const base = { model: name, version: rec.version };
      try {
        const done = await this.staging.activate(name, this.opts.shippedRoot, this.target, this.opts.ortVersion, formatTime(this.now()));
        if (done === null) continue;
        this.emit({ phase: "activate", ...base });
        const id = await this.state.identity();
        // the service has no "staged" kind: the install is reported when it takes effect
        await this.reports.enqueue(id?.device_id ?? this.opts.deviceId, "installed", {
          ...base,
          data: { ...done.report_data, providers: done.providers, activation: "next-start" },
        });
        out.push({ ...base, outcome: "activated" });
      } catch (err) {
        if (!(err instanceof ModelSyncError)) throw err;
        // A staged file changed on disk is this device's problem, not the release's: no
        // failure report, and the next sync fetches the release again.
        out.push({ ...base, outcome: "refused", error: err });
      }
    }
    return out;
  }

  /** The version waiting for the next start, or null. */
  async stagedModel(name?: string): Promise<StagedModel | null> {
    await this.start();
    const all = await this.staging.all();
    const rec = name === undefined ? Object.values(all)[0] : all[name];
    return rec === undefined ? null : { name: rec.name, version: rec.version };
  }

  get target(): Target {
    return PLATFORM_TARGETS[this.opts.platform]!;
  }

  onProgress(listener: (e: ProgressEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ProgressEvent): void {
    for (const l of this.listeners) l(e);
  }

  async identity(): Promise<DeviceIdentity | null> {
    return this.state.identity();
  }

  /** POST /v1/devices/register with an enrollment token; saves the device token. */
  async register(enrollmentToken: string): Promise<DeviceIdentity> {
    const ep: Endpoint = { server: this.opts.server, token: enrollmentToken, fetch: this.opts.fetch };
    const res = await request(
      ep,
      "v1/devices/register",
      { "Content-Type": "application/json" },
      "POST",
      JSON.stringify({
        device_id: this.opts.deviceId,
        platform: this.opts.platform,
        app_version: this.opts.appVersion ?? "",
        ort_version: this.opts.ortVersion,
        providers: this.opts.availableProviders ?? ["cpu"],
      }),
    );
    if (res.status !== 201 && res.status !== 200) throw await failure(res, "register");
    const body = parseJson(new Uint8Array(await res.arrayBuffer()), "register answer") as Record<string, unknown>;
    if (typeof body.device_token !== "string" || typeof body.fleet !== "string") {
      throw new DownloadError("register: answer lacks device_token or fleet");
    }
    const id: DeviceIdentity = {
      device_id: this.opts.deviceId,
      fleet: body.fleet,
      platform: this.opts.platform,
      device_token: body.device_token,
    };
    await this.state.saveIdentity(id);
    return id;
  }

  /** One update cycle. Concurrent calls share the running one. */
  sync(): Promise<SyncResult> {
    if (this.running === null) {
      this.running = this.serial(() => this.runSync()).finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Installed versions, and staged ones: a staged version is had, only a newer release
   * replaces it. Version directories nothing points at any more go first (check 5.3 after
   * a crash). */
  private async haveVersions(): Promise<Record<string, number>> {
    const pointers = await this.state.installedModels();
    for (const name of Object.keys(pointers)) await this.state.cleanUp(name);
    const installed: Record<string, number> = {};
    for (const [name, p] of Object.entries(pointers)) installed[name] = p.current.version;
    for (const [name, rec] of Object.entries(await this.staging.all())) {
      installed[name] = Math.max(installed[name] ?? 0, rec.version);
    }
    return installed;
  }

  private async runSync(): Promise<SyncResult> {
    const id = await this.state.identity();
    if (id === null) throw new StoreError("not registered: call register(enrollmentToken) first");
    await this.start();
    const deadline = new Deadline(this.opts.deadlineMs ?? 10 * 60_000);
    const ep: Endpoint = { server: this.opts.server, token: id.device_token, fetch: this.opts.fetch, deadline };
    const result: SyncResult = {
      outcome: "up_to_date",
      indexVersion: null,
      notModified: false,
      models: [],
      shadows: [],
      reportsSent: 0,
    };
    const net = await this.opts.network.current();
    if (!net.connected) {
      deadline.clear();
      result.outcome = "offline";
      return result;
    }
    try {
      const root = await this.updateRoot(ep);
      let index: ChannelIndex;
      try {
        index = await this.updateIndex(ep, root, id, result);
      } catch (err) {
        if (!(err instanceof StaleIndexError)) throw err;
        // check 2.5: keep running the installed models, say so once per index version.
        const stale = err.index as ChannelIndex;
        result.outcome = "stale";
        result.indexVersion = stale.version;
        result.error = err;
        const status = await this.state.status();
        if (status.stale_reported_index !== stale.version) {
          await this.reports.enqueue(id.device_id, "stale_index", { reason: "stale_index" });
          await this.state.saveStatus({ ...(await this.state.status()), stale_reported_index: stale.version });
        }
        return result;
      }
      result.indexVersion = index.version;
      const installed = await this.haveVersions();
      for (const entry of wantedEntries(index, id.device_id, installed, await this.state.failed())) {
        result.models.push((await this.installEntry(ep, root, entry, id, net)) as ModelResult);
      }
      result.outcome = overallOutcome(result.models);
      result.shadows = await this.syncShadows(ep, root, index, id, net); // check 2.7
    } catch (err) {
      if (!(err instanceof ModelSyncError)) throw err;
      result.outcome = "failed";
      result.error = err;
    } finally {
      deadline.clear();
      // Reports get their own short deadline: a sync that ran out of time still reports.
      const reportDeadline = new Deadline(REPORT_DEADLINE_MS);
      try {
        result.reportsSent = await this.flushReports({ ...ep, deadline: reportDeadline }, id);
      } finally {
        reportDeadline.clear();
      }
      this.emit({ phase: "done" });
    }
    return result;
  }

  /** Send queued reports. A batch that fails (offline, auth, 5xx) stays queued for the next
   * sync; events the service refuses on their own (422, 413) are dropped and counted
   * (refusedReports()), so that they cannot hold back the others. */
  private async flushReports(ep: Endpoint, id: DeviceIdentity): Promise<number> {
    this.emit({ phase: "reports" });
    try {
      return await this.reports.flush(ep, id.device_id);
    } catch (err) {
      if (err instanceof DownloadError) return 0;
      throw err;
    }
  }

  pendingReports(): Promise<string[]> {
    return this.reports.pending();
  }

  /** How many queued report events the service refused (422 invalid, 413 too large) and
   * that were dropped for good, and the last one's kind, status and the service's detail. */
  refusedReports(): Promise<RefusedReports> {
    return this.reports.refused();
  }

  /** Queue a `behaviour` report for one model version (a BehaviourWindow's report(), see
   * behaviour.ts); it is sent with the next sync, its `at` the window's end. The service
   * takes it only for a version this device reported installing (the embedded model is
   * not one) and with its manifest's bin count. Data the service would refuse in any case
   * throws RangeError here, so that it never blocks the queue. */
  async reportBehaviour(model: string, version: number, data: BehaviourData): Promise<void> {
    const problem = behaviourProblem(data);
    if (problem !== null) throw new RangeError(`behaviour report for ${model} v${version}: ${problem}`);
    const id = await this.state.identity();
    await this.reports.enqueue(id?.device_id ?? this.opts.deviceId, "behaviour", { model, version, data: { ...data } });
  }

  // ------------------------------------------------------------------------- expected band

  /**
   * The expected-band check (the Python device's, docs/behaviour.md): count `rows` scored by
   * `model` v`version` in one run() call, `anomalies` of them labelled -1. The hook calls it
   * after every call; an app that scores outside the hook may too.
   *
   * Only a version whose signed manifest sets `behaviour.expected_band` [lo, hi] is judged,
   * only while it is the installed current version, and only once: when its rows counted
   * since it became current (in this client, in memory: a restart counts again) reach
   * `bandCheckRows`, over all of them (the last call's rows included), rate =
   * anomalies / rows (reported rounded to 6 decimals, as the Python device does). Inside the band it passes and is never judged again. Outside, the
   * client falls back: an `install_failed` report with reason `behaviour_out_of_band` and
   * data {rows, anomalies, anomaly_rate, expected_band} is queued, the version is marked
   * failed (failed.json: never installed again) and leaves the pointer, so the previous
   * installed version is current again, or, with none, the model embedded in the app
   * serves. The fallback waits for a running sync or pack install (they share the state).
   * The version's behaviour window is reported as usual by whoever keeps it.
   */
  observeBand(model: string, version: number, rows: number, anomalies: number): Promise<BandVerdict> {
    const limit = this.opts.bandCheckRows ?? BAND_CHECK_ROWS;
    const off = (counted: { rows: number; anomalies: number }): BandVerdict => ({
      model,
      version,
      outcome: "off",
      ...counted,
      expectedBand: null,
    });
    const whole = (n: number): boolean => Number.isInteger(n) && n >= 0;
    if (!whole(rows) || !whole(anomalies) || anomalies > rows) {
      return Promise.reject(new RangeError(`observeBand ${model} v${version}: ${anomalies} anomalies of ${rows} rows`));
    }
    if (!(limit > 0)) return Promise.resolve(off({ rows, anomalies }));
    const key = `${model}@${version}`;
    let count = this.bands.get(key);
    if (count === undefined) {
      const created: BandCount = { rows: 0, anomalies: 0, band: this.bandOf(model, version), verdict: null };
      created.band.then(
        (band) => {
          if (band === null && created.verdict === null) {
            created.verdict = Promise.resolve(off({ rows: created.rows, anomalies: created.anomalies }));
          }
        },
        () => undefined, // the caller of this call sees the rejection
      );
      this.bands.set(key, created);
      count = created;
    }
    if (count.verdict !== null) return count.verdict;
    count.rows += rows;
    count.anomalies += anomalies;
    const counted = { rows: count.rows, anomalies: count.anomalies };
    const band = count.band;
    if (counted.rows < limit) {
      return band.then((b) => (b === null ? off(counted) : { model, version, outcome: "counting", ...counted, expectedBand: b }));
    }
    // the call that reaches the limit: judged on exactly the rows counted so far
    count.verdict = band.then((b) => (b === null ? off(counted) : this.judgeBand(model, version, counted, b)));
    return count.verdict;
  }

  /** The band a version is judged against: its manifest's, while it is the installed
   * current version; otherwise (previous, embedded, not installed, unreadable) null. */
  private async bandOf(model: string, version: number): Promise<[number, number] | null> {
    await this.start();
    try {
      const p = await this.state.pointer(model);
      if (p === null || p.current.version !== version) return null;
      const band = (await this.installedManifest(model, version))?.behaviour?.expected_band ?? null;
      return band === null ? null : [band[0], band[1]];
    } catch (err) {
      if (err instanceof ModelSyncError) return null;
      throw err;
    }
  }

  private async judgeBand(
    model: string,
    version: number,
    counted: { rows: number; anomalies: number },
    band: [number, number],
  ): Promise<BandVerdict> {
    const [lo, hi] = band;
    // as the Python device: judged on the exact rate, reported as round(rate, 6)
    const exact = counted.anomalies / counted.rows;
    const rate = roundHalfEven(exact, 6);
    const verdict: BandVerdict = { model, version, outcome: "passed", ...counted, expectedBand: band, anomalyRate: rate };
    if (exact >= lo && exact <= hi) return verdict;
    return this.serial(async () => {
      const id = await this.state.identity();
      // Reported first: a crash before the fallback judges the version again after the
      // restart (a second report of the same device counts once), never loses the report.
      await this.reports.enqueue(id?.device_id ?? this.opts.deviceId, "install_failed", {
        model,
        version,
        reason: BEHAVIOUR_OUT_OF_BAND,
        data: { rows: counted.rows, anomalies: counted.anomalies, anomaly_rate: rate, expected_band: [lo, hi] },
      });
      await this.state.markFailed(model, version); // never installed again
      await this.state.dropVersion(model, version); // the previous is current again
      return { ...verdict, outcome: "fell_back", serving: await this.currentModel(model) };
    });
  }

  /** Queue an `inference_stats` event; it is sent with the next sync.
   * @deprecated The hook reports `behaviour` (reportBehaviour) instead; the service still
   * accepts `inference_stats` from older apps, but nothing judges a release by it. */
  async reportInferenceStats(model: string, version: number, data: Record<string, unknown>): Promise<void> {
    const id = await this.state.identity();
    await this.reports.enqueue(id?.device_id ?? this.opts.deviceId, "inference_stats", { model, version, data });
  }

  /** The manifest of a version this device installed and still keeps (current or
   * previous), as verified when it was installed; null for any other version, the
   * embedded model's included. Its `behaviour` holds the bins a behaviour report counts
   * scores into (null: a manifest without a profile). Unreadable: StoreError. */
  async installedManifest(name: string, version: number): Promise<ModelManifest | null> {
    const p = await this.state.pointer(name);
    const inst = [p?.current, p?.previous].find((i) => i?.version === version);
    if (inst === undefined || inst === null) return null;
    const data = await this.opts.storage.read(inst.manifest_path);
    if (data === null) throw new StoreError(`${inst.manifest_path} is missing`);
    let manifest: ModelManifest;
    try {
      manifest = validateManifest(parseEnvelope(parseJson(data, inst.manifest_path)).signed);
    } catch (err) {
      if (!(err instanceof ModelSyncError)) throw err;
      throw new StoreError(`${inst.manifest_path} is unreadable: ${err.message}`);
    }
    if (manifest.name !== name || manifest.version !== version) {
      throw new StoreError(`${inst.manifest_path} is ${manifest.name} v${manifest.version}, not ${name} v${version}`);
    }
    return manifest;
  }

  // ------------------------------------------------------------------------- 1. root

  private async updateRoot(ep: Endpoint): Promise<Root> {
    this.emit({ phase: "root" });
    const saved = await this.state.savedRoot();
    let root = trustedRoot(saved ?? this.opts.shippedRoot); // check 1.1
    if (saved === null) await this.state.saveRoot(this.opts.shippedRoot);
    for (let steps = 1; ; steps++) {
      const path = `v1/root/${root.version + 1}.json`;
      const res = await request(ep, path);
      if (res.status === 404) break;
      if (res.status !== 200) throw await failure(res, `GET ${path}`);
      const raw = parseJson(await readAll(res, MAX_ROOT_BYTES, path, ep.deadline), `root v${root.version + 1}`);
      const next = nextRoot(root, raw, steps); // checks 1.2-1.4
      if (indexRoleChanged(root, next)) await this.state.forgetIndex(this.opts.channel); // check 1.5
      // the same for packs: what the old offline keys signed proves nothing any more
      if (roleChanged(root, next, "offline")) await this.state.forgetPackFloor(this.opts.channel);
      await this.state.saveRoot(raw); // check 1.5
      root = next;
    }
    return finalRoot(root, this.now()); // check 1.6
  }

  // ------------------------------------------------------------------------- 2. index

  private async updateIndex(ep: Endpoint, root: Root, id: DeviceIdentity, result: SyncResult): Promise<ChannelIndex> {
    this.emit({ phase: "index" });
    const channel = this.opts.channel;
    const saved = await this.state.savedIndex(channel);
    const savedVersion = saved === null ? null : indexVersionOf(saved.body);
    const headers: Record<string, string> = {};
    if (saved?.etag) headers["If-None-Match"] = saved.etag;
    const path = `v1/channels/${encodeURIComponent(channel)}/index`;
    const res = await request(ep, path, headers);
    let body: Uint8Array;
    if (res.status === 304 && saved !== null) {
      result.notModified = true;
      body = saved.body; // re-checked below, expiry included (check 2.1: from 2.5)
    } else if (res.status === 200) {
      body = await readAll(res, MAX_INDEX_BYTES, path, ep.deadline);
    } else {
      throw await failure(res, `GET ${path}`);
    }
    // check 2.4 against the saved index and any offline pack installed since (P.2.3)
    const trustedVersion = await this.state.trustedIndexVersion(channel);
    const ctx = { fleet: id.fleet, channel, trustedVersion, nowMs: this.now() };
    const index = checkIndex(parseJson(body, "channel index"), root, ctx); // checks 2.1-2.5
    if (!result.notModified && (savedVersion === null || index.version > savedVersion)) {
      await this.state.saveIndex(channel, body, res.headers.get("etag"));
    }
    return index;
  }

  // ------------------------------------------------------------------------- 3-5. one model

  /** One entry of check 2.6, or with `shadow`, the candidate check 2.7 holds: the same
   * checks, retries and failure reports either way. */
  private async installEntry(
    ep: Endpoint,
    root: Root,
    entry: IndexEntry,
    id: DeviceIdentity,
    net: NetworkStatus,
    shadow?: ShadowEntry,
  ): Promise<Omit<ModelResult, "outcome"> & { outcome: ModelResult["outcome"] | "held" }> {
    const base = { model: entry.model, version: entry.version };
    for (let attempt = 1; ; attempt++) {
      try {
        return { ...base, ...(await this.install(ep, root, entry, id, net, shadow)) };
      } catch (caught) {
        const damaged = caught instanceof Damaged;
        const err = caught instanceof Damaged ? caught.failure : caught;
        if (!(err instanceof ModelSyncError)) throw err;
        if (damaged && attempt < TRANSFER_ATTEMPTS) continue; // once more: from byte 0 after a mismatch
        if (damaged) {
          // What anyone on the path can spoil or cut without a key: a transport failure,
          // which the health gate does not count against the model (docs/protocol.md).
          await this.reports.enqueue(id.device_id, "transfer_failed", {
            ...base,
            reason: err.code,
            data: { detail: err.message.slice(0, 500), attempts: TRANSFER_ATTEMPTS },
          });
          return { ...base, outcome: "failed", reason: err.code, error: err, transport: true };
        }
        if (err instanceof VerificationError) {
          const kind = err instanceof GoldenVectorError ? "golden_failed" : "install_failed";
          await this.reports.enqueue(id.device_id, kind, { ...base, reason: err.code });
          if (isPermanent(err)) await this.state.markFailed(entry.model, entry.version);
        }
        return { ...base, outcome: "failed", reason: err.code, error: err };
      }
    }
  }

  /** Installed, staged or (with `shadow`) held, or why it was deferred. */
  private async install(
    ep: Endpoint,
    root: Root,
    entry: IndexEntry,
    id: DeviceIdentity,
    net: NetworkStatus,
    shadow?: ShadowEntry,
  ): Promise<Done> {
    const { model: name, version } = entry;
    const tag = shadow === undefined ? {} : { shadow: true };
    if (shadow === undefined) {
      // check 2.7: the candidate held as a shadow is this entry: its files, no download
      const fromHeld = await this.installHeld(root, entry, id);
      if (fromHeld !== null) return fromHeld;
    }
    this.emit({ phase: "manifest", model: name, version, ...tag });
    const pointer = await this.state.pointer(name);
    if (entry.manifest.length > MAX_MANIFEST_BYTES) {
      throw new FormatError(
        `manifest ${name} v${version} is declared ${entry.manifest.length} bytes, more than the ${MAX_MANIFEST_BYTES} a device reads`,
      );
    }
    const data = await damagedBy(
      getCapped(ep, `v1/${entry.manifest.path}`, entry.manifest.length, "manifest").then((d) => {
        checkManifestBytes(d, entry.manifest); // check 3.1: what the path may spoil
        return d;
      }),
    );
    const manifest = checkManifest(data, root, entry, pointer?.current.version ?? null); // checks 3.1-3.5
    const artifact = selectArtifact(manifest, this.target, this.opts.ortVersion); // checks 3.6, 3.7

    const compression = this.opts.compression ?? true;
    const wire = compression && artifact.compressed !== null ? artifact.compressed.length : artifact.length;
    if (net.metered && !entry.urgent && wire > (this.opts.meteredMaxBytes ?? 0)) return { outcome: "deferred", reason: "metered" }; // C.1
    const budget = this.opts.storageBudgetBytes ?? Number.POSITIVE_INFINITY;
    const used = (await this.state.installedBytes()) + (await this.held.bytes());
    if (used + artifact.length > budget) return { outcome: "deferred", reason: "storage_budget" }; // C.2

    const storage = this.opts.storage;
    const part = `cache/${artifact.sha256}.part`;
    this.emit({ phase: "download", model: name, version, received: 0, total: artifact.length, ...tag });
    await damagedBy(downloadToPart(ep, storage, {
      sha256: artifact.sha256,
      length: artifact.length,
      compressedLength: artifact.compressed?.length ?? null,
      partPath: part,
      useZstd: compression,
      onBytes: (received, total) => this.emit({ phase: "download", model: name, version, received, total, ...tag }),
    })); // check 4.1 while downloading
    this.emit({ phase: "verify", model: name, version, ...tag });
    const bytes = await storage.read(part);
    try {
      checkArtifact(bytes ?? new Uint8Array(0), artifact); // checks 4.1, 4.2
    } catch (err) {
      await storage.remove(part); // a bad blob is not resumed: the retry starts from byte 0
      throw new Damaged(err);
    }

    const putArtifact = (path: string): Promise<void> => storage.rename(part, path);
    if (shadow !== undefined) return { outcome: await this.holdVerified(manifest, data, artifact, putArtifact, shadow) };
    return { outcome: await this.place(manifest, data, artifact, putArtifact, id, {}) };
  }

  /**
   * check 2.7's install from the held shadow candidate: when `entry` names the held version
   * with the held manifest's sha256, checks 3.1-4.4 run again on the held bytes and the
   * version is installed from them (`transfer: "held"`, nothing downloaded); then the held
   * area goes, its pending agreement windows reported first. Null when nothing matching is
   * held, or when the held files no longer are what was verified (this device's disk, not
   * the release: they go, and the entry is downloaded as usual).
   */
  private async installHeld(root: Root, entry: IndexEntry, id: DeviceIdentity): Promise<Done | null> {
    const name = entry.model;
    const rec = await this.heldRecord(name);
    if (rec === null || rec.version !== entry.version || rec.manifest_sha256 !== entry.manifest.sha256) return null;
    const storage = this.opts.storage;
    const base = { model: name, version: entry.version };
    this.emit({ phase: "verify", ...base });
    const data = (await storage.read(this.held.manifestPath(name, rec.version))) ?? new Uint8Array(0);
    const heldArtifact = this.held.artifactPath(name, rec);
    let manifest: ModelManifest;
    let artifact: Artifact;
    try {
      checkManifestBytes(data, entry.manifest); // check 3.1 on the held bytes
      manifest = checkManifest(data, root, entry, (await this.state.pointer(name))?.current.version ?? null); // 3.1-3.5
      artifact = selectArtifact(manifest, this.target, this.opts.ortVersion); // checks 3.6, 3.7
      if (artifact.sha256 !== rec.artifact_sha256) throw new MixAndMatchError("the held artifact is not the manifest's");
      checkArtifact((await storage.read(heldArtifact)) ?? new Uint8Array(0), artifact); // checks 4.1, 4.2
    } catch (err) {
      if (!(err instanceof MixAndMatchError || err instanceof LengthMismatchError || err instanceof HashMismatchError)) {
        throw err;
      }
      await this.dropShadow(name); // changed on disk since it was held
      return null;
    }
    const done = await this.place(
      manifest,
      data,
      artifact,
      (path) => storage.rename(heldArtifact, path),
      id,
      { target: artifact.target, transfer: "held", wire_bytes: 0 },
    ); // checks 4.3-5.4
    await this.dropShadow(name); // its windows reported, the held area cleared
    return { outcome: done, transfer: "held" };
  }

  /**
   * checks 4.3-5.4 for a verified artifact, from the network or a pack: its version
   * directory beside the current one, the golden vectors, then the swap (or staging under
   * activation "next-start") and the `installed` report with `reportData`. `putArtifact`
   * writes the artifact file at the path it is given.
   */
  private async place(
    manifest: ModelManifest,
    data: Uint8Array,
    artifact: Artifact,
    putArtifact: (path: string) => Promise<void>,
    id: DeviceIdentity,
    reportData: Record<string, unknown>,
  ): Promise<"installed" | "staged"> {
    const { name, version } = manifest;
    const storage = this.opts.storage;
    const staged = this.opts.activation === "next-start";
    const dir = staged ? this.staging.versionDir(name, version) : `models/${name}/v${version}`;
    const installed: Installed = {
      name,
      version,
      target: artifact.target,
      sha256: artifact.sha256,
      length: artifact.length,
      artifact_path: `${dir}/${artifact.sha256}.ort`,
      manifest_path: `${dir}/manifest.json`,
      providers: executionProviders(artifact, this.opts.availableProviders),
      fixed_batch: fixedBatch(artifact),
      installed_at: formatTime(this.now()),
      ...(Object.keys(reportData).length > 0 ? { report_data: reportData } : {}),
    };
    // check 5.1: the version directory is written beside the current one; nothing points
    // at it until the swap, so a failure below leaves the state as it was.
    await storage.remove(dir);
    await storage.writeAtomic(installed.manifest_path, data);
    await putArtifact(installed.artifact_path);
    try {
      await this.goldenCheck(installed, manifest); // checks 4.3, 4.4
    } catch (err) {
      await storage.remove(dir);
      throw err;
    }
    if (staged) {
      await this.staging.stage(installed); // served from the next start on (staging.ts)
      return "staged";
    }
    this.emit({ phase: "activate", model: name, version });
    await this.state.swap(name, installed); // check 5.2
    await this.state.cleanUp(name); // check 5.3
    // check 5.4; the providers are those the golden check's session was created with
    await this.reports.enqueue(id.device_id, "installed", {
      model: name,
      version,
      data: { ...reportData, providers: installed.providers },
    });
    return "installed";
  }

  /**
   * check 2.7's hold: checks 4.3, 4.4 for a verified shadow candidate, its files under
   * shadow/<name>/v<N>, then its record (the commit point). Nothing points at it from
   * current.json and nothing is reported: the candidate is not installed.
   */
  private async holdVerified(
    manifest: ModelManifest,
    data: Uint8Array,
    artifact: Artifact,
    putArtifact: (path: string) => Promise<void>,
    entry: ShadowEntry,
  ): Promise<"held"> {
    const { name, version } = manifest;
    const storage = this.opts.storage;
    const dir = this.held.versionDir(name, version);
    const probe: Installed = {
      name,
      version,
      target: artifact.target,
      sha256: artifact.sha256,
      length: artifact.length,
      artifact_path: this.held.artifactPath(name, { version, artifact_sha256: artifact.sha256 }),
      manifest_path: this.held.manifestPath(name, version),
      providers: executionProviders(artifact, this.opts.availableProviders),
      fixed_batch: fixedBatch(artifact),
      installed_at: formatTime(this.now()),
    };
    await storage.remove(dir);
    await storage.writeAtomic(probe.manifest_path, data);
    await putArtifact(probe.artifact_path);
    try {
      await this.goldenCheck(probe, manifest); // checks 4.3, 4.4, exactly as for an install
    } catch (err) {
      // nothing else is held for the model (a candidate is fetched only when none is)
      await this.withShadowLock(() => this.held.discard(name));
      throw err;
    }
    const rec: HeldRecord = {
      version,
      manifest_sha256: entry.manifest.sha256,
      artifact_sha256: artifact.sha256,
      target: artifact.target,
      report_after: { ...entry.report_after },
      length: artifact.length,
      providers: probe.providers,
      fixed_batch: probe.fixed_batch,
      held_at: probe.installed_at,
    };
    await this.withShadowLock(async () => {
      await this.held.hold(name, rec);
      this.heldRecords.set(name, rec);
    });
    return "held";
  }

  // ------------------------------------------------------------------------- 2.7 shadows

  /**
   * check 2.7, after the installs of 2.6: per model, the shadow entry to hold (pickShadow:
   * the first covering this device, above the version it runs now, not known bad). A held
   * candidate no longer chosen, or whose files are no longer whole, is dropped, its pending
   * agreement windows queued as `shadow` reports first; a chosen one not held yet is
   * fetched and verified as an install and held. Windows past their `report_after.hours`
   * are reported here too, so that one no call adds to still goes out.
   */
  private async syncShadows(
    ep: Endpoint,
    root: Root,
    index: ChannelIndex,
    id: DeviceIdentity,
    net: NetworkStatus,
  ): Promise<ShadowResult[]> {
    const out: ShadowResult[] = [];
    const runs = await this.haveVersions();
    const failed = await this.state.failed();
    const names = new Set([...Object.keys(index.shadows), ...(await this.held.names())]);
    for (const name of [...names].sort()) {
      let entry = pickShadow(index.shadows[name] ?? [], id.device_id, runs[name] ?? 0, failed[name] ?? []);
      if (entry !== undefined && entry.model !== name) entry = undefined;
      let rec = await this.heldRecord(name);
      if (rec === null) {
        await this.withShadowLock(() => this.held.discard(name)); // a crash before the commit point
      } else if (
        entry === undefined ||
        entry.version !== rec.version ||
        entry.manifest.sha256 !== rec.manifest_sha256 ||
        (await this.opts.storage.size(this.held.artifactPath(name, rec))) !== rec.length
      ) {
        await this.dropShadow(name);
        out.push({ model: name, version: rec.version, outcome: "dropped" });
        rec = null;
      } else if (JSON.stringify(rec.report_after) !== JSON.stringify(entry.report_after)) {
        const next = { ...rec, report_after: { ...entry.report_after } };
        await this.withShadowLock(async () => {
          await this.held.update(name, next);
          this.heldRecords.set(name, next);
        });
      }
      if (entry === undefined || rec !== null) continue;
      const done = await this.installEntry(ep, root, entry, id, net, entry);
      const { outcome } = done;
      out.push({
        model: name,
        version: entry.version,
        outcome: outcome === "held" || outcome === "deferred" || outcome === "failed" ? outcome : "failed",
        ...(done.reason !== undefined ? { reason: done.reason } : {}),
        ...(done.error !== undefined ? { error: done.error } : {}),
        ...(done.transport !== undefined ? { transport: done.transport } : {}),
      });
    }
    await this.withShadowLock(() => this.settleWindows(id.device_id));
    return out;
  }

  /** Everything held for `name` goes, its windows with rows reported first. */
  private dropShadow(name: string): Promise<void> {
    return this.withShadowLock(async () => {
      const id = await this.state.identity();
      const mw = await this.windowsOf(name);
      for (const w of mw.windows.values()) await this.enqueueWindow(id?.device_id ?? this.opts.deviceId, w);
      this.shadowWindowsByModel.delete(name);
      await this.held.discard(name);
      this.heldRecords.set(name, null);
    });
  }

  /** Under shadowLock, at a sync: windows past their hours (or of a candidate no longer
   * held) are reported; every changed window is saved. */
  private async settleWindows(deviceId: string): Promise<void> {
    const nowMs = this.now();
    const names = new Set([...(await this.held.names()), ...this.shadowWindowsByModel.keys()]);
    for (const name of names) {
      const mw = await this.windowsOf(name);
      const rec = await this.heldRecord(name);
      for (const [key, w] of mw.windows) {
        if (rec === null || rec.version !== w.candidate || w.due(rec.report_after, nowMs)) {
          await this.enqueueWindow(deviceId, w);
          mw.windows.delete(key);
          mw.dirty = true;
        }
      }
      if (rec === null) this.shadowWindowsByModel.delete(name);
      else if (mw.dirty) await this.saveWindows(name, mw, nowMs);
    }
  }

  private withShadowLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.shadowLock.then(fn, fn);
    this.shadowLock = run.catch(() => undefined);
    return run;
  }

  private async heldRecord(name: string): Promise<HeldRecord | null> {
    if (!this.heldRecords.has(name)) this.heldRecords.set(name, await this.held.held(name));
    return this.heldRecords.get(name) ?? null;
  }

  /** A model's windows, loaded from disk on first use (under shadowLock). */
  private async windowsOf(name: string): Promise<ModelWindows> {
    let mw = this.shadowWindowsByModel.get(name);
    if (mw === undefined) {
      const windows = new Map<string, AgreementWindow>();
      for (const raw of await this.held.windows(name)) {
        const w = AgreementWindow.fromJSON(raw);
        if (w !== null && w.model === name) windows.set(w.key, w);
      }
      mw = { windows, savedAt: this.now(), dirty: false };
      this.shadowWindowsByModel.set(name, mw);
    }
    return mw;
  }

  private async saveWindows(name: string, mw: ModelWindows, nowMs: number): Promise<void> {
    const saved: SavedWindow[] = [...mw.windows.values()].filter((w) => w.rows > 0).map((w) => w.toJSON());
    await this.held.saveWindows(name, saved);
    mw.savedAt = nowMs;
    mw.dirty = false;
  }

  /** Queue one window's `shadow` report; returns its data, or null for an empty window or
   * data the service would refuse in any case (then dropped: it would only be refused). */
  private async enqueueWindow(deviceId: string, w: AgreementWindow): Promise<ShadowData | null> {
    if (w.rows === 0) return null;
    const data = w.report();
    if (shadowProblem(w.candidate, data) !== null) return null;
    await this.reports.enqueue(deviceId, "shadow", { model: w.model, version: w.candidate, data: { ...data } });
    return data;
  }

  /** The shadow candidate held for `name` (check 2.7) when its file is whole, else null. */
  async heldShadow(name: string): Promise<HeldShadow | null> {
    await this.start();
    const rec = await this.heldRecord(name);
    if (rec === null) return null;
    const path = this.held.artifactPath(name, rec);
    if ((await this.opts.storage.size(path)) !== rec.length) return null;
    return {
      name,
      version: rec.version,
      manifestSha256: rec.manifest_sha256,
      path: this.opts.storage.localPath(path),
      providers: [...rec.providers],
      fixedBatch: rec.fixed_batch,
      reportAfter: { ...rec.report_after },
    };
  }

  /**
   * One call's rows scored by the active model `model` v`activeVersion` and by the held
   * candidate v`candidate` (docs/behaviour.md "Shadow runs"); the hook calls it after every
   * call while a candidate is held, an app that scores outside the hook may too. The rows go
   * into the (model, candidate, active version) agreement window; a window that reached
   * `report_after.rows` rows with this call, or whose `report_after.hours` had passed before
   * it, is queued as one `shadow` report (sent with the next sync) and a new one starts; so
   * is the window of another active version (the app was served another one before).
   * Returns the reports this call queued. Rows for a candidate no longer held, or not above
   * the active version, are not counted.
   */
  observeShadow(
    model: string,
    candidate: number,
    activeVersion: number,
    active: { label: ArrayLike<number | bigint>; score: ArrayLike<number> },
    shadow: { label: ArrayLike<number | bigint>; score: ArrayLike<number> },
  ): Promise<ShadowData[]> {
    if (active.label.length !== shadow.label.length) {
      return Promise.reject(
        new RangeError(`observeShadow ${model}: ${active.label.length} active labels, ${shadow.label.length} candidate labels`),
      );
    }
    return this.withShadowLock(async () => {
      const rec = await this.heldRecord(model);
      if (rec === null || rec.version !== candidate || !(activeVersion >= 1 && activeVersion < candidate)) return [];
      if (active.label.length === 0) return [];
      const id = await this.state.identity();
      const deviceId = id?.device_id ?? this.opts.deviceId;
      const mw = await this.windowsOf(model);
      const key = windowKey(model, candidate, activeVersion);
      const nowMs = this.now();
      const queued: ShadowData[] = [];
      for (const [other, open] of mw.windows) {
        if (other === key) continue;
        // another active version served before this one: its window is complete (at most
        // one is open per model, as on the Python device)
        const data = await this.enqueueWindow(deviceId, open);
        if (data !== null) queued.push(data);
        mw.windows.delete(other);
      }
      let w = mw.windows.get(key);
      if (w !== undefined && w.due(rec.report_after, nowMs)) {
        // its hours passed before this call: reported as it was, this call starts the next
        const data = await this.enqueueWindow(deviceId, w);
        if (data !== null) queued.push(data);
        w = undefined;
      }
      if (w === undefined) {
        w = new AgreementWindow(model, candidate, activeVersion, nowMs);
        mw.windows.set(key, w);
      }
      w.observe(active.label, active.score, shadow.label, shadow.score);
      mw.dirty = true;
      if (w.due(rec.report_after, nowMs)) {
        const data = await this.enqueueWindow(deviceId, w);
        if (data !== null) queued.push(data);
        mw.windows.delete(key);
      }
      // a report is saved at once (a restart never reports a window twice); rows at most
      // every SHADOW_SAVE_INTERVAL_MS
      if (queued.length > 0 || nowMs - mw.savedAt >= SHADOW_SAVE_INTERVAL_MS) await this.saveWindows(model, mw, nowMs);
      return queued;
    });
  }

  /** The agreement windows not yet reported for `model`, as their reports would read now. */
  async shadowWindows(model: string): Promise<(ShadowData & { version: number })[]> {
    await this.start();
    return this.withShadowLock(async () =>
      [...(await this.windowsOf(model)).windows.values()]
        .filter((w) => w.rows > 0)
        .map((w) => ({ version: w.candidate, ...w.report() })),
    );
  }

  // ------------------------------------------------------------------------- offline packs

  /**
   * Install from an offline pack (docs/offline.md), with no network: the same numbered
   * checks as a sync, in the same order (core/pack.ts planPack: P.1, the root walk from
   * this device's root, P.2, 2.6 with this device's rollout bucket, 3.x, 4.1, 4.2), then the
   * golden vectors, the atomic install and an `installed` report with `source: "pack"`,
   * queued and sent at the next online sync. A pack-wide refusal throws the check's
   * VerificationError with the state unchanged; a model that fails is reported as online
   * and the others go on. The pack's index version becomes the pack floor: neither a later
   * pack nor the network may go below it. The device must be registered (its fleet).
   */
  installFromPack(bytes: Uint8Array): Promise<PackInstallResult> {
    return this.serial(() => this.runPack(bytes));
  }

  private async runPack(bytes: Uint8Array): Promise<PackInstallResult> {
    const id = await this.state.identity();
    if (id === null) throw new StoreError("not registered: call register(enrollmentToken) first");
    await this.start();
    const channel = this.opts.channel;
    const rootRaw = (await this.state.savedRoot()) ?? this.opts.shippedRoot;
    const plan = planPack(bytes, {
      trustedRoot: rootRaw,
      deviceId: id.device_id,
      fleet: id.fleet,
      channel,
      target: this.target,
      runtime: this.opts.ortVersion,
      trustedVersion: await this.state.trustedIndexVersion(channel),
      installed: await this.haveVersions(),
      failed: await this.state.failed(),
      nowMs: this.now(),
    }); // checks P.1 to 4.2: nothing is written before they pass
    const previous = trustedRoot(rootRaw);
    for (const raw of plan.roots) await this.state.saveRoot(raw); // check 1.5, as the network walk saves them
    if (plan.roots.length > 0 && indexRoleChanged(previous, plan.root)) await this.state.forgetIndex(channel);
    const index = plan.index;
    // P.2 passed: the snapshot is genuine, so neither a pack nor the network may go below it
    await this.state.savePackFloor(channel, index.version, index.pack_id);
    const source = { source: "pack", pack_id: index.pack_id, index_version: index.version };
    const models: ModelResult[] = [];
    for (const planned of plan.models) models.push(await this.installPlanned(planned, id, source));
    this.emit({ phase: "done" });
    return {
      outcome: overallOutcome(models) as PackInstallResult["outcome"],
      packId: index.pack_id,
      indexVersion: index.version,
      validFrom: index.valid_from,
      expires: index.expires,
      rootVersion: plan.root.version,
      models,
    };
  }

  private async installPlanned(
    planned: PlannedModel,
    id: DeviceIdentity,
    source: Record<string, unknown>,
  ): Promise<ModelResult> {
    const { entry } = planned;
    const base = { model: entry.model, version: entry.version };
    try {
      if (planned.error !== undefined) throw planned.error;
      const { manifest, manifestBytes, artifact, artifactBytes } = planned as Required<PlannedModel>;
      this.emit({ phase: "verify", ...base });
      const storage = this.opts.storage;
      const done = await this.place(
        manifest,
        manifestBytes,
        artifact,
        (path) => storage.writeAtomic(path, artifactBytes),
        id,
        { target: artifact.target, transfer: "pack", wire_bytes: 0, ...source },
      ); // checks 4.3-5.4
      return { ...base, outcome: done };
    } catch (err) {
      if (!(err instanceof VerificationError)) throw err;
      const kind = err instanceof GoldenVectorError ? "golden_failed" : "install_failed";
      await this.reports.enqueue(id.device_id, kind, {
        ...base,
        reason: err.code,
        data: { detail: err.message.slice(0, 500), ...source },
      });
      if (isPermanent(err)) await this.state.markFailed(entry.model, entry.version);
      return { ...base, outcome: "failed", reason: err.code, error: err };
    }
  }

  private async goldenCheck(installed: Installed, manifest: ModelManifest): Promise<void> {
    const artifact = manifest.artifacts.find((a) => a.sha256 === installed.sha256)!;
    let loaded;
    try {
      loaded = await this.opts.runner.load(
        this.opts.storage.localPath(installed.artifact_path),
        installed.providers,
        installed.fixed_batch,
      ); // check 4.3
    } catch (err) {
      throw new ArtifactLoadError(`${installed.name} v${installed.version}: cannot load: ${(err as Error).message}`);
    }
    if (loaded.providers !== undefined) installed.providers = [...loaded.providers];
    try {
      let out;
      try {
        out = await loaded.run(manifest.golden.inputs);
      } catch (err) {
        throw new GoldenVectorError(`golden vectors: inference failed: ${(err as Error).message}`);
      }
      checkGolden(out.label, out.score, manifest.golden, artifact.golden_tolerance); // check 4.4
    } finally {
      await loaded.release();
    }
  }

  // ------------------------------------------------------------------------- serving

  /** The model to serve now: the installed version if its file is whole, else the
   * previous one, else the model embedded in the app; null when there is none. */
  async currentModel(name?: string): Promise<ActiveModel | null> {
    await this.start();
    const pointers = await this.state.installedModels();
    const wanted = name ?? Object.keys(pointers).sort()[0] ?? this.opts.embedded?.[0]?.name;
    if (wanted === undefined) return null;
    const p = pointers[wanted];
    const storage = this.opts.storage;
    for (const [inst, source] of [
      [p?.current, "installed"],
      [p?.previous, "previous"],
    ] as const) {
      if (inst === undefined || inst === null) continue;
      if ((await storage.size(inst.artifact_path)) === inst.length) {
        return {
          name: wanted,
          version: inst.version,
          path: storage.localPath(inst.artifact_path),
          providers: inst.providers,
          fixedBatch: inst.fixed_batch,
          source,
        };
      }
    }
    const embedded = this.opts.embedded?.find((e) => e.name === wanted);
    if (embedded === undefined) return null;
    return {
      name: embedded.name,
      version: embedded.version,
      path: embedded.path,
      providers: embedded.providers ?? ["cpu"],
      fixedBatch: null,
      source: "embedded",
    };
  }
}

function overallOutcome(models: readonly ModelResult[]): SyncOutcome {
  const outcomes = models.map((m) => m.outcome);
  return outcomes.includes("installed")
    ? "updated"
    : outcomes.includes("staged")
      ? "staged"
      : outcomes.includes("failed")
        ? "failed"
        : outcomes.includes("deferred")
          ? "deferred"
          : "up_to_date";
}
