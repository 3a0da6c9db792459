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
  return parsed.data;
}

/** Validates the types of overrides. */
export function parseSchedulerOverrides(value: unknown, source = "scheduler overrides"): SchedulerOverrides {
  const parsed = schedulerOverridesSchema.safeParse(value ?? {});
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length ? `field "${issue.path.join(".")}"` : "config"}: ${issue.message}`)
    .join("; ");
}
