// Noise schedules, samplers and seedable generators.
export {
  SAMPLER_FOR_CLASS,
  defaultSamplerName,
  parsePythonJson,
  parseSchedulerConfig,
  parseSchedulerOverrides,
  readSchedulerConfig,
  schedulerConfigSchema,
  schedulerOverridesSchema,
} from "./config.js";
export type { SchedulerConfig, SchedulerOverrides } from "./config.js";
export { NoiseSchedule, createGenerator, createScheduler, samplerNames } from "./scheduler.js";
export type { Generator, SamplerName, Scheduler, SchedulerStepResult } from "./scheduler.js";
export { resolveSamplerName } from "../config/samplers.js";
export type { ResolvedSampler } from "../config/samplers.js";
