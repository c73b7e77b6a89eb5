/**
 * The hook behind useAnomalyModel(), with the session opener injected so that it imports
 * no native module: onnxruntime-react-native in the app (useAnomalyModel.ts), onnxruntime-node
 * in the Node tests. It is the model a screen scores telemetry with. It serves whatever the
 * client says is current (installed, previous, or the one embedded in the app), syncs on
 * mount and then periodically, and swaps the session when a sync installs a new version.
 * Inference never waits for the network: offline, the installed model keeps answering.
 */
import { useCallback, useEffect, useRef, useState } from "react";

import type { ActiveModel, ModelSyncClient, ProgressEvent, SyncOutcome, SyncResult } from "../core/client";
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

interface Stats {
  count: number;
  anomalies: number;
  ms: number;
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
  const session = useRef<{ key: string; open: ModelSession } | null>(null);
  const stats = useRef<Stats>({ count: 0, anomalies: 0, ms: 0 });
  const mounted = useRef(true);
  const activeRef = useRef<ActiveModel | null>(null);

  /** Open (or keep) the session for whatever the client says is current. */
  const load = useCallback(async (): Promise<void> => {
    const current = await client.currentModel(model);
    const waiting = await client.stagedModel(current?.name ?? model);
    if (!mounted.current) return;
    setStaged(waiting?.version ?? null);
    if (current === null) {
      setStatus("no_model");
      activeRef.current = null;
      setActive(null);
      return;
    }
    const key = `${current.name}@${current.version}:${current.path}`;
    if (session.current?.key !== key) {
      const open = await openSession(current.path, current.providers, current.fixedBatch);
      const old = session.current;
      session.current = { key, open };
      await old?.open.release();
      if (!mounted.current) return;
      setProviders(open.providers);
    }
    activeRef.current = current;
    setActive(current);
    setStatus("ready");
    setError(null);
  }, [client, model, openSession]);

  const sync = useCallback(async (): Promise<SyncResult | null> => {
    setSyncState("syncing");
    try {
      const s = stats.current;
      const serving = activeRef.current;
      if (s.count > 0 && serving !== null) {
        stats.current = { count: 0, anomalies: 0, ms: 0 };
        await client.reportInferenceStats(serving.name, serving.version, {
          count: s.count,
          anomalies: s.anomalies,
          mean_latency_ms: s.ms / s.count,
        });
      }
      const result = await client.sync();
      if (!mounted.current) return result;
      setSyncState(result.outcome);
      // What stopped the sync, or the first model that failed (the others keep serving).
      const why = result.error ?? result.models.find((m) => m.error !== undefined)?.error;
      setError(result.outcome === "failed" && why !== undefined ? why.message : null);
      if (result.outcome === "updated" || result.outcome === "staged") await load();
      return result;
    } catch (err) {
      if (mounted.current) {
        setSyncState("failed");
        setError((err as Error).message);
      }
      return null;
    }
  }, [client, load]);

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
    };
  }, [client, model, syncIntervalMs, syncOnMount, syncOnForeground, appState, load, sync]);

  const run = useCallback(async (features: readonly number[] | readonly (readonly number[])[]): Promise<Score[]> => {
    const open = session.current?.open;
    if (open === undefined) throw new Error("no model loaded yet");
    const rows = (features.length > 0 && Array.isArray(features[0]) ? features : [features]) as readonly (readonly number[])[];
    const start = Date.now();
    const out = await open.run(rows);
    const scores = rows.map((_, i) => {
      const label = Number(out.label[i]);
      return { label, score: Number(out.score[i]), anomaly: label === -1 };
    });
    const s = stats.current;
    s.count += rows.length;
    s.anomalies += scores.filter((x) => x.anomaly).length;
    s.ms += Date.now() - start;
    return scores;
  }, []);

  return {
    status,
    syncState,
    version: active?.version ?? null,
    source: active?.source ?? null,
    providers,
    error,
    progress,
    staged,
    run,
    sync,
  };
}
