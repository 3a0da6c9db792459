// Single-file checkpoints (the original LDM layout of AUTOMATIC1111 / ComfyUI / civitai .safetensors):
// detection, conversion both ways, and their use wherever a model folder is expected.
export { checkSingleFilePath, inspectSingleFile, isSingleFilePath, type SingleFileInfo } from "./detect.js";
export { planSingleFile, type PredictionType, type SingleFileOptions, type SingleFilePlan } from "./plan.js";
export { resolveSingleFile, type ResolveSingleFileOptions } from "./resolve.js";
export { convertSingleFileToDiffusers, type ToDiffusersOptions } from "./to_diffusers.js";
export {
  convertDiffusersToSingleFile,
  resaveSingleFile,
  textLayoutOf,
  writeSingleFile,
  type ComponentTensors,
  type ToSingleFileOptions,
} from "./to_single.js";
export { saveSingleFile, type SaveSingleFileOptions } from "./save.js";
export type { TextLayout } from "./text_keys.js";
