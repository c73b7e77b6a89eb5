/** Test helpers: the real Python service as a child process, the Python device's outputs,
 * and a fault-injecting fetch wrapper (the pattern of python-tuf's fetcher injection). */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

import type { HttpFetch, HttpRequest, HttpResponse } from "../src/core/ports";
import { type Service, startService as startLiveService } from "./liveService";

export { type Service, api } from "./liveService";

export const STUB = resolve(import.meta.dirname, "..");
export const PYTHON = resolve(STUB, "..", ".venv", "bin", "python");
export const HAVE_PYTHON = existsSync(PYTHON);
export const SKIP_REASON = HAVE_PYTHON
  ? false
  : `the Python venv (${PYTHON}) is absent: service-backed tests need the modelsync service`;

/** Start test/fixtures/live_service.py; it serves until its stdin closes. */
export function startService(args: string[] = []): Promise<Service> {
  return startLiveService(STUB, PYTHON, args);
}

/** The Python device's outputs for an artifact (device_sim's OnnxEngine). */
export function pythonOutputs(path: string, inputs: number[][]): { label: number[]; score: number[] } {
  const run = spawnSync(PYTHON, [join(STUB, "test", "fixtures", "python_outputs.py")], {
    cwd: resolve(STUB, ".."),
    input: JSON.stringify({ path, inputs }),
    encoding: "utf8",
  });
  if (run.status !== 0) throw new Error(`python_outputs.py failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as { label: number[]; score: number[] };
}

export interface Seen {
  url: string;
  method: string;
  headers: Record<string, string>;
  status: number;
  contentEncoding: string | null;
}

export type Fault = (url: string, init: HttpRequest, res: HttpResponse) => HttpResponse | undefined;

/** fetch, recording every exchange and letting a test rewrite responses. */
export function recordingFetch(faults: Fault[] = []): { fetch: HttpFetch; seen: Seen[] } {
  const seen: Seen[] = [];
  const fetchFn: HttpFetch = async (url, init) => {
    const res = (await fetch(url, init as RequestInit)) as unknown as HttpResponse;
    seen.push({
      url,
      method: init.method,
      headers: { ...init.headers },
      status: res.status,
      contentEncoding: res.headers.get("content-encoding"),
    });
    for (const f of faults) {
      const replaced = f(url, init, res);
      if (replaced !== undefined) return replaced;
    }
    return res;
  };
  return { fetch: fetchFn, seen };
}

function withBody(res: HttpResponse, stream: ReadableStream<Uint8Array>): HttpResponse {
  return {
    status: res.status,
    headers: res.headers,
    body: stream as unknown as HttpResponse["body"],
    arrayBuffer: () => new Response(stream).arrayBuffer(),
  };
}

const isArtifact = (url: string, sha: string): boolean => url.endsWith(`/v1/blobs/${sha}`);

/** The connection drops after `keep` body bytes of the artifact blob (once). */
export function cutAfter(sha: string, keep: number): Fault {
  let done = false;
  return (url, _init, res) => {
    if (done || !isArtifact(url, sha) || res.status !== 200) return undefined;
    done = true;
    const reader = (res.body as unknown as ReadableStream<Uint8Array>).getReader();
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= keep) {
          // Error only on the pull after the last chunk: error() drops chunks still queued.
          await reader.cancel();
          controller.error(new Error("connection reset by peer (injected)"));
          return;
        }
        const { done: end, value } = await reader.read();
        if (end || value === undefined) {
          controller.close();
          return;
        }
        const piece = value.slice(0, keep - sent);
        sent += piece.length;
        controller.enqueue(piece);
      },
    });
    return withBody(res, stream);
  };
}

/** One byte of the artifact blob arrives flipped (a bad proxy, a bit rot, an attacker). */
export function flipByte(sha: string, at: number): Fault {
  return (url, _init, res) => {
    if (!isArtifact(url, sha) || res.status !== 200) return undefined;
    const reader = (res.body as unknown as ReadableStream<Uint8Array>).getReader();
    let offset = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done || value === undefined) {
          controller.close();
          return;
        }
        const copy = value.slice();
        if (at >= offset && at < offset + copy.length) copy[at - offset]! ^= 0xff;
        offset += copy.length;
        controller.enqueue(copy);
      },
    });
    return withBody(res, stream);
  };
}

/** fetch, counting the requests to /v1/blobs/ and the body bytes their answers delivered
 * (the bytes the client read off the wire; zstd bytes when the service sent zstd). */
export function countingFetch(inner: HttpFetch = fetch as unknown as HttpFetch): {
  fetch: HttpFetch;
  blobRequests: () => number;
  blobBytes: () => number;
  reset: () => void;
} {
  let requests = 0;
  let bytes = 0;
  const fetchFn: HttpFetch = async (url, init) => {
    const res = await inner(url, init);
    if (!new URL(url).pathname.startsWith("/v1/blobs/")) return res;
    requests += 1;
    const body = res.body as unknown as ReadableStream<Uint8Array> | null | undefined;
    if (body === null || body === undefined) {
      const data = new Uint8Array(await res.arrayBuffer());
      bytes += data.length;
      return withBody(res, new Blob([data]).stream());
    }
    const counted = body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          bytes += chunk.length;
          controller.enqueue(chunk);
        },
      }),
    );
    return withBody(res, counted);
  };
  return {
    fetch: fetchFn,
    blobRequests: () => requests,
    blobBytes: () => bytes,
    reset: () => {
      requests = 0;
      bytes = 0;
    },
  };
}
