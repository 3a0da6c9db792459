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
