/** The React Native entry point: the client wired to the phone's file system, network
 * state and onnxruntime-react-native, and the hook. */
import { type ClientOptions, ModelSyncClient } from "../core/client";
import { NetInfoNetwork } from "./network";
import { ReactNativeOrtRunner } from "./ortRunner";
import { ReactNativeStorage } from "./storage";

export * from "../core";
export { NetInfoNetwork } from "./network";
export { ReactNativeOrtRunner, openSession } from "./ortRunner";
export { ReactNativeStorage } from "./storage";
export { installFromPackFile, readPackFile } from "./pack";
export {
  type AnomalyModel,
  type ModelSession,
  type Score,
  type SessionOpener,
  type UseAnomalyModelOptions,
  useAnomalyModel,
  useModel,
} from "./useAnomalyModel";

/** onnxruntime-react-native's version: artifacts written by a newer minor are refused
 * (check 3.7). Keep in step with package.json. */
export const ORT_REACT_NATIVE_VERSION = "1.24.3";

export type ReactNativeClientOptions = Omit<
  ClientOptions,
  "storage" | "fetch" | "network" | "runner" | "ortVersion"
> &
  Partial<Pick<ClientOptions, "storage" | "fetch" | "network" | "runner" | "ortVersion">>;

export function createReactNativeClient(opts: ReactNativeClientOptions): ModelSyncClient {
  return new ModelSyncClient({
    storage: new ReactNativeStorage(),
    // The signal is the AbortSignal of the sync deadline (ports.ts).
    fetch: (url, init) => fetch(url, init as RequestInit),
    network: new NetInfoNetwork(),
    runner: new ReactNativeOrtRunner(),
    ortVersion: ORT_REACT_NATIVE_VERSION,
    availableProviders: opts.platform === "android" ? ["nnapi", "cpu"] : opts.platform === "ios" ? ["coreml", "cpu"] : ["cpu"],
    ...opts,
  });
}
