// The public API of sdtune.
export { native, addonPath } from "./native/index.js";
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
} from "./native/index.js";
export { tensorFrom, disposeAll, cancelTokenFor } from "./tensor.js";
export { inspectSafetensors, readSafetensors, writeSafetensors } from "./io/safetensors.js";
export type { SafetensorsContents, TensorEntries } from "./io/safetensors.js";
export { ClipTokenizer } from "./text/clip_tokenizer.js";
export type { DecodeOptions, EncodedBatch, EncodeOptions } from "./text/clip_tokenizer.js";

// CLIP: Stable Diffusion's text encoder and the full CLIP model.
export { TextEncoder } from "./models/text_encoder.js";
export type { TextEncoderForward } from "./models/text_encoder.js";
export type { ModelDType, ModelLoadOptions } from "./models/options.js";
export { ClipModel } from "./models/clip.js";
export {
  clipTextConfigSchema,
  clipVisionConfigSchema,
  parseClipConfig,
  parseClipTextEncoderConfig,
} from "./models/clip_config.js";
export type { ClipConfig, ClipTextConfig, ClipVisionConfig } from "./models/clip_config.js";
export type { TextEncoderOutput } from "./native/index.js";

// Datasets and the training image pipeline (src/data).
export {
  openDataset,
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
  DatasetSpec,
  RawBatch,
  StreamPosition,
} from "./data/index.js";
// Training caches (src/data/cache): VAE latents and text embeddings on disk.
export * from "./cache/index.js";
export * from "./lora/index.js";
export {
  NoiseSchedule,
  SAMPLER_FOR_CLASS,
  createGenerator,
  createScheduler,
  defaultSamplerName,
  readSchedulerConfig,
  samplerNames,
  schedulerConfigSchema,
} from "./sched/index.js";
export type {
  Generator,
  SamplerName,
  Scheduler,
  SchedulerConfig,
  SchedulerOverrides,
  SchedulerStepResult,
} from "./sched/index.js";
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
export { UNet, loadUNet } from "./models/unet.js";
export { VAE, loadVAE } from "./models/vae.js";
export type { VAECallOptions, VAEDecodeOptions, VAELoadOptions } from "./models/vae.js";
export {
  ConfigError,
  nativeUNetConfig,
  nativeVAEConfig,
  parseUNetConfig,
  parseVAEConfig,
  unetConfigSchema,
  vaeConfigSchema,
} from "./models/config.js";
export type { UNetConfig, VAEConfig } from "./models/config.js";
export type {
  LatentDistribution,
  NativeUNet,
  NativeUNetConfig,
  NativeVAE,
  NativeVAEConfig,
  ParameterInfo,
  UNetLossAndGradients,
} from "./native/index.js";

// Evaluation: CLIP score (torchmetrics semantics), CLIP-I / CLIP-T, grids, report (src/eval).
export {
  evaluate,
  evaluateRun,
  evalReportHref,
  runEvalDir,
  parseEvalConfig,
  ClipScorer,
  ClipScore,
  clipScore,
  aggregateClipScore,
  clipImageSimilarity,
  clipTextSimilarity,
  ClipImageProcessor,
  decodeRgb,
  setClipModelResolver,
  makeGrid,
  DEFAULT_CLIP_MODEL,
} from "./eval/index.js";
export type {
  ClipModelResolver,
  EvalConfig,
  EvalPipeline,
  EvalConfigInput,
  EvalResult,
  EvaluateOptions,
  EvaluateOutput,
  EvaluateRunOptions,
  ImageInput,
  Stat,
  VariantMetrics,
} from "./eval/index.js";

// Stable Diffusion pipelines: loadPipeline, generate, savePipeline (src/pipeline).
export * from "./pipeline/index.js";
export { checkModelOptions, MODEL_DTYPES } from "./models/options.js";

// Single-file checkpoints (A1111 / ComfyUI .safetensors in the LDM layout): read, convert, write (src/models/single_file).
export {
  convertDiffusersToSingleFile,
  convertSingleFileToDiffusers,
  inspectSingleFile,
  isSingleFilePath,
  planSingleFile,
  resaveSingleFile,
  resolveSingleFile,
  saveSingleFile,
  textLayoutOf,
  writeSingleFile,
} from "./models/single_file/index.js";
export type {
  PredictionType,
  ResolveSingleFileOptions,
  SaveSingleFileOptions,
  SingleFileInfo,
  SingleFileOptions,
  TextLayout,
  ToDiffusersOptions,
  ToSingleFileOptions,
} from "./models/single_file/index.js";
