/**
 * The hook behind useAnomalyModel(), with the session opener injected so that it imports
 * no native module: onnxruntime-react-native in the app (useAnomalyModel.ts), onnxruntime-node
 * in the Node tests. It is the model a screen scores telemetry with. It serves whatever the
 * client says is current (installed, previous, or the one embedded in the app), syncs on
 * mount and then periodically, and swaps the session when a sync installs a new version.
 * Inference never waits for the network: offline, the installed model keeps answering.
 * What each installed version did (rows, anomalies, the score histogram in its manifest's
 * bins, latency, provider) is summed in a BehaviourWindow per version and queued as one
 * `behaviour` report at the next sync (core/behaviour.ts, docs/behaviour.md). Each call's
 * rows also go to the client's expected-band check (ModelSyncClient.observeBand): a version
 * whose anomaly rate leaves its manifest's band in its first rows falls back, and the hook
 * then serves what is current (the previous version, or the embedded model).
 * While the client holds a shadow candidate for the model (ModelSyncClient.heldShadow,
 * check 2.7), every call's rows are scored by it too, after the served model answered and
 * without holding up the call; its labels and scores never reach the app, only the
 * agreement window (ModelSyncClient.observeShadow) that becomes a `shadow` report.
 */
import { useCallback, useEffect, useRef, useState } from "react";

import { BehaviourWindow, ortProviderName } from "../core/behaviour";
import type { ActiveModel, ModelSyncClient, ProgressEvent, SyncOutcome, SyncResult } from "../core/client";
import { ModelSyncError } from "../core/errors";
import type { LoadedModel } from "../core/ports";

/** An inference session on one artifact, and the providers it really got. */
export interface ModelSession extends LoadedModel {
  providers: string[];
}

export type SessionOpener = (
  path: string,
  providers: readonly string[],
  fixedBatch: number | null,
) => Promise<ModelSession>;

export type ModelStatus = "loading" | "ready" | "no_model" | "error";

export interface Score {
  label: number;
  score: number;
  anomaly: boolean;
}

export interface AnomalyModel {
  status: ModelStatus;
  /** Outcome of the last sync ("never" before the first one ends). */
  syncState: SyncOutcome | "syncing" | "never";
  version: number | null;
  source: ActiveModel["source"] | null;
  /** Execution providers the session really got (plan order, or the CPU fallback). */
  providers: string[];
  error: string | null;
  /** The latest sync event; during a download `received` and `total` bytes, `total` known
   * from the first event on. */
  progress: ProgressEvent | null;
  /** A verified version waiting for the next cold start (activation "next-start"), or null. */
  staged: number | null;
  /** The held shadow candidate scoring every call's rows beside the served version (its
   * outputs never returned), or null. */
  shadowVersion: number | null;
  /** Score one row of features (manifest order) or several. */
  run(features: readonly number[] | readonly (readonly number[])[]): Promise<Score[]>;
  sync(): Promise<SyncResult | null>;
}

/** The part of React Native's AppState the hook listens to (injected: this module imports
 * no native module, so it runs under Node too). */
export interface AppStateLike {
  addEventListener(type: "change", listener: (state: string) => void): { remove(): void };
}

export interface UseAnomalyModelOptions {
  model?: string;
  /** Default 6 hours; 0 disables periodic syncs. Jittered ±20% so a fleet spreads out. */
  syncIntervalMs?: number;
  syncOnMount?: boolean;
  /** Sync when the app comes back to the foreground (AppState "active" after another
   * state). Default true where an AppState is given; off with syncOnMount false. */
  syncOnForeground?: boolean;
  appState?: AppStateLike;
}

/** The session serving now, and what its calls are reported as: null for a model the
 * service never heard this device install (the embedded one), whose report it would refuse,
 * or one whose installed manifest cannot be read. */
interface Serving {
  key: string;
  open: ModelSession;
  reported: { name: string; version: number; edges: number[] | null } | null;
}

/** The held shadow candidate's session, beside the served one. */
interface ShadowServing {
  key: string;
  open: ModelSession;
  name: string;
  version: number;
}

interface VersionWindow {
  name: string;
  version: number;
  window: BehaviourWindow;
}

/** A monotonic clock where the runtime has one (React Native and Node both do). */
function clockMs(): number {
  const perf = (globalThis as { performance?: { now?: () => number } }).performance;
  return typeof perf?.now === "function" ? perf.now() : Date.now();
}

export function useModel(
  client: ModelSyncClient,
  openSession: SessionOpener,
  options: UseAnomalyModelOptions = {},
): AnomalyModel {
  const { model, syncIntervalMs = 6 * 3600_000, syncOnMount = true, syncOnForeground = true, appState } = options;
  const [status, setStatus] = useState<ModelStatus>("loading");
  const [syncState, setSyncState] = useState<AnomalyModel["syncState"]>("never");
  const [active, setActive] = useState<ActiveModel | null>(null);
  const [providers, setProviders] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [progress, setProgress] = useState<ProgressEvent | null>(null);
  const [staged, setStaged] = useState<number | null>(null);
  const [shadowVersion, setShadowVersion] = useState<number | null>(null);
  const session = useRef<Serving | null>(null);
  const shadowSession = useRef<ShadowServing | null>(null);
  // The candidate's runs, one after the other, behind the served model's answers; a sync
  // waits for them, so the rows scored before it are in the windows it may report.
  const shadowRuns = useRef<Promise<void>>(Promise.resolve());
  const windows = useRef(new Map<string, VersionWindow>());
  const mounted = useRef(true);

  /** Open (or keep, or close) the held shadow candidate's session: only beside a served
   * version the service knows this device installed, and below the candidate. */
  const loadShadow = useCallback(async (): Promise<void> => {
    const reported = session.current?.reported ?? null;
    const held = reported === null ? null : await client.heldShadow(reported.name);
    const wanted = held !== null && reported !== null && held.version > reported.version ? held : null;
    const key = wanted === null ? null : `${wanted.name}@${wanted.version}:${wanted.path}`;
    if (shadowSession.current?.key === key) return;
    let next: ShadowServing | null = null;
    if (wanted !== null && key !== null) {
      try {
        next = { key, open: await openSession(wanted.path, wanted.providers, wanted.fixedBatch), name: wanted.name, version: wanted.version };
      } catch {
        next = null; // the candidate cannot run here: the app is served as before
      }
    }
    const old = shadowSession.current;
    shadowSession.current = next;
    if (old !== null) {
      await shadowRuns.current; // runs already started on it finish first
      await old.open.release();
    }
    if (mounted.current) setShadowVersion(next?.version ?? null);
  }, [client, openSession]);

  /** Open (or keep) the session for whatever the client says is current. */
  const load = useCallback(async (): Promise<void> => {
    const current = await client.currentModel(model);
    const waiting = await client.stagedModel(current?.name ?? model);
    if (!mounted.current) return;
    setStaged(waiting?.version ?? null);
    if (current === null) {
      setStatus("no_model");
      setActive(null);
      return;
    }
    const key = `${current.name}@${current.version}:${current.path}`;
    if (session.current?.key !== key) {
      let reported: Serving["reported"] = null;
      if (current.source !== "embedded") {
        try {
          const manifest = await client.installedManifest(current.name, current.version);
          if (manifest !== null) {
            reported = { name: current.name, version: current.version, edges: manifest.behaviour?.score_edges ?? null };
          }
        } catch (err) {
          if (!(err instanceof ModelSyncError)) throw err; // unreadable: served, not reported
        }
      }
      const open = await openSession(current.path, current.providers, current.fixedBatch);
      const old = session.current;
      session.current = { key, open, reported };
      await old?.open.release();
      if (!mounted.current) return;
      setProviders(open.providers);
    }
    setActive(current);
    setStatus("ready");
    setError(null);
    await loadShadow();
  }, [client, model, openSession, loadShadow]);

  const sync = useCallback(async (): Promise<SyncResult | null> => {
    setSyncState("syncing");
    try {
      await shadowRuns.current; // the candidate's windows hold every call made so far
      // Each window that scored rows becomes one report; calls from now on start new ones.
      const due = [...windows.current.values()].filter((w) => w.window.rows > 0);
      windows.current = new Map();
      for (const w of due) {
        try {
          await client.reportBehaviour(w.name, w.version, w.window.report());
        } catch (err) {
          if (!(err instanceof RangeError)) throw err; // data the service would refuse: dropped
        }
      }
      const result = await client.sync();
      if (!mounted.current) return result;
      setSyncState(result.outcome);
      // What stopped the sync, or the first model that failed (the others keep serving).
      const why = result.error ?? result.models.find((m) => m.error !== undefined)?.error;
      setError(result.outcome === "failed" && why !== undefined ? why.message : null);
      if (result.outcome === "updated" || result.outcome === "staged") await load();
      else await loadShadow(); // a candidate held or dropped by this sync
      return result;
    } catch (err) {
      if (mounted.current) {
        setSyncState("failed");
        setError((err as Error).message);
      }
      return null;
    }
  }, [client, load, loadShadow]);

  useEffect(() => {
    mounted.current = true;
    const unsubscribe = client.onProgress((e) => setProgress(e));
    load().catch((err: unknown) => {
      if (!mounted.current) return;
      setStatus("error");
      setError((err as Error).message);
    });
    if (syncOnMount) void sync();
    // A sync already running is shared (ModelSyncClient.sync), so a foreground event during
    // the start-up sync does not start a second one.
    let last = "active";
    const foreground =
      appState !== undefined && syncOnForeground && syncOnMount
        ? appState.addEventListener("change", (state) => {
            if (state === "active" && last !== "active") void sync();
            last = state;
          })
        : undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const schedule = (): void => {
      if (syncIntervalMs <= 0) return;
      timer = setTimeout(() => {
        void sync().finally(schedule);
      }, syncIntervalMs * (0.8 + 0.4 * Math.random()));
    };
    schedule();
    return () => {
      mounted.current = false;
      unsubscribe();
      foreground?.remove();
      if (timer !== undefined) clearTimeout(timer);
      void session.current?.open.release();
      session.current = null;
      const shadow = shadowSession.current;
      shadowSession.current = null;
      if (shadow !== null) void shadowRuns.current.then(() => shadow.open.release());
    };
  }, [client, model, syncIntervalMs, syncOnMount, syncOnForeground, appState, load, sync]);

  const run = useCallback(async (features: readonly number[] | readonly (readonly number[])[]): Promise<Score[]> => {
    const serving = session.current;
    if (serving === null) throw new Error("no model loaded yet");
    const open = serving.open;
    const rows = (features.length > 0 && Array.isArray(features[0]) ? features : [features]) as readonly (readonly number[])[];
    const start = clockMs();
    const out = await open.run(rows);
    const ms = clockMs() - start;
    const scores = rows.map((_, i) => {
      const label = Number(out.label[i]);
      return { label, score: Number(out.score[i]), anomaly: label === -1 };
    });
    const reported = serving.reported;
    if (reported !== null) {
      const key = `${reported.name}@${reported.version}`;
      let w = windows.current.get(key);
      if (w === undefined) {
        w = { name: reported.name, version: reported.version, window: new BehaviourWindow(reported.edges, Date.now()) };
        windows.current.set(key, w);
      }
      w.window.observe(
        scores.map((x) => x.label),
        scores.map((x) => x.score),
        ms,
        ortProviderName(open.providers[0] ?? "cpu"),
      );
      // The expected-band check (ModelSyncClient.observeBand): a version that leaves its
      // manifest's band in its first rows is failed and the previous one served. Not awaited:
      // a fallback waits for a running sync, and scoring never waits for the network.
      const anomalies = scores.reduce((n, x) => n + (x.anomaly ? 1 : 0), 0);
      client
        .observeBand(reported.name, reported.version, scores.length, anomalies)
        .then(async (verdict) => {
          if (verdict.outcome === "fell_back") await load(); // serve what is current now
        })
        .catch((err: unknown) => {
          if (mounted.current) setError((err as Error).message);
        });
      // The held shadow candidate scores the same rows; nothing of it reaches the caller.
      const shadow = shadowSession.current;
      if (shadow !== null && shadow.name === reported.name && shadow.version > reported.version) {
        const activeOut = { label: scores.map((x) => x.label), score: scores.map((x) => x.score) };
        const activeVersion = reported.version;
        shadowRuns.current = shadowRuns.current
          .then(async () => {
            if (shadowSession.current !== shadow) return; // dropped or replaced meanwhile
            const out = await shadow.open.run(rows);
            await client.observeShadow(shadow.name, shadow.version, activeVersion, activeOut, out);
          })
          .catch(() => undefined); // a candidate that fails to run changes nothing for the app
      }
    }
    return scores;
  }, [client, load]);

  return {
    status,
    syncState,
    version: active?.version ?? null,
    source: active?.source ?? null,
    providers,
    error,
    progress,
    staged,
    shadowVersion,
    run,
    sync,
  };
}
