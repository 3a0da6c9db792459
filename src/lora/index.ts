// LoRA file formats: load any of kohya / diffusers / PEFT into one in-memory form, save as any.
export { loadLoraFile } from "./load.js";
export { FOLDED_ALPHAS_KEY } from "./fold_record.js";
export type { LoadLoraOptions } from "./load.js";
export { saveLora } from "./save.js";
export type { LoraSaveFormat, SaveLoraOptions, SaveLoraResult } from "./save.js";
export { baseModuleNamesFromModel, kohyaResolver, toKohyaName } from "./names.js";
export type { BaseModuleNames, KohyaNameOptions, KohyaResolver } from "./names.js";
export { diffusersToLdm, ldmToDiffusers, SD_UNET_LAYOUT, SDXL_UNET_LAYOUT, unetLayoutFromModuleNames } from "./ldm.js";
export type { UnetLayout } from "./ldm.js";
export { kohyaHashes, kohyaModelVersion, kohyaTrainingMetadata } from "./kohya_metadata.js";
export type { KohyaTrainingInfo } from "./kohya_metadata.js";
export { summarizeLora, formatLoraSummary } from "./summary.js";
export type { LoraBlockSummary, LoraComponentSummary, LoraSummary } from "./summary.js";
export { disposeLora, LoraFormatError, LORA_COMPONENTS, splitAdapterKey } from "./types.js";
export type { LoraAdapter, LoraComponent, LoraFormat, LoraWeights } from "./types.js";
export {
  applyLora,
  applyLoraFile,
  createTrainableLora,
  extractLora,
  fuseLora,
  listLoras,
  loraParameters,
  removeLora,
  setLoraEnabled,
  setLoraScales,
  unfuseLora,
} from "./adapters.js";
export type {
  ApplyLoraOptions,
  CreateLoraOptions,
  FuseLoraOptions,
  LoraAdapterInfo,
  LoraInit,
  LoraModels,
  LoraTargets,
  TrainableLora,
} from "./adapters.js";
export { matchTargets } from "./targets.js";
export type { ModuleEntry } from "./targets.js";
export { mergeLoraIntoModel } from "./merge.js";
export type { MergeLoraOptions, MergeLoraResult, MergeLoraSpec } from "./merge.js";
