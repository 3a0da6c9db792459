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

// Datasets and the training image pipeline (src/data).
export {
  openDataset,
  resolveDataset,
  setDatasetResolver,
  createBatchStream,
  createRawBatchStream,
  makeBuckets,
  resolveBucketOptions,
  selectBucket,
  checkDataset,
  buildImageFolder,
  DatasetError,
} from "./data/index.js";
export type {
  Batch,
  BatchInfo,
  BatchOptions,
  BatchStream,
  BucketOptions,
  BucketStat,
  CheckReport,
  DataItem,
  Dataset,
  DatasetIssue,
  DatasetResolver,
  DatasetSpec,
  RawBatch,
  StreamPosition,
} from "./data/index.js";
