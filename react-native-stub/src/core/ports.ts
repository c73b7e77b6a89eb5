/**
 * The small interfaces the platform-neutral core talks through. React Native and Node
 * each implement them (src/react/adapters.ts, src/node/adapters.ts); tests can wrap them
 * to inject faults (cut downloads, flipped bytes).
 */

/** A directory of state, addressed by '/'-separated paths relative to its root. Every
 * method turns OS failures into StoreError. */
export interface Storage {
  /** The file's bytes, or null when it does not exist. */
  read(path: string): Promise<Uint8Array | null>;
  /** Write beside the target, flush, rename over it: readers see old or new, never half. */
  writeAtomic(path: string, data: Uint8Array): Promise<void>;
  /** Append to a (partial download) file, creating it and its directory when missing. */
  append(path: string, data: Uint8Array): Promise<void>;
  /** Size in bytes, or null when missing. */
  size(path: string): Promise<number | null>;
  /** Entry names in a directory; [] when it does not exist. */
  list(dir: string): Promise<string[]>;
  /** Remove a file or a directory tree; a missing path is not an error. */
  remove(path: string): Promise<void>;
  /** Rename within the store (same volume: atomic), creating the target's directory. */
  rename(from: string, to: string): Promise<void>;
  /** The absolute file-system path, for the inference runtime. */
  localPath(path: string): string;
}

export interface NetworkStatus {
  connected: boolean;
  /** Cellular or otherwise expensive: large downloads wait for Wi-Fi unless urgent. */
  metered: boolean;
}

export interface NetworkMonitor {
  current(): Promise<NetworkStatus>;
}

/** The part of a WHATWG ReadableStream reader the client uses. React Native's fetch has
 * no streaming bodies, so `body` is optional and the client falls back to arrayBuffer(). */
export interface ByteReader {
  read(): Promise<{ done: boolean; value?: Uint8Array | undefined }>;
  cancel(reason?: unknown): Promise<void>;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  arrayBuffer(): Promise<ArrayBuffer>;
  readonly body?: { getReader(): ByteReader } | null;
}

export interface HttpRequest {
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  /** An AbortSignal: the sync's overall deadline aborts a server that trickles bytes. */
  signal?: unknown;
}

/** `fetch` itself satisfies this on Node 20 and React Native. */
export type HttpFetch = (url: string, init: HttpRequest) => Promise<HttpResponse>;

export interface ModelOutputs {
  label: ArrayLike<number | bigint>;
  score: ArrayLike<number>;
}

export interface LoadedModel {
  /** The execution providers the session was really created with, when the runner knows
   * (the installed record and the "installed" report carry these, not the plan). */
  readonly providers?: readonly string[];
  run(inputs: readonly (readonly number[])[]): Promise<ModelOutputs>;
  release(): Promise<void>;
}

/** Runs an artifact: onnxruntime-react-native in the app, onnxruntime-node in tests.
 * `providers` are onnxruntime-common names in the manifest's EP plan order (e.g.
 * ["nnapi", "cpu"]); `fixedBatch` is the artifact's fixed batch size (NPU targets fix it
 * to 1) or null when any batch runs at once. */
export interface InferenceRunner {
  load(path: string, providers: readonly string[], fixedBatch: number | null): Promise<LoadedModel>;
}
