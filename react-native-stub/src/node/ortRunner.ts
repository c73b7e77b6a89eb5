/** The golden-vector runner on onnxruntime-node (CPU binaries shipped in the package):
 * the same onnxruntime-common API as onnxruntime-react-native. */
import * as ort from "onnxruntime-node";

import { type OrtSessionLike, runRows } from "../core/ortSession";
import type { InferenceRunner, LoadedModel } from "../core/ports";

/** onnxruntime-node runs the CPU provider here; NNAPI and CoreML exist only on phones. */
export const NODE_PROVIDERS = ["cpu"];

const tensor = (data: Float32Array, dims: readonly number[]): ort.Tensor => new ort.Tensor("float32", data, dims);

/** A session on onnxruntime-node; the shape the hook's SessionOpener returns. */
export async function openNodeSession(
  path: string,
  providers: readonly string[],
  fixedBatch: number | null,
): Promise<LoadedModel & { providers: string[] }> {
  const eps = providers.filter((p) => NODE_PROVIDERS.includes(p));
  const used = eps.length > 0 ? eps : ["cpu"];
  const session = await ort.InferenceSession.create(path, { executionProviders: used, graphOptimizationLevel: "all" });
  return {
    providers: used,
    run: (rows) => runRows(session as unknown as OrtSessionLike, tensor, rows, fixedBatch),
    release: () => session.release(),
  };
}

export class NodeOrtRunner implements InferenceRunner {
  load(path: string, providers: readonly string[], fixedBatch: number | null): Promise<LoadedModel> {
    return openNodeSession(path, providers, fixedBatch);
  }
}
