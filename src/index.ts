// The public API of sdtune.
export { native, addonPath } from "./native.js";
export type {
  AnyTypedArray,
  CancelToken,
  DType,
  ProgressEvent,
  RuntimeInfo,
  SafetensorsHeader,
  SafetensorsTensorInfo,
  Tensor,
  TypedArrayOf,
} from "./native.js";
export { tensorFrom, disposeAll, cancelTokenFor } from "./tensor.js";
export { inspectSafetensors, readSafetensors, writeSafetensors } from "./io/safetensors.js";
export type { SafetensorsContents, TensorEntries } from "./io/safetensors.js";
export {
  resolveModel,
  resolveFiles,
  resolveDataset,
  CLIP_FILES,
  DATASET_PATTERNS,
  HubError,
  hubCacheDir,
} from "./hub/index.js";
export type {
  HubErrorCode,
  HubProgressEvent,
  ResolveDatasetOptions,
  ResolveFilesOptions,
  ResolveModelOptions,
} from "./hub/index.js";
