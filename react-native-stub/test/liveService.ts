/** The real Python sync service as a child process (test/fixtures/live_service.py), for
 * the Node tests and the React Native jest project alike: no import.meta, which jest's
 * CommonJS transform lacks. */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

export interface Service {
  url: string;
  fleet: string;
  channel: string;
  publisher_token: string;
  enrollment_token: string;
  root: unknown;
  bundles: Record<string, { dir: string; answer: any; manifest: any }>;
  workDir: string;
  stop(): Promise<void>;
}

/** Start test/fixtures/live_service.py with the repository's Python; it serves until its
 * stdin closes. `args`: the fixture's options (e.g. "--with-v4"). */
export async function startService(stub: string, python: string, args: string[] = []): Promise<Service> {
  const workDir = mkdtempSync(join(tmpdir(), "modelsync-ts-"));
  const child: ChildProcessWithoutNullStreams = spawn(
    python,
    [join(stub, "test", "fixtures", "live_service.py"), join(workDir, "service"), ...args],
    { cwd: resolve(stub, ".."), stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((res) => child.on("exit", (code) => res(code)));
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((res, rej) => {
    lines.once("line", res);
    void exited.then((code) => rej(new Error(`service exited (${code}) before it was ready:\n${stderr.slice(-3000)}`)));
  });
  const info = JSON.parse(first) as Omit<Service, "stop" | "workDir"> & { error?: string };
  if (info.error !== undefined) throw new Error(`service: ${info.error}\n${stderr.slice(-3000)}`);
  return {
    ...info,
    workDir,
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
      await exited;
      clearTimeout(timer);
      lines.close();
    },
  };
}

export async function api(svc: Service, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${svc.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${svc.publisher_token}`, "Content-Type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text === "" ? null : JSON.parse(text);
}
