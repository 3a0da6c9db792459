// The public API of sdtune: the only module users and the CLI import. The addon itself
// (src/native/) is internal; what crosses it is typed here as plain data and handles.
export { resolveDevice, runtimeInfo, setNumThreads } from "./runtime.js";
export type { RuntimeReport } from "./runtime.js";
export type {
  AnyTypedArray,
  CancelToken,
  DType,
  ProgressEvent,
  SafetensorsHeader,
  SafetensorsTensorInfo,
  Tensor,
  TypedArrayOf,
} from "./native/index.js";
export { tensorFrom, disposeAll, cancelTokenFor } from "./tensor.js";
export { inspectSafetensors, readSafetensors, writeSafetensors } from "./io/safetensors.js";
export { formatBytes } from "./io/bytes.js";
export { formatDuration, ProgressBar } from "./io/progress_bar.js";
export type { ProgressBarOptions } from "./io/progress_bar.js";
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
} from "./config/clip.js";
export type { ClipConfig, ClipTextConfig, ClipVisionConfig } from "./config/clip.js";
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
// Training caches (src/cache): VAE latents and text embeddings on disk.
export * from "./cache/index.js";
export * from "./lora/index.js";
export {
  NoiseSchedule,
  SAMPLER_FOR_CLASS,
  createGenerator,
  createScheduler,
  defaultSamplerName,
  readSchedulerConfig,
  resolveSamplerName,
  samplerNames,
  schedulerConfigSchema,
} from "./sched/index.js";
export type {
  Generator,
  ResolvedSampler,
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
export { ConfigError } from "./config/errors.js";
export {
  ModelConfigError,
  parseUNetConfig,
  parseVAEConfig,
  unetConfigSchema,
  vaeConfigSchema,
} from "./config/models.js";
export type { UNetConfig, VAEConfig } from "./config/models.js";
export type { LatentDistribution, ParameterInfo, UNetLossAndGradients } from "./native/index.js";

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

// Training: train() runs a config (one or more stages); the Trainer is one native training step loop.
export { train } from "./train/run.js";
export type { TrainOptions, TrainProgress, TrainResult } from "./train/run.js";
export type { DistributedSettings } from "./train/distributed.js";
export type { ProgressMode } from "./train/progress_view.js";
export type { StageProgress } from "./train/stage.js";
export type { StageRecord } from "./train/outputs.js";
export { describeTrainingCheckpoint, formatTrainingCheckpoint } from "./train/checkpoint_info.js";
export type { TrainingCheckpointInfo } from "./train/checkpoint_info.js";
export { Trainer } from "./train/trainer.js";
export type { ParamGroupSpec, StepResult, TrainBatch, TrainerSpec } from "./train/trainer.js";
export { resolveTrainConfig, trainConfigJsonSchema } from "./config/train.js";
export type { StageConfig, TrainConfig } from "./config/train.js";
export { applyOverrides, loadConfigFile, loadEvalConfigFile } from "./config/load.js";
export { runDemo } from "./demo/index.js";
export type { DemoOptions } from "./demo/index.js";

// PNG text chunks (AUTOMATIC1111 "parameters") and evaluation formatting.
export { addPngText, readPngText, formatInfotext } from "./io/png.js";
export type { GenerationParameters } from "./io/png.js";
export { formatStat } from "./eval/results.js";
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
