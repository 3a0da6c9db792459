// LoRA file formats: load any of kohya / diffusers / PEFT into one in-memory form, save as any.
export { loadLoraFile } from "./formats/load.js";
export { FOLDED_ALPHAS_KEY } from "./formats/fold_record.js";
export type { LoadLoraOptions } from "./formats/load.js";
export { saveLora } from "./formats/save.js";
export type { LoraSaveFormat, SaveLoraOptions, SaveLoraResult } from "./formats/save.js";
export { baseModuleNamesFromModel, kohyaResolver, toKohyaName } from "./formats/names.js";
export type { BaseModuleNames, KohyaNameOptions, KohyaResolver } from "./formats/names.js";
export {
  diffusersToLdm,
  ldmToDiffusers,
  SD_UNET_LAYOUT,
  SDXL_UNET_LAYOUT,
  unetLayoutFromModuleNames,
} from "../models/ldm.js";
export type { UnetLayout } from "../models/ldm.js";
export { kohyaHashes, kohyaModelVersion, kohyaTrainingMetadata } from "./formats/kohya_metadata.js";
export type { KohyaTrainingInfo } from "./formats/kohya_metadata.js";
export { summarizeLora, formatLoraSummary } from "./formats/summary.js";
export type { LoraBlockSummary, LoraComponentSummary, LoraSummary } from "./formats/summary.js";
export { disposeLora, LoraFormatError, LORA_COMPONENTS, splitAdapterKey } from "./formats/types.js";
export type {
  LoraAdapter,
  LoraComponent,
  LoraFormat,
  LoraWeights,
  LycorisAdapter,
  LycorisType,
} from "./formats/types.js";
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
} from "./adapters/apply.js";
export type {
  ApplyLoraOptions,
  CreateLoraOptions,
  FuseLoraOptions,
  LoraAdapterInfo,
  LoraInit,
  LoraModels,
  LoraType,
  LoraTargets,
  TrainableLora,
} from "./adapters/apply.js";
export { matchTargets } from "./adapters/targets.js";
export type { ModuleEntry } from "./adapters/targets.js";
export { mergeLoraIntoModel } from "./adapters/merge.js";
export type { MergeLoraOptions, MergeLoraResult, MergeLoraSpec } from "./adapters/merge.js";
// LoRA tools: extraction from two models, resizing, merging several LoRAs into one, block weights.
export { extractLoraFromModels } from "./tools/extract.js";
export type { ExtractLoraOptions, ExtractLoraResult, ExtractedLayer } from "./tools/extract.js";
export { resizeLora } from "./tools/resize.js";
export type { ResizeLoraOptions, ResizeLoraResult, ResizedLayer } from "./tools/resize.js";
export { mergeLoras } from "./tools/merge_into.js";
export type { MergeLorasOptions, MergeLorasResult, MergeLorasSpec } from "./tools/merge_into.js";
export {
  applyBlockWeights,
  LBW_BLOCKS_17,
  LBW_BLOCKS_26,
  LBW_PRESETS,
  loraBlockOf,
  parseBlockWeights,
} from "./tools/block_weights.js";
export { IncompatibleLoraError, trainedFor } from "./formats/trained_for.js";
export { parseLoraTags } from "./tools/prompt_tags.js";
export type { LoraTag } from "./tools/prompt_tags.js";
