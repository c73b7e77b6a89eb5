/**
 * Running `label`/`score` artifacts through an onnxruntime-common InferenceSession, shared
 * by onnxruntime-node (tests) and onnxruntime-react-native (the app). Structural types
 * only: the core imports neither runtime.
 */
import type { ModelOutputs } from "./ports";
import { supportedPlan } from "./providers";

export interface OrtTensorLike {
  readonly data: unknown;
}

export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  run(feeds: Record<string, never>): Promise<Record<string, OrtTensorLike | undefined>>;
  release(): Promise<void>;
}

export type TensorFactory = (data: Float32Array, dims: readonly number[]) => unknown;

/** Every artifact has one float32 input [N, F] and outputs `label` (int64) and `score`
 * (float32). NPU targets may fix N to 1: then rows go one batch at a time. */
export async function runRows(
  session: OrtSessionLike,
  tensor: TensorFactory,
  rows: readonly (readonly number[])[],
  fixedBatch: number | null,
): Promise<ModelOutputs> {
  const width = rows[0]?.length ?? 0;
  const step = fixedBatch ?? Math.max(rows.length, 1);
  const label: number[] = [];
  const score: number[] = [];
  const inputName = session.inputNames[0];
  if (inputName === undefined) throw new Error("model has no input");
  for (let i = 0; i < rows.length; i += step) {
    const batch = rows.slice(i, i + step);
    const data = new Float32Array(batch.length * width);
    batch.forEach((row, r) => {
      if (row.length !== width) throw new Error(`row ${i + r} has ${row.length} features, expected ${width}`);
      data.set(row, r * width);
    });
    const out = await session.run({ [inputName]: tensor(data, [batch.length, width]) } as Record<string, never>);
    const l = out.label;
    const s = out.score;
    if (l === undefined || s === undefined) throw new Error("model has no `label` and `score` outputs");
    for (const v of Array.from(l.data as ArrayLike<number | bigint>)) label.push(Number(v));
    for (const v of Array.from(s.data as ArrayLike<number>)) score.push(Number(v));
  }
  return { label, score };
}

/** A session and the execution providers it was created with. */
export interface OpenedSession<S> {
  session: S;
  providers: string[];
}

/** Create a session on the planned providers the runtime supports (supportedPlan); when an
 * accelerated provider is listed but refuses the model (a driver without the op, an
 * "Unsupported execution provider" from the native side), retry on CPU alone: the manifest's
 * plan promises the CPU provider runs every artifact. The providers returned are the ones
 * the session that came back was created with. */
export async function createOnProviders<S>(
  create: (executionProviders: string[]) => Promise<S>,
  planned: readonly string[],
  supported: readonly string[],
): Promise<OpenedSession<S>> {
  const providers = supportedPlan(planned, supported);
  try {
    return { session: await create(providers), providers };
  } catch (err) {
    if (providers.length === 1) throw err;
    return { session: await create(["cpu"]), providers: ["cpu"] };
  }
}
