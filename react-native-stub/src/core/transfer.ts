/**
 * Fetching bytes the protocol way (docs/protocol.md): capped reads (check 4.1 while the
 * bytes arrive), Range resume of a partial artifact kept on disk, zstd transfer decoded in
 * pure JS (fzstd), and BSDIFF4 deltas (delta.ts). Network failures are DownloadError,
 * never a trust failure.
 */
import { Decompress } from "fzstd";

import { concatBytes, utf8Decode } from "./bytes";
import {
  DownloadError,
  HashMismatchError,
  LengthMismatchError,
  MixAndMatchError,
  SlowRetrievalError,
} from "./errors";
import type { HttpFetch, HttpResponse, Storage } from "./ports";
import { checkLengthSoFar } from "./trust";

export interface Endpoint {
  server: string; // "https://sync.example.com", no trailing slash
  token: string | null;
  fetch: HttpFetch;
  deadline?: Deadline;
}

interface TimerHost {
  AbortController?: new () => { signal: unknown; abort(): void };
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The sync's overall deadline: a server that keeps sending too slowly to finish in time
 * cannot hold the device (SlowRetrievalError). Aborts the fetch in flight through an
 * AbortSignal where the runtime has one (Node, React Native). */
export class Deadline {
  expired = false;
  private readonly controller: { signal: unknown; abort(): void } | undefined;
  private readonly handle: unknown;
  private readonly host = globalThis as unknown as TimerHost;

  constructor(readonly ms: number) {
    this.controller = this.host.AbortController === undefined ? undefined : new this.host.AbortController();
    this.handle = this.host.setTimeout(() => {
      this.expired = true;
      this.controller?.abort();
    }, ms);
  }

  get signal(): unknown {
    return this.controller?.signal;
  }

  clear(): void {
    this.host.clearTimeout(this.handle);
  }

  /** The error to throw for a failure `err` seen while this deadline ran. */
  explain(what: string, err: unknown): DownloadError {
    if (this.expired) return new SlowRetrievalError(`${what}: not finished within the sync deadline of ${this.ms} ms`);
    return err instanceof DownloadError ? err : new DownloadError(`${what}: ${(err as Error).message}`);
  }
}

/** A model's manifest or artifact bytes failed the way a path attacker can make them fail:
 * cut or undecodable (DownloadError, not the sync deadline), or of the wrong length or hash. */
export class Damaged extends Error {
  constructor(readonly failure: unknown) {
    super((failure as Error).message);
  }
}

export async function damagedBy<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    const transport =
      (err instanceof DownloadError && !(err instanceof SlowRetrievalError)) ||
      err instanceof LengthMismatchError ||
      err instanceof HashMismatchError ||
      err instanceof MixAndMatchError;
    throw transport ? new Damaged(err) : err;
  }
}

export function url(ep: Endpoint, path: string): string {
  return `${ep.server.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`;
}

export function authHeaders(ep: Endpoint, extra: Record<string, string> = {}): Record<string, string> {
  return ep.token === null ? { ...extra } : { Authorization: `Bearer ${ep.token}`, ...extra };
}

export async function request(
  ep: Endpoint,
  path: string,
  headers: Record<string, string> = {},
  method: "GET" | "POST" = "GET",
  body?: string,
): Promise<HttpResponse> {
  if (ep.deadline?.expired) throw ep.deadline.explain(`${method} ${path}`, undefined);
  try {
    return await ep.fetch(url(ep, path), {
      method,
      headers: authHeaders(ep, headers),
      ...(body === undefined ? {} : { body }),
      ...(ep.deadline?.signal === undefined ? {} : { signal: ep.deadline.signal }),
    });
  } catch (err) {
    if (ep.deadline !== undefined) throw ep.deadline.explain(`${method} ${path}`, err);
    throw new DownloadError(`${method} ${path}: ${(err as Error).message}`);
  }
}

/** The error body's one-line detail (`{"detail", "code"}`), when the service sent one. */
export async function failure(res: HttpResponse, what: string): Promise<DownloadError> {
  let detail = "";
  try {
    const body = new Uint8Array(await res.arrayBuffer()).subarray(0, 4096);
    const parsed = JSON.parse(utf8Decode(body)) as { detail?: unknown };
    if (typeof parsed.detail === "string") detail = `: ${parsed.detail}`;
  } catch {
    // no JSON detail: the status says enough
  }
  return new DownloadError(`${what}: HTTP ${res.status}${detail}`, res.status);
}

/** Feed the body to `onChunk` as it arrives (streaming where the runtime has it, one
 * piece where it does not). A connection cut midway is DownloadError after the chunks
 * already delivered were handled, which is what lets a partial download resume. */
export async function readBody(
  res: HttpResponse,
  what: string,
  onChunk: (chunk: Uint8Array) => Promise<void> | void,
  deadline?: Deadline,
): Promise<void> {
  const reader = res.body?.getReader();
  if (reader === undefined) {
    let buf: ArrayBuffer;
    try {
      buf = await res.arrayBuffer();
    } catch (err) {
      throw deadline?.explain(what, err) ?? new DownloadError(`${what}: ${(err as Error).message}`);
    }
    await onChunk(new Uint8Array(buf));
    return;
  }
  for (;;) {
    let part: { done: boolean; value?: Uint8Array | undefined };
    try {
      part = await reader.read();
    } catch (err) {
      throw deadline?.explain(what, err) ?? new DownloadError(`${what}: connection lost: ${(err as Error).message}`);
    }
    if (part.done) return;
    if (part.value === undefined || part.value.length === 0) continue;
    try {
      await onChunk(part.value);
    } catch (err) {
      await reader.cancel().catch(() => undefined);
      throw err;
    }
  }
}

/** The whole body, never holding more than `cap` bytes: endless data is cut off at once. */
export async function readAll(res: HttpResponse, cap: number, what: string, deadline?: Deadline): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  await readBody(
    res,
    what,
    (chunk) => {
      n += chunk.length;
      if (n > cap) throw new LengthMismatchError(`${what}: server sent more than the declared ${cap} bytes`);
      parts.push(chunk);
    },
    deadline,
  );
  return concatBytes(parts);
}

/** GET a small document of at most `cap` bytes (the index entry's declared length). */
export async function getCapped(ep: Endpoint, path: string, cap: number, what: string): Promise<Uint8Array> {
  const res = await request(ep, path);
  if (res.status !== 200) throw await failure(res, `GET ${path}`);
  return readAll(res, cap, what, ep.deadline);
}

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const ZSTD_SLICE = 256;

export interface ArtifactRequest {
  sha256: string;
  length: number;
  /** Compressed size from the manifest: caps the bytes on the wire of a zstd transfer. */
  compressedLength: number | null;
  partPath: string;
  useZstd: boolean;
  onBytes?: (received: number, total: number) => void;
}

/**
 * Download a blob into `partPath`, resuming what is there. Returns when the file holds
 * exactly `length` bytes (not yet hashed: the caller does check 4.2). A cut transfer leaves
 * the bytes received so far for the next attempt; more bytes than declared abort at once
 * (check 4.1).
 */
export async function downloadToPart(ep: Endpoint, store: Storage, req: ArtifactRequest): Promise<void> {
  const path = `v1/blobs/${req.sha256}`;
  let have = (await store.size(req.partPath)) ?? 0;
  if (have > req.length) {
    await store.remove(req.partPath);
    have = 0;
  }
  if (have === req.length) return;

  const headers: Record<string, string> = {};
  if (have > 0) headers.Range = `bytes=${have}-`;
  else if (req.useZstd) headers["Accept-Encoding"] = "zstd";
  const res = await request(ep, path, headers);

  if (res.status === 416) {
    // Our partial file disagrees with the blob (it cannot be longer): start over next time.
    await store.remove(req.partPath);
    throw new DownloadError(`GET ${path}: range ${have}- refused (416); partial download discarded`, 416);
  }
  if (res.status === 206) {
    const start = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "")?.[1];
    if (start === undefined || Number(start) !== have) {
      throw new DownloadError(`GET ${path}: 206 for the wrong range (${res.headers.get("content-range")})`);
    }
  } else if (res.status === 200) {
    if (have > 0) {
      // The server ignored Range: the body is the whole blob.
      await store.remove(req.partPath);
      have = 0;
    }
  } else {
    throw await failure(res, `GET ${path}`);
  }

  let received = have;
  const write = async (chunk: Uint8Array): Promise<void> => {
    received += chunk.length;
    checkLengthSoFar(received, req.length); // check 4.1
    await store.append(req.partPath, chunk);
    req.onBytes?.(received, req.length);
  };

  const encoding = (res.headers.get("content-encoding") ?? "identity").toLowerCase();
  try {
    if (encoding === "zstd") {
      await readZstd(res, path, { ...req, received: () => received }, write, ep.deadline);
    } else if (encoding === "identity" || encoding === "") {
      await readBody(res, `GET ${path}`, write, ep.deadline);
    } else {
      throw new DownloadError(`GET ${path}: unexpected Content-Encoding ${encoding}`);
    }
  } catch (err) {
    // A server that sends more than it declared, or bytes that do not decode, is not
    // resumed from: start over.
    if (err instanceof LengthMismatchError || (err instanceof DownloadError && err.damaged)) {
      await store.remove(req.partPath);
    }
    throw err;
  }
  if (received !== req.length) {
    throw new DownloadError(`GET ${path}: transfer ended after ${received} of ${req.length} bytes`);
  }
}

/** Decode a zstd body as it streams in. Decoded bytes are a prefix of the blob, so they go
 * to the same partial file: a cut zstd transfer resumes as a plain Range request. Some
 * fetch implementations decode zstd themselves; then the body has no zstd magic number. */
async function readZstd(
  res: HttpResponse,
  path: string,
  req: ArtifactRequest & { received: () => number },
  write: (chunk: Uint8Array) => Promise<void>,
  deadline?: Deadline,
): Promise<void> {
  // zstd's worst case expands incompressible input by a few bytes per block; the service
  // may compress at its own level, so the manifest's compressed size is no exact bound.
  // Compressed bytes are capped too: endless empty frames would produce no output.
  const wireCap = Math.max(req.compressedLength ?? 0, req.length + Math.floor(req.length / 16) + 4096);
  let wire = 0;
  // An object, not a `let`: TypeScript does not see assignments made inside the callback.
  const st: { mode: "unknown" | "zstd" | "plain"; head: Uint8Array } = { mode: "unknown", head: new Uint8Array(0) };
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  // fzstd hands over one block (at most 128 KiB) per call: each is counted against the
  // declared length as it is made, so a bomb stops one block past it (check 4.1) instead
  // of after the whole slice has expanded.
  const decoder = new Decompress((data) => {
    if (data.length === 0) return;
    pendingBytes += data.length;
    checkLengthSoFar(req.received() + pendingBytes, req.length);
    pending.push(data);
  });
  const flush = async (): Promise<void> => {
    const out = pending;
    pending = [];
    pendingBytes = 0;
    for (const d of out) await write(d);
  };
  // Small slices: a few input bytes can expand to a 128 KiB block; the slice bounds how
  // many blocks wait in `pending` before they reach the partial file.
  const push = async (chunk: Uint8Array, final: boolean): Promise<void> => {
    for (let i = 0; i < chunk.length || (final && i === 0); i += ZSTD_SLICE) {
      const slice = chunk.subarray(i, i + ZSTD_SLICE);
      try {
        decoder.push(slice, final && i + ZSTD_SLICE >= chunk.length);
      } catch (err) {
        if (err instanceof LengthMismatchError) throw err;
        throw new DownloadError(`GET ${path}: corrupt zstd stream: ${(err as Error).message}`, undefined, true);
      }
      await flush();
    }
  };
  await readBody(res, `GET ${path}`, async (chunk) => {
    if (st.mode === "plain") return write(chunk);
    wire += chunk.length;
    if (wire > wireCap) {
      throw new LengthMismatchError(`${path}: compressed transfer exceeds the declared ${wireCap} bytes`);
    }
    if (st.mode === "unknown") {
      const head = concatBytes([st.head, chunk]);
      if (head.length < 4) {
        st.head = head;
        return;
      }
      st.head = new Uint8Array(0);
      st.mode = ZSTD_MAGIC.every((b, i) => head[i] === b) ? "zstd" : "plain";
      return st.mode === "plain" ? write(head) : push(head, false);
    }
    return push(chunk, false);
  }, deadline);
  if (st.mode === "unknown" && st.head.length > 0) await write(st.head);
  if (st.mode === "zstd") await push(new Uint8Array(0), true);
}

