// Scheduler configs: the schema of a diffusers scheduler_config.json, the overrides
// a caller may add, and the sampler names. Parsed once here; native code receives
// the parsed values (a plain object of numbers, strings, booleans and arrays) and
// trusts them.
//
// The schema checks types and fills the defaults every diffusers scheduler class
// shares. Class-specific defaults (timestep_spacing is "leading" for DDIM/PNDM/DDPM
// but "linspace" for Euler/DPM-Solver, clip_sample is true for DDIM/DDPM, ...) are
// applied when a sampler is created, with diffusers' from_config semantics
// (native/sched/config.cc); `scheduler.config` shows the effective values.
import { z } from "zod";

/** Sampler names (the README section "Samplers"); the addon's samplerNames lists the same. */
export const SAMPLER_NAMES = [
  "ddpm",
  "ddim",
  "pndm",
  "euler",
  "euler_ancestral",
  "dpmpp_2m",
  "dpmpp_2m_karras",
  "dpm_multistep",
] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];
export const samplerNameSchema = z.enum(SAMPLER_NAMES);

const nullableNumber = z.number().nullable();

/** Every init parameter the samplers here understand (diffusers 0.27.2 names). */
export const schedulerFieldsSchema = z.object({
  num_train_timesteps: z.number().int().min(1),
  beta_start: z.number(),
  beta_end: z.number(),
  beta_schedule: z.enum(["linear", "scaled_linear", "squaredcos_cap_v2"]),
  trained_betas: z.array(z.number()).nullable(),
  prediction_type: z.enum(["epsilon", "v_prediction", "sample"]),
  timestep_spacing: z.enum(["leading", "linspace", "trailing"]),
  steps_offset: z.number().int(),
  rescale_betas_zero_snr: z.boolean(),
  clip_sample: z.boolean(),
  clip_sample_range: z.number(),
  thresholding: z.boolean(),
  dynamic_thresholding_ratio: z.number().gt(0).max(1),
  sample_max_value: z.number(),
  set_alpha_to_one: z.boolean(),
  /** DDIM's eta (a step option in diffusers, accepted here as an override). */
  eta: z.number().min(0),
  skip_prk_steps: z.boolean(),
  variance_type: z.string().nullable(),
  interpolation_type: z.string(),
  use_karras_sigmas: z.boolean(),
  sigma_min: nullableNumber,
  sigma_max: nullableNumber,
  timestep_type: z.string(),
  solver_order: z.number().int().min(1).max(3),
  algorithm_type: z.string(),
  solver_type: z.string(),
  lower_order_final: z.boolean(),
  euler_at_final: z.boolean(),
  use_lu_lambdas: z.boolean(),
  final_sigmas_type: z.string(),
  lambda_min_clipped: z.number().or(z.literal(-Infinity)),
});

/**
 * A scheduler_config.json: known fields type-checked, the defaults shared by every
 * diffusers scheduler class filled in, other keys ("_class_name", parameters of
 * schedulers not implemented here) kept as they are.
 */
export const schedulerConfigSchema = z.looseObject({
  ...schedulerFieldsSchema.partial().shape,
  _class_name: z.string().optional(),
  _diffusers_version: z.string().optional(),
  _use_default_values: z.array(z.string()).optional(),
  num_train_timesteps: z.number().int().min(1).default(1000),
  beta_start: z.number().default(0.0001),
  beta_end: z.number().default(0.02),
  beta_schedule: z.enum(["linear", "scaled_linear", "squaredcos_cap_v2"]).default("linear"),
  trained_betas: z.array(z.number()).nullable().default(null),
  prediction_type: z.enum(["epsilon", "v_prediction", "sample"]).default("epsilon"),
  steps_offset: z.number().int().default(0),
});

export type SchedulerConfig = z.infer<typeof schedulerConfigSchema>;

/**
 * Overrides on top of a config (diffusers `from_config(config, **overrides)`). Known keys are
 * type-checked here; a key the chosen sampler does not take is refused when it is created.
 */
export const schedulerOverridesSchema = z.looseObject(schedulerFieldsSchema.partial().shape);
export type SchedulerOverrides = z.input<typeof schedulerOverridesSchema>;

/**
 * Validates a config object (e.g. parsed scheduler_config.json); `source` names it in errors.
 */
export function parseSchedulerConfig(value: unknown, source = "scheduler config"): SchedulerConfig {
  const parsed = schedulerConfigSchema.safeParse(value);
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  const problem = betaProblem(parsed.data);
  if (problem) throw new Error(`${source}: ${problem}`);
  return parsed.data;
}

/** A noise schedule must be variances in [0, 1] that do not decrease; anything else gives NaN images. */
function betaProblem(c: SchedulerConfig): string | undefined {
  const inRange = (b: number): boolean => Number.isFinite(b) && b >= 0 && b <= 1;
  if (c.trained_betas) {
    const betas = c.trained_betas;
    const bad = betas.findIndex((b) => !inRange(b));
    if (bad >= 0) return `trained_betas[${bad}] = ${betas[bad]} is not a variance in [0, 1]`;
    const down = betas.findIndex((b, i) => i > 0 && b < betas[i - 1]!);
    if (down >= 0) {
      return `trained_betas decrease at index ${down} (${betas[down - 1]} then ${betas[down]}); betas must not decrease`;
    }
    return undefined;
  }
  if (!inRange(c.beta_start)) return `beta_start = ${c.beta_start} is not a variance in [0, 1]`;
  if (!inRange(c.beta_end)) return `beta_end = ${c.beta_end} is not a variance in [0, 1]`;
  if (c.beta_start > c.beta_end)
    return `beta_start ${c.beta_start} is above beta_end ${c.beta_end}; betas must not decrease`;
  return undefined;
}

/** Validates the types of overrides. */
export function parseSchedulerOverrides(value: unknown, source = "scheduler overrides"): SchedulerOverrides {
  const parsed = schedulerOverridesSchema.safeParse(value ?? {});
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** Every field of a resolved scheduler config: what crosses to native code (native/sched/schedule.h). */
export type SchedulerParams = z.output<typeof schedulerFieldsSchema>;

/** A scheduler config resolved for one sampler, as diffusers' `Cls.from_config(config, **overrides)`. */
export interface ResolvedScheduler {
  name: SamplerName;
  /** The diffusers class it reproduces, e.g. "DPMSolverMultistepScheduler". */
  className: SchedulerClass;
  /** Every field (the ones the class does not take at its class default): sent to native code. */
  params: SchedulerParams;
  /** The class's init parameters (plus DDIM's eta) with diffusers' key names: `scheduler.config`. */
  effective: Readonly<Record<string, SchedulerParams[keyof SchedulerParams]>>;
  /** Where the config came from (a file path, or "scheduler config"), for errors. */
  source: string;
}

type SchedulerClass =
  | "DDPMScheduler"
  | "DDIMScheduler"
  | "PNDMScheduler"
  | "EulerDiscreteScheduler"
  | "EulerAncestralDiscreteScheduler"
  | "DPMSolverMultistepScheduler";

const ALL: readonly SchedulerClass[] = [
  "DDPMScheduler",
  "DDIMScheduler",
  "PNDMScheduler",
  "EulerDiscreteScheduler",
  "EulerAncestralDiscreteScheduler",
  "DPMSolverMultistepScheduler",
];
const DDPM_DDIM: readonly SchedulerClass[] = ["DDPMScheduler", "DDIMScheduler"];
const THRESHOLDING: readonly SchedulerClass[] = [...DDPM_DDIM, "DPMSolverMultistepScheduler"];
const EULER: readonly SchedulerClass[] = ["EulerDiscreteScheduler"];
const DPM: readonly SchedulerClass[] = ["DPMSolverMultistepScheduler"];

/** Which diffusers 0.27.2 classes take each field (a key another class takes is ignored in a config). */
const CLASSES_OF: Record<keyof SchedulerParams, readonly SchedulerClass[]> = {
  num_train_timesteps: ALL,
  beta_start: ALL,
  beta_end: ALL,
  beta_schedule: ALL,
  trained_betas: ALL,
  prediction_type: ALL,
  timestep_spacing: ALL,
  steps_offset: ALL,
  rescale_betas_zero_snr: ALL.filter((c) => c !== "PNDMScheduler"),
  clip_sample: DDPM_DDIM,
  clip_sample_range: DDPM_DDIM,
  thresholding: THRESHOLDING,
  dynamic_thresholding_ratio: THRESHOLDING,
  sample_max_value: THRESHOLDING,
  set_alpha_to_one: ["DDIMScheduler", "PNDMScheduler"],
  eta: ["DDIMScheduler"],
  skip_prk_steps: ["PNDMScheduler"],
  variance_type: ["DDPMScheduler", "DPMSolverMultistepScheduler"],
  interpolation_type: EULER,
  use_karras_sigmas: [...EULER, ...DPM],
  sigma_min: EULER,
  sigma_max: EULER,
  timestep_type: EULER,
  solver_order: DPM,
  algorithm_type: DPM,
  solver_type: DPM,
  lower_order_final: DPM,
  euler_at_final: DPM,
  use_lu_lambdas: DPM,
  final_sigmas_type: DPM,
  lambda_min_clipped: DPM,
};

/** The class each sampler runs, and the preset values a name adds (dpmpp_2m = DPM-Solver++ order 2). */
const SAMPLERS: Record<SamplerName, { className: SchedulerClass; preset?: Partial<SchedulerParams> }> = {
  ddpm: { className: "DDPMScheduler" },
  ddim: { className: "DDIMScheduler" },
  pndm: { className: "PNDMScheduler" },
  euler: { className: "EulerDiscreteScheduler" },
  euler_ancestral: { className: "EulerAncestralDiscreteScheduler" },
  dpmpp_2m: {
    className: "DPMSolverMultistepScheduler",
    preset: { algorithm_type: "dpmsolver++", solver_order: 2, use_karras_sigmas: false },
  },
  dpmpp_2m_karras: {
    className: "DPMSolverMultistepScheduler",
    preset: { algorithm_type: "dpmsolver++", solver_order: 2, use_karras_sigmas: true },
  },
  dpm_multistep: { className: "DPMSolverMultistepScheduler" },
};

/** The __init__ defaults of a diffusers 0.27.2 class (where classes differ, per class). */
function classDefaults(className: SchedulerClass): SchedulerParams {
  const sigmaBased = ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler"];
  return {
    num_train_timesteps: 1000,
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: "linear",
    trained_betas: null,
    prediction_type: "epsilon",
    timestep_spacing: sigmaBased.includes(className) ? "linspace" : "leading",
    steps_offset: 0,
    rescale_betas_zero_snr: false,
    clip_sample: className === "DDPMScheduler" || className === "DDIMScheduler",
    clip_sample_range: 1,
    thresholding: false,
    dynamic_thresholding_ratio: 0.995,
    sample_max_value: 1,
    set_alpha_to_one: className === "DDIMScheduler",
    eta: 0,
    skip_prk_steps: false,
    variance_type: className === "DDPMScheduler" ? "fixed_small" : null,
    interpolation_type: "linear",
    use_karras_sigmas: false,
    sigma_min: null,
    sigma_max: null,
    timestep_type: "discrete",
    solver_order: 2,
    algorithm_type: "dpmsolver++",
    solver_type: "midpoint",
    lower_order_final: true,
    euler_at_final: false,
    use_lu_lambdas: false,
    final_sigmas_type: "zero",
    lambda_min_clipped: -Infinity,
  };
}

const isField = (key: string): key is keyof SchedulerParams => Object.hasOwn(CLASSES_OF, key);

/**
 * Resolves a config for `name` with diffusers' from_config semantics: the class's defaults for
 * every parameter the config lacks; keys starting with "_", keys in "_use_default_values" and
 * keys the class does not take are ignored; the sampler's preset; then the overrides, where a
 * key the class does not take is an error. Both inputs are validated here first.
 */
export function resolveSchedulerParams(
  name: SamplerName,
  config: unknown,
  overrides: unknown = {},
  source = "scheduler config",
): ResolvedScheduler {
  const sampler = SAMPLERS[name];
  if (!sampler) {
    throw new Error(`unknown sampler "${String(name)}"; valid samplers: ${SAMPLER_NAMES.join(", ")}`);
  }
  const { className } = sampler;
  const parsed = parseSchedulerConfig(config, source);
  const checked = parseSchedulerOverrides(overrides);
  const params: Record<string, unknown> = classDefaults(className);
  const useDefaults = new Set(parsed._use_default_values ?? []);
  for (const [key, value] of Object.entries(parsed)) {
    if (value === undefined || key.startsWith("_") || useDefaults.has(key)) continue;
    if (isField(key) && CLASSES_OF[key].includes(className)) params[key] = value;
  }
  Object.assign(params, sampler.preset);
  for (const [key, value] of Object.entries(checked)) {
    if (value === undefined) continue;
    if (!isField(key) || !CLASSES_OF[key].includes(className)) {
      const takes = Object.keys(CLASSES_OF).filter((k) => CLASSES_OF[k as keyof SchedulerParams].includes(className));
      throw new Error(
        `scheduler option "${key}" does not apply to the ${name} sampler (${className}); it takes: ${takes.join(", ")}`,
      );
    }
    params[key] = value;
  }
  const full = params as SchedulerParams;
  const effective = Object.fromEntries(
    Object.entries(full).filter(([key]) => CLASSES_OF[key as keyof SchedulerParams].includes(className)),
  );
  return { name, className, params: full, effective: Object.freeze(effective), source };
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length ? `field "${issue.path.join(".")}"` : "config"}: ${issue.message}`)
    .join("; ");
}

/** The sampler that reproduces each diffusers scheduler class (a config's "_class_name"). */
export const SAMPLER_FOR_CLASS: Readonly<Record<string, SamplerName>> = {
  DDPMScheduler: "ddpm",
  DDIMScheduler: "ddim",
  PNDMScheduler: "pndm",
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_ancestral",
  DPMSolverMultistepScheduler: "dpm_multistep",
};
