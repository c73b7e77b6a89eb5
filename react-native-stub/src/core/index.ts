/** Platform-neutral core: import from here in any runtime. */
export * from "./client";
export {
  BehaviourWindow,
  LATENCY_SAMPLES,
  MAX_BINS,
  behaviourProblem,
  binOf,
  histogram,
  nearestRank,
  ortProviderName,
} from "./behaviour";
export type { BehaviourData, BehaviourLatency } from "./behaviour";
export { matches as matchesCohort, parseRule as parseCohortRule, parseVersion, ruleJson as cohortRuleJson } from "./cohort";
export type { Rule as CohortRule, Version } from "./cohort";
export * from "./documents";
export * from "./errors";
export * from "./pack";
export * from "./ports";
export * from "./providers";
export * from "./rollout";
export * from "./schema";
export { AgreementWindow, RANK_PAIRS_MAX, meanRanks, shadowProblem, spearman, windowKey } from "./shadow";
export type { SavedWindow, ShadowData } from "./shadow";
export * from "./trust";
export { canonicalBytes, canonicalText } from "./canonical";
export { modelFilePath } from "./paths";
export type { DeviceIdentity, Installed, PackFloor, Pointer } from "./state";
export type { Activation, StagedModel } from "./staging";
export type { HeldRecord } from "./held";
export type { ReportEvent, ReportKind } from "./reports";
