/** onnxruntime-react-native sessions: the golden-vector runner the client uses before it
 * activates a model, and the session the hook serves inference from. */
import { InferenceSession, Tensor } from "onnxruntime-react-native";

import { modelFilePath } from "../core/paths";
import { type OrtSessionLike, runRows } from "../core/ortSession";
import type { InferenceRunner, LoadedModel } from "../core/ports";
import type { ModelSession } from "./useModel";

const tensor = (data: Float32Array, dims: readonly number[]): Tensor => new Tensor("float32", data, dims);

/** Create a session asking for the providers in plan order (e.g. nnapi, then cpu). A
 * device whose driver refuses the accelerated provider still gets the CPU one: that is
 * what the manifest's plan promises works. */
export async function openSession(
  pathOrUri: string,
  providers: readonly string[],
  fixedBatch: number | null,
): Promise<ModelSession> {
  const path = modelFilePath(pathOrUri);
  let used = [...providers];
  let session: InferenceSession;
  try {
    session = await InferenceSession.create(path, { executionProviders: used, graphOptimizationLevel: "all" });
  } catch (err) {
    if (used.length === 1 && used[0] === "cpu") throw err;
    used = ["cpu"];
    session = await InferenceSession.create(path, { executionProviders: used, graphOptimizationLevel: "all" });
  }
  return {
    providers: used,
    run: (rows) => runRows(session as unknown as OrtSessionLike, tensor, rows, fixedBatch),
    release: () => session.release(),
  };
}

export class ReactNativeOrtRunner implements InferenceRunner {
  async load(path: string, providers: readonly string[], fixedBatch: number | null): Promise<LoadedModel> {
    return openSession(path, providers, fixedBatch);
  }
}
