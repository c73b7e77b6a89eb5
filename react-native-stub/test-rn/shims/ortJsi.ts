/**
 * The JSI global `OrtApi` that onnxruntime-react-native's C++ installs (cpp/JsiMain.cpp),
 * backed here by onnxruntime-node's N-API binding, which has the same shape (a session
 * object with loadModel/run/dispose and raw metadata; initOrtOnce with the caller's Tensor
 * constructor). onnxruntime-react-native's own JavaScript runs on top unchanged.
 *
 * The binding is required directly, not through onnxruntime-node's index: that index
 * registers onnxruntime-node's backends with onnxruntime-common at a higher priority, and
 * InferenceSession.create would then bypass onnxruntime-react-native altogether.
 *
 * What the phone's build differs in is configurable: the providers it lists
 * (`backends`), and providers whose session creation fails (`refuse`), as a device
 * whose driver refuses the model does. Providers the Node binary lacks (nnapi, coreml,
 * xnnpack) are accepted and run on its CPU kernels, which is what those providers fall
 * back to for nodes they do not claim.
 */
import { join } from "node:path";

interface RawSession {
  loadModel(...args: unknown[]): void;
  readonly inputMetadata: unknown[];
  readonly outputMetadata: unknown[];
  run(feeds: unknown, fetches: unknown, options: unknown): unknown;
  endProfiling(): void;
  dispose(): void;
}

interface Binding {
  InferenceSession: new () => RawSession;
  initOrtOnce(logLevel: number, tensor: unknown): void;
  listSupportedBackends(): { name: string }[];
}

type EP = string | { name: string };

export const nativeOrt = {
  /** What the native side's listSupportedBackends() answers (SessionUtils.cpp: cpu and
   * xnnpack always; nnapi or coreml when the build has them). */
  backends: ["cpu", "xnnpack"] as string[],
  /** Providers whose session creation throws, with the message the native side gives. */
  refuse: new Map<string, string>(),
  /** Execution providers each loadModel call received, in call order. */
  requested: [] as string[][],
  reset(): void {
    this.backends = ["cpu", "xnnpack"];
    this.refuse.clear();
    this.requested.length = 0;
  },
};

const NODE_KNOWS = new Set(["cpu"]);

function loadBinding(): Binding {
  const pkg = require.resolve("onnxruntime-node/package.json");
  const file = join(pkg, "..", "bin", "napi-v6", process.platform, process.arch, "onnxruntime_binding.node");
  return require(file) as Binding;
}

export function installOrtApi(): void {
  const binding = loadBinding();
  const api = {
    version: "1.24.3",
    listSupportedBackends: () => nativeOrt.backends.map((name) => ({ name })),
    initOrtOnce: (logLevel: number, tensor: unknown) => binding.initOrtOnce(logLevel, tensor),
    createInferenceSession: () => {
      const raw = new binding.InferenceSession();
      return {
        async loadModel(...args: unknown[]): Promise<void> {
          const options = { ...(args[args.length - 1] as Record<string, unknown>) };
          const eps = ((options.executionProviders as EP[] | undefined) ?? []).map((e) => (typeof e === "string" ? e : e.name));
          nativeOrt.requested.push(eps);
          for (const ep of eps) {
            if (!nativeOrt.backends.includes(ep)) throw new Error(`Unsupported execution provider: ${ep}`);
            const refusal = nativeOrt.refuse.get(ep);
            if (refusal !== undefined) throw new Error(refusal);
          }
          delete options.ortExtLibPath;
          options.executionProviders = eps.filter((e) => NODE_KNOWS.has(e));
          raw.loadModel(...args.slice(0, -1), options);
        },
        get inputMetadata() {
          return raw.inputMetadata;
        },
        get outputMetadata() {
          return raw.outputMetadata;
        },
        async run(feeds: unknown, fetches: unknown, options: unknown) {
          return raw.run(feeds, fetches, options);
        },
        endProfiling: () => raw.endProfiling(),
        dispose: () => raw.dispose(),
      };
    },
  };
  (globalThis as { OrtApi?: unknown }).OrtApi = api;
}
