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
export * from "./lora/index.js";
