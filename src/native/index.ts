// The internal typed facade over the addon: one file per concept, mirroring native/bindings/*.cc.
// Users never see this module; src/index.ts exports what is public.
export type { DType, TypedArrayOf, AnyTypedArray, Tensor, CancelToken, ProgressEvent } from "./tensor.js";
export type { SafetensorsDType, SafetensorsTensorInfo, SafetensorsHeader, SafetensorsFile } from "./safetensors.js";
export type { RuntimeInfo } from "./runtime.js";
export type {
  NativeClipTextConfig,
  NativeClipVisionConfig,
  NativeClipModelConfig,
  NativeClipLoadOptions,
  TextEncoderForwardOptions,
  TextEncoderOutput,
  NativeTextEncoder,
  NativeClipModel,
} from "./clip.js";
export type { ResampleFilter, NativeClipPreprocessOptions, NativeJpegJob } from "./image.js";
export type { AdamWOptions, AdamW, NativeOptimizerSpec, Optimizer } from "./optim.js";
export type { LoraFilesOps } from "./lora_files.js";
export type { LoraToolsOps, LowRankOptions, LowRankResult } from "./lora_tools.js";
export type {
  SamplerName,
  SchedulerConfigValue,
  Generator,
  SchedulerStepResult,
  Scheduler,
  NoiseSchedule,
} from "./sched.js";
export type {
  NativeUNetConfig,
  NativeVAEConfig,
  NativeModelLoadOptions,
  ParameterInfo,
  UNetLossAndGradients,
  NativeUNet,
  NativeCallOptions,
  LatentDistribution,
  NativeVAE,
} from "./models.js";
export type { NativePipelineModels, NativeGenerateRequest, NativeGenerateResult } from "./pipeline.js";
export type { NativeProcessGroup, NativeProcessGroupOptions } from "./dist.js";
export type { NativeTrainerOptions, NativeTrainBatch, NativeStepResult, NativeTrainer } from "./trainer.js";
export type {
  NativeAdaptableModel,
  NativeLoraAdapterWeights,
  LoraInit,
  LoraType,
  NativeLoraCreateOptions,
  LoraAdapterInfo,
  NativeLoraOps,
} from "./lora.js";
export type { NativeAddon } from "./addon.js";
export { addonCandidates, native, addonPath } from "./load.js";
