/** The golden-vector runner on onnxruntime-node (CPU binaries shipped in the package):
 * the same onnxruntime-common API as onnxruntime-react-native. */
import * as ort from "onnxruntime-node";

import { type OrtSessionLike, createOnProviders, runRows } from "../core/ortSession";
import type { InferenceRunner, LoadedModel } from "../core/ports";

/** What onnxruntime-node's binding lists as bundled (cpu, webgpu; cuda needs a download);
 * NNAPI and CoreML exist only on phones. */
export const NODE_PROVIDERS: readonly string[] = ort
  .listSupportedBackends()
  .filter((b) => b.bundled)
  .map((b) => b.name);

const tensor = (data: Float32Array, dims: readonly number[]): ort.Tensor => new ort.Tensor("float32", data, dims);

/** A session on onnxruntime-node; the shape the hook's SessionOpener returns. */
export async function openNodeSession(
  path: string,
  providers: readonly string[],
  fixedBatch: number | null,
): Promise<LoadedModel & { providers: string[] }> {
  const opened = await createOnProviders(
    (executionProviders) => ort.InferenceSession.create(path, { executionProviders, graphOptimizationLevel: "all" }),
    providers,
    NODE_PROVIDERS,
  );
  const session = opened.session;
  return {
    providers: opened.providers,
    run: (rows) => runRows(session as unknown as OrtSessionLike, tensor, rows, fixedBatch),
    release: () => session.release(),
  };
}

export class NodeOrtRunner implements InferenceRunner {
  load(path: string, providers: readonly string[], fixedBatch: number | null): Promise<LoadedModel> {
    return openNodeSession(path, providers, fixedBatch);
  }
}
