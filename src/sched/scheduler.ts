// Samplers, training noise schedules and random generators from TypeScript.
// The math is native (native/sched); here: validation, defaults, and errors that
// name the config file.
import {
  native,
  type Generator,
  type NoiseSchedule as NativeNoiseSchedule,
  type SamplerName,
  type Scheduler,
} from "../native/index.js";
import {
  defaultSamplerName,
  parseSchedulerConfig,
  parseSchedulerOverrides,
  type SchedulerConfig,
  type SchedulerOverrides,
} from "./config.js";

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
  const source = sourceOf(config);
  const parsed = parseSchedulerConfig(config, source);
  const sampler = name ?? defaultSamplerName({ ...parsed, _source: source });
  if (!samplerNames().includes(sampler)) {
    throw new Error(`unknown sampler "${String(sampler)}"; valid samplers: ${samplerNames().join(", ")}`);
  }
  const checked = parseSchedulerOverrides(overrides);
  return withSource(source, () => native().Scheduler.create(sampler, parsed, checked));
}

/** The training-time noise schedule (betas, alphas_cumprod, addNoise, getVelocity, snr). */
export type NoiseSchedule = NativeNoiseSchedule;

export const NoiseSchedule = {
  /** DDPMScheduler.from_config(config, **overrides), as the diffusers training scripts load it. */
  fromConfig(config: SchedulerConfig | Record<string, unknown>, overrides: SchedulerOverrides = {}): NoiseSchedule {
    const source = sourceOf(config);
    const parsed = parseSchedulerConfig(config, source);
    const checked = parseSchedulerOverrides(overrides);
    return withSource(source, () => native().NoiseSchedule.create(parsed, checked));
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

// Native errors about config fields name the field; add the file it came from.
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
