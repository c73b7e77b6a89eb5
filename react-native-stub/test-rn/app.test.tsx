/**
 * example/App.tsx and the hook under React Native's jest preset, against the real Python
 * service (test/fixtures/live_service.py), with onnxruntime-react-native's, netinfo's and
 * react-native-fs's own JavaScript over Node-backed native modules (test-rn/shims).
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

import { act, fireEvent, render, screen, waitFor } from "@testing-library/react-native";
import { AppState } from "react-native";
import { InferenceSession } from "onnxruntime-react-native";
import { DocumentDirectoryPath } from "@dr.pogodin/react-native-fs";

import App, { type AppConfig } from "../example/App";
import {
  type ActiveModel,
  ReactNativeStorage,
  createReactNativeClient,
  installFromPackFile,
  openSession,
} from "../src/react";
import type { HttpFetch } from "../src/core/ports";
import { type Service, api, startService } from "../test/liveService";
import { BUNDLE } from "./shims/fsNative";
import { netState } from "./shims/netinfoNative";
import { nativeOrt } from "./shims/ortJsi";

const STUB = resolve(__dirname, "..");
const PYTHON = resolve(STUB, "..", ".venv", "bin", "python");
const suite = existsSync(PYTHON) ? describe : describe.skip;
const LONG = { timeout: 60_000 };

let svc: Service;

/** onnxruntime-react-native registers its backends with onnxruntime-common once, at import,
 * from listSupportedBackends(); a phone whose build lists other providers is a fresh import
 * of the runner (and of onnxruntime-react-native and -common) after the list changed. */
function runnerOnPhoneWith(backends: string[]): typeof import("../src/react/ortRunner") {
  nativeOrt.backends = backends;
  let mod: typeof import("../src/react/ortRunner") | undefined;
  jest.isolateModules(() => {
    mod = require("../src/react/ortRunner") as typeof import("../src/react/ortRunner");
  });
  return mod!;
}

function artifactPath(version: number, target = "cpu"): string {
  const bundle = svc.bundles[String(version)]!;
  const art = bundle.manifest.signed.artifacts.find((a: { target: string }) => a.target === target);
  return join(bundle.dir, art.path);
}

async function release(version: number): Promise<void> {
  await api(svc, "POST", "/v1/releases", {
    fleet: svc.fleet,
    channel: svc.channel,
    model: "fleet-iforest",
    version,
    percent: 100,
  });
}

/** The app as a fresh install on its own phone: its own state directory. The service's
 * bundles have cpu and android-nnapi artifacts, so the client asks as an Android device;
 * the preset's Platform.OS stays "ios", so the storage takes its iOS replace path (the
 * one that needs the unlink-then-move dance, see src/react/storage.ts). */
function appConfig(deviceId: string, extra: Partial<AppConfig> = {}): Partial<AppConfig> {
  return {
    server: svc.url,
    platform: "android",
    deviceId,
    shippedRoot: svc.root,
    enrollmentToken: svc.enrollment_token,
    storage: new ReactNativeStorage(`${DocumentDirectoryPath}/${deviceId}`),
    ...extra,
  };
}

suite("React Native: example/App.tsx and the hook against the real service", () => {
  beforeAll(async () => {
    svc = await startService(STUB, PYTHON);
    await release(1);
  }, 240_000);

  afterAll(async () => {
    await svc?.stop();
  });

  beforeEach(() => {
    nativeOrt.reset();
    netState.override = null;
  });

  describe("providers reported as used", () => {
    it("onnxruntime-common drops a provider the native side lacks, with only a warning", async () => {
      const warn = jest.spyOn(console, "warn").mockImplementation(() => undefined);
      const session = await InferenceSession.create(artifactPath(1), { executionProviders: ["nnapi", "cpu"] });
      expect(warn.mock.calls.flat().join(" ")).toContain('removing requested execution provider "nnapi"');
      expect(nativeOrt.requested).toEqual([["cpu"]]);
      await session.release();
      warn.mockRestore();
    });

    it("asks only for what listSupportedBackends lists, and says so", async () => {
      const manifest = svc.bundles["1"]!.manifest.signed;
      const s = await openSession(artifactPath(1), ["nnapi", "cpu"], null);
      expect(s.providers).toEqual(["cpu"]);
      expect(nativeOrt.requested).toEqual([["cpu"]]);
      const out = await s.run(manifest.golden.inputs);
      expect(Array.from(out.label)).toEqual(manifest.golden.label);
      await s.release();

      nativeOrt.requested.length = 0;
      const nnapiPhone = runnerOnPhoneWith(["cpu", "xnnpack", "nnapi"]);
      const s2 = await nnapiPhone.openSession(artifactPath(1, "android-nnapi"), ["nnapi", "cpu"], 1);
      expect(s2.providers).toEqual(["nnapi", "cpu"]);
      expect(nativeOrt.requested).toEqual([["nnapi", "cpu"]]);
      await s2.release();
    });

    it("falls back to CPU when the listed accelerated provider throws, and reports CPU", async () => {
      const nnapiPhone = runnerOnPhoneWith(["cpu", "xnnpack", "nnapi"]);
      nativeOrt.refuse.set("nnapi", "executionProviders[0] is unsupported");
      const s = await nnapiPhone.openSession(artifactPath(1, "android-nnapi"), ["nnapi", "cpu"], 1);
      expect(s.providers).toEqual(["cpu"]);
      expect(nativeOrt.requested).toEqual([["nnapi", "cpu"], ["cpu"]]);
      await s.release();
    });

    it("the installed record carries what the golden check's session got", async () => {
      // The packager's plan for a tree ensemble is CPU only, even for android-nnapi (NNAPI
      // would run 0 of its nodes): an NNAPI phone is not asked for NNAPI at all.
      const nnapiPhone = runnerOnPhoneWith(["cpu", "xnnpack", "nnapi"]);
      const client = createReactNativeClient({
        ...(appConfig("rn-android-nnapi") as Omit<AppConfig, "enrollmentToken">),
        runner: new nnapiPhone.ReactNativeOrtRunner(),
        channel: "stable",
      });
      await client.register(svc.enrollment_token);
      const r = await client.sync();
      expect(r.outcome).toBe("updated");
      const current = (await client.currentModel()) as ActiveModel;
      expect(current.providers).toEqual(["cpu"]);
      expect(nativeOrt.requested).toEqual([["cpu"]]);
    });
  });

  describe("offline packs", () => {
    it("a pack the service exported, copied to the phone, installs with no network", async () => {
      const res = await fetch(`${svc.url}/v1/fleets/${svc.fleet}/channels/${svc.channel}/pack`, {
        method: "POST",
        headers: { Authorization: `Bearer ${svc.publisher_token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ targets: ["android-nnapi"], valid_days: 3 }),
      });
      expect(res.status).toBe(200);
      const file = join(DocumentDirectoryPath, "site.mspack");
      writeFileSync(file, new Uint8Array(await res.arrayBuffer()));
      const config = appConfig("rn-pack-site") as Omit<AppConfig, "enrollmentToken">;
      await createReactNativeClient({ ...config, channel: "stable" }).register(svc.enrollment_token);
      const noNetwork: HttpFetch = async (url) => {
        throw new Error(`no network on site (${url})`);
      };
      const site = createReactNativeClient({ ...config, channel: "stable", fetch: noNetwork });
      const r = await installFromPackFile(site, file);
      expect(r.models.map((m) => [m.version, m.outcome, m.reason])).toEqual([[1, "installed", undefined]]);
      const current = (await site.currentModel()) as ActiveModel;
      expect([current.version, current.source]).toEqual([1, "installed"]);
      expect(await site.pendingReports()).toHaveLength(1);
    });
  });

  describe("the app", () => {
    it("first sync, then an update arriving while it is mounted; the score goes out as a behaviour report", async () => {
      const posted: { events: { kind: string; model?: string; version?: number; data?: any }[]; status: number }[] = [];
      const recording: HttpFetch = async (url, init) => {
        const res = (await fetch(url, init as RequestInit)) as unknown as Awaited<ReturnType<HttpFetch>>;
        if (url.endsWith("/reports")) posted.push({ events: JSON.parse(String(init.body)).events, status: res.status });
        return res;
      };
      await render(<App config={appConfig("rn-app-1", { fetch: recording })} />);
      expect(await screen.findByText(/v1 \(installed, cpu\)/, {}, LONG)).toBeTruthy();
      expect(await screen.findByText(/normal|ANOMALY/, {}, LONG)).toBeTruthy();
      expect(screen.getByText(/^up_to_date$|^updated$/)).toBeTruthy();

      await release(2);
      fireEvent.press(screen.getByText("Sync now"));
      expect(await screen.findByText(/v2 \(installed, cpu\)/, {}, LONG)).toBeTruthy();
      expect(await screen.findByText("updated", {}, LONG)).toBeTruthy();

      // The sample v1 scored, reported with that sync: no inference_stats any more.
      const events = posted.flatMap((p) => p.events);
      expect(events.map((e) => e.kind)).not.toContain("inference_stats");
      const reports = events.filter((e) => e.kind === "behaviour");
      expect(reports).toHaveLength(1);
      const [report] = reports;
      expect([report!.model, report!.version]).toEqual(["fleet-iforest", 1]);
      const data = report!.data;
      expect(Object.keys(data).sort()).toEqual(["anomalies", "calls", "histogram", "latency_ms", "provider", "rows", "since"]);
      expect(data.rows).toBeGreaterThanOrEqual(1);
      expect(data.calls).toBe(data.rows); // one sample row per call
      expect(data.anomalies).toBeLessThanOrEqual(data.rows);
      const edges: number[] = svc.bundles["1"]!.manifest.signed.behaviour.score_edges;
      expect(data.histogram).toHaveLength(edges.length + 1);
      expect(data.histogram.reduce((a: number, b: number) => a + b, 0)).toBe(data.rows);
      expect(data.provider).toBe("CPUExecutionProvider");
      expect(data.latency_ms.p50).toBeLessThanOrEqual(data.latency_ms.p95);
      expect(posted.every((p) => p.status === 200)).toBe(true);
    });

    it("starts offline from the model embedded in the app bundle", async () => {
      mkdirSync(join(BUNDLE, "models"), { recursive: true });
      copyFileSync(artifactPath(1), join(BUNDLE, "models", "fleet-iforest-v1.ort"));
      const storage = new ReactNativeStorage(`${DocumentDirectoryPath}/rn-app-offline`);
      const path = await storage.embeddedModel("models/fleet-iforest-v1.ort", "fleet-iforest-v1.ort");
      netState.override = { type: "none" };
      await render(
        <App
          config={appConfig("rn-app-offline", {
            storage,
            embedded: [{ name: "fleet-iforest", version: 1, path }],
            fetch: () => Promise.reject(new TypeError("Network request failed")),
          })}
        />,
      );
      expect(await screen.findByText(/v1 \(embedded, cpu\)/, {}, LONG)).toBeTruthy();
      expect(await screen.findByText(/normal|ANOMALY/, {}, LONG)).toBeTruthy();
    });

    it("syncs on start and on coming back to the foreground, never twice at once", async () => {
      let indexRequests = 0;
      const counting: HttpFetch = (url, init) => {
        if (url.includes("/index")) indexRequests += 1;
        return fetch(url, init as RequestInit) as unknown as ReturnType<HttpFetch>;
      };
      const listeners = (): ((state: string) => void)[] =>
        jest.mocked(AppState.addEventListener).mock.calls.map((c) => c[1] as (state: string) => void);
      jest.mocked(AppState.addEventListener).mockClear();
      await render(<App config={appConfig("rn-app-foreground", { fetch: counting })} />);
      expect(await screen.findByText(/v2 \(installed, cpu\)/, {}, LONG)).toBeTruthy();
      await waitFor(() => expect(screen.getByText("updated")).toBeTruthy(), LONG);
      expect(indexRequests).toBe(1);

      // Background and foreground twice in a row: the second comes while the first sync
      // runs, and shares it.
      const onChange = listeners().at(-1)!;
      await act(async () => {
        onChange("background");
        onChange("active");
        onChange("background");
        onChange("active");
      });
      await waitFor(() => expect(screen.getByText("up_to_date")).toBeTruthy(), LONG);
      expect(indexRequests).toBe(2);
    });

    it("activation next-start: staged while the embedded model serves, current after the next start", async () => {
      mkdirSync(join(BUNDLE, "models"), { recursive: true });
      copyFileSync(artifactPath(1), join(BUNDLE, "models", "fleet-iforest-v1.ort"));
      const storage = new ReactNativeStorage(`${DocumentDirectoryPath}/rn-app-next-start`);
      const path = await storage.embeddedModel("models/fleet-iforest-v1.ort", "fleet-iforest-v1.ort");
      const config = appConfig("rn-app-next-start", {
        storage,
        embedded: [{ name: "fleet-iforest", version: 1, path }],
        activation: "next-start",
      });
      const first = await render(<App config={config} />);
      expect(await screen.findByText("v2 from the next start", {}, LONG)).toBeTruthy();
      expect(screen.getByText("staged")).toBeTruthy();
      expect(screen.getByText(/v1 \(embedded, cpu\)/)).toBeTruthy();
      await first.unmount();

      // a new App is a new client over the same state directory: the app's next start
      await render(<App config={config} />);
      expect(await screen.findByText(/v2 \(installed, cpu\)/, {}, LONG)).toBeTruthy();
      await waitFor(() => expect(screen.getByText("up_to_date")).toBeTruthy(), LONG);
      expect(screen.queryByText(/from the next start/)).toBeNull();
    });

    // Last: releasing v3 at 100% changes what every later device is offered.
    it("keeps the old model when the new one fails its golden vectors", async () => {
      await render(<App config={appConfig("rn-app-golden")} />);
      expect(await screen.findByText(/v2 \(installed, cpu\)/, {}, LONG)).toBeTruthy();
      await release(3);
      fireEvent.press(screen.getByText("Sync now"));
      expect(await screen.findByText("failed", {}, LONG)).toBeTruthy();
      expect(screen.getByText(/v2 \(installed, cpu\)/)).toBeTruthy();
    });
  });
});
