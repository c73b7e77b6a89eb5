/** useAnomalyModel(): the hook an app uses, on onnxruntime-react-native sessions created
 * in the manifest's execution-provider order (see ortRunner.ts). */
import { AppState } from "react-native";

import type { ModelSyncClient } from "../core/client";
import { openSession } from "./ortRunner";
import { type AnomalyModel, type UseAnomalyModelOptions, useModel } from "./useModel";

export type { AnomalyModel, AppStateLike, ModelSession, Score, SessionOpener, UseAnomalyModelOptions } from "./useModel";
export { useModel } from "./useModel";

export function useAnomalyModel(client: ModelSyncClient, options: UseAnomalyModelOptions = {}): AnomalyModel {
  return useModel(client, openSession, { appState: AppState, ...options });
}
