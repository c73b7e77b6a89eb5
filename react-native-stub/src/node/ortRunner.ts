/** The golden-vector runner on onnxruntime-node (CPU binaries shipped in the package):
 * the same onnxruntime-common API as onnxruntime-react-native. */
import * as ort from "onnxruntime-node";

import type { InferenceRunner, LoadedModel, ModelOutputs } from "../core/ports";

/** onnxruntime-node runs the CPU provider; NNAPI and CoreML exist only on phones. */
export const NODE_PROVIDERS = ["cpu"];

export async function runRows(
  session: ort.InferenceSession,
  rows: readonly (readonly number[])[],
  fixedBatch: number | null,
): Promise<ModelOutputs> {
  const width = rows[0]?.length ?? 0;
  const batches: (readonly (readonly number[])[])[] = [];
  const step = fixedBatch ?? Math.max(rows.length, 1);
  for (let i = 0; i < rows.length; i += step) batches.push(rows.slice(i, i + step));
  const label: number[] = [];
  const score: number[] = [];
  for (const batch of batches) {
    const data = Float32Array.from(batch.flat());
    const input = new ort.Tensor("float32", data, [batch.length, width]);
    const out = await session.run({ [session.inputNames[0]!]: input });
    const l = out.label;
    const s = out.score;
    if (l === undefined || s === undefined) throw new Error("model has no `label` and `score` outputs");
    for (const v of Array.from(l.data as ArrayLike<number | bigint>)) label.push(Number(v));
    for (const v of Array.from(s.data as ArrayLike<number>)) score.push(Number(v));
  }
  return { label, score };
}

export class NodeOrtRunner implements InferenceRunner {
  async load(path: string, providers: readonly string[], fixedBatch: number | null): Promise<LoadedModel> {
    const eps = providers.filter((p) => NODE_PROVIDERS.includes(p));
    const session = await ort.InferenceSession.create(path, {
      executionProviders: eps.length > 0 ? eps : ["cpu"],
      graphOptimizationLevel: "all",
    });
    return {
      run: (rows) => runRows(session, rows, fixedBatch),
      release: () => session.release(),
    };
  }
}
