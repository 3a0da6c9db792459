// Datasets and the training image pipeline: readers, aspect buckets, the batch stream.
export { openDataset, resolveDatasetPath, detectType } from "./dataset.js";
export { createBatchStream, createRawBatchStream } from "./batches.js";
export type { Batch, BatchInfo, BatchOptions, BatchStream, ExampleCrop, RawBatch, StreamPosition } from "./batches.js";
export { makeBuckets, resolveBucketOptions, selectBucket, fitToBucket } from "./buckets.js";
export type { Bucket, BucketOptions, BucketStat } from "./buckets.js";
export { processCaption, containsToken, checkInstanceToken } from "./caption-text.js";
export type { CaptionOptions } from "./caption-text.js";
export { keyedRng } from "./rng.js";
export type { Rng } from "./rng.js";
export { DatasetError, DATA_DEFAULTS } from "./types.js";
export type {
  DataItem,
  Dataset,
  DatasetIssue,
  DatasetSpec,
  DatasetType,
  ImageSource,
  IssueCode,
  ItemRole,
  OpenOptions,
} from "./types.js";
export { checkDataset } from "./check.js";
export type { CheckOptions, CheckReport } from "./check.js";
export { buildImageFolder } from "./build.js";
export type { BuildOptions, BuildResult } from "./build.js";
