/** From the manifest's EP plan (onnxruntime's C++ provider names) to the names
 * onnxruntime-common sessions take, in plan order, CPU always last as the fallback. */
import type { Artifact } from "./schema";

const JS_NAMES: Record<string, string> = {
  NNAPIExecutionProvider: "nnapi",
  CoreMLExecutionProvider: "coreml",
  XnnpackExecutionProvider: "xnnpack",
  CPUExecutionProvider: "cpu",
};

/** `available` limits the list to what this runtime build has (onnxruntime-node has no
 * nnapi or coreml; onnxruntime-react-native has the platform's own one). */
export function executionProviders(artifact: Artifact, available?: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of artifact.ep_plan.providers) {
    const name = JS_NAMES[p] ?? p.replace(/ExecutionProvider$/, "").toLowerCase();
    if (name === "cpu" || out.includes(name)) continue;
    if (available === undefined || available.includes(name)) out.push(name);
  }
  out.push("cpu");
  return out;
}

/** The batch size the artifact's input is fixed to, or null when it is dynamic. */
export function fixedBatch(artifact: Artifact): number | null {
  const first = artifact.input_shape[0];
  return typeof first === "number" && first > 0 ? first : null;
}

/** The providers a session is asked for: the planned ones the runtime lists as supported,
 * in plan order, CPU last. onnxruntime-common silently drops a provider its backend
 * registry lacks (a console warning only), so a request it cannot honour would later be
 * reported as used; asking only for what the native side lists keeps the report true. */
export function supportedPlan(planned: readonly string[], supported: readonly string[]): string[] {
  const out = planned.filter((p, i) => p !== "cpu" && supported.includes(p) && planned.indexOf(p) === i);
  out.push("cpu");
  return out;
}
