// Samplers, training noise schedules and random generators from TypeScript.
// The math is native (native/sched); here: validation, defaults, and errors that
// name the config file.
import {
  resolveSchedulerParams,
  type ResolvedScheduler,
  type SchedulerConfig,
  type SchedulerOverrides,
} from "../config/scheduler.js";
import {
  native,
  type Generator,
  type NoiseSchedule as NativeNoiseSchedule,
  type SamplerName,
  type Scheduler,
} from "../native/index.js";
import { defaultSamplerName } from "./config.js";

export type { Generator, SamplerName, Scheduler, SchedulerStepResult } from "../native/index.js";

/** Every sampler name createScheduler accepts. */
export function samplerNames(): readonly SamplerName[] {
  return native().samplerNames;
}

/**
 * A sampler for a model's scheduler config, like diffusers'
 * `SamplerClass.from_config(config, **overrides)`. `name` undefined: the class the
 * config names in "_class_name" (PNDMScheduler -> "pndm", ...). The config is usually
 * readSchedulerConfig(modelDir); call setTimesteps(n) before stepping.
 */
export function createScheduler(
  name: SamplerName | undefined,
  config: SchedulerConfig | Record<string, unknown>,
  overrides: SchedulerOverrides = {},
): Scheduler {
  return schedulerFrom(resolveScheduler(name, config, overrides));
}

/**
 * The one parse of a scheduler config for a sampler (`name` undefined: the config's
 * "_class_name"): what createScheduler builds and what the pipeline sends to native code.
 */
export function resolveScheduler(
  name: SamplerName | undefined,
  config: SchedulerConfig | Record<string, unknown>,
  overrides: SchedulerOverrides = {},
): ResolvedScheduler {
  const source = sourceOf(config);
  const sampler = name ?? defaultSamplerName({ ...config, _source: source });
  if (!samplerNames().includes(sampler)) {
    throw new Error(`unknown sampler "${String(sampler)}"; valid samplers: ${samplerNames().join(", ")}`);
  }
  return resolveSchedulerParams(sampler, config, overrides, source);
}

/** A sampler from a resolved config; `config` shows the effective values (diffusers key names). */
export function schedulerFrom(resolved: ResolvedScheduler): Scheduler {
  const handle = withSource(resolved.source, () => native().Scheduler.create(resolved.name, resolved.params));
  return Object.defineProperty(handle, "config", { value: resolved.effective, enumerable: true }) as Scheduler;
}

/** The training-time noise schedule (betas, alphas_cumprod, addNoise, getVelocity, snr). */
export type NoiseSchedule = NativeNoiseSchedule;

export const NoiseSchedule = {
  /** DDPMScheduler.from_config(config, **overrides), as the diffusers training scripts load it. */
  fromConfig(config: SchedulerConfig | Record<string, unknown>, overrides: SchedulerOverrides = {}): NoiseSchedule {
    const resolved = resolveSchedulerParams("ddpm", config, overrides, sourceOf(config));
    const handle = native().NoiseSchedule.create(resolved.params);
    return Object.defineProperty(handle, "config", { value: resolved.effective, enumerable: true }) as NoiseSchedule;
  },
};

/**
 * A CPU random generator seeded like `torch.Generator().manual_seed(seed)`; without a
 * seed, a random one (read it back from `.seed` to reproduce a run).
 */
export function createGenerator(seed?: number | bigint): Generator {
  if (seed !== undefined && typeof seed !== "bigint" && !Number.isSafeInteger(seed)) {
    throw new RangeError(`createGenerator: seed must be a safe integer or a BigInt (got ${seed})`);
  }
  return new (native().Generator)(seed);
}

function sourceOf(config: object): string {
  const source = (config as { _source?: unknown })._source;
  return typeof source === "string" ? source : "scheduler config";
}

// Native errors about config values (an unsupported combination) name the field; add the file it came from.
function withSource<T>(source: string, create: () => T): T {
  try {
    return create();
  } catch (error) {
    if (error instanceof Error && source !== "scheduler config" && error.message.startsWith("scheduler config")) {
      error.message = `${source}: ${error.message}`;
    }
    throw error;
  }
}
