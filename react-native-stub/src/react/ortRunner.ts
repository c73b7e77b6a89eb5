/** onnxruntime-react-native sessions: the golden-vector runner the client uses before it
 * activates a model, and the session the hook serves inference from. */
import { InferenceSession, Tensor, listSupportedBackends } from "onnxruntime-react-native";

import { modelFilePath } from "../core/paths";
import { type OrtSessionLike, createOnProviders, runRows } from "../core/ortSession";
import type { InferenceRunner, LoadedModel } from "../core/ports";
import type { ModelSession } from "./useModel";

const tensor = (data: Float32Array, dims: readonly number[]): Tensor => new Tensor("float32", data, dims);

/** The providers this app's native onnxruntime build has (its JSI `listSupportedBackends`:
 * cpu and xnnpack always, nnapi or coreml when built in). */
export function nativeProviders(): string[] {
  return listSupportedBackends().map((b) => b.name);
}

/** Create a session on the plan's providers the native side supports (e.g. nnapi, then
 * cpu), falling back to CPU when the accelerated one refuses; `providers` in the result is
 * what the session was really created with. */
export async function openSession(
  pathOrUri: string,
  providers: readonly string[],
  fixedBatch: number | null,
): Promise<ModelSession> {
  const path = modelFilePath(pathOrUri);
  const opened = await createOnProviders(
    (executionProviders) => InferenceSession.create(path, { executionProviders, graphOptimizationLevel: "all" }),
    providers,
    nativeProviders(),
  );
  const session = opened.session;
  return {
    providers: opened.providers,
    run: (rows) => runRows(session as unknown as OrtSessionLike, tensor, rows, fixedBatch),
    release: () => session.release(),
  };
}

export class ReactNativeOrtRunner implements InferenceRunner {
  async load(path: string, providers: readonly string[], fixedBatch: number | null): Promise<LoadedModel> {
    return openSession(path, providers, fixedBatch);
  }
}
