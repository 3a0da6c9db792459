// Scheduler configs: the schema of a diffusers scheduler_config.json, reading it
// from a model folder, and which sampler its "_class_name" stands for.
//
// The schema checks types and fills the defaults every diffusers scheduler class
// shares. Class-specific defaults (timestep_spacing is "leading" for DDIM/PNDM/DDPM
// but "linspace" for Euler/DPM-Solver, clip_sample is true for DDIM/DDPM, ...) are
// applied when a sampler is created, with diffusers' from_config semantics
// (native/sched/config.cc); `scheduler.config` shows the effective values.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

import type { SamplerName } from "../native/index.js";

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

/** The sampler that reproduces each diffusers scheduler class (a config's "_class_name"). */
export const SAMPLER_FOR_CLASS: Readonly<Record<string, SamplerName>> = {
  DDPMScheduler: "ddpm",
  DDIMScheduler: "ddim",
  PNDMScheduler: "pndm",
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_ancestral",
  DPMSolverMultistepScheduler: "dpm_multistep",
};

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
    const bad = c.trained_betas.findIndex((b) => !inRange(b));
    if (bad >= 0) return `trained_betas[${bad}] = ${c.trained_betas[bad]} is not a variance in [0, 1]`;
    const down = c.trained_betas.findIndex((b, i) => i > 0 && b < c.trained_betas![i - 1]!);
    if (down >= 0)
      return `trained_betas decrease at index ${down} (${c.trained_betas[down - 1]} then ${c.trained_betas[down]}); betas must not decrease`;
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

/**
 * Reads a scheduler config from a model folder (its scheduler/ subfolder), a scheduler
 * folder, or a scheduler_config.json file. Python's JSON extensions that diffusers
 * writes (-Infinity for lambda_min_clipped, NaN) are accepted.
 */
export function readSchedulerConfig(path: string): SchedulerConfig & { _source: string } {
  const file = locateConfig(path);
  let value: unknown;
  try {
    value = parsePythonJson(readFileSync(file, "utf8"));
  } catch (error) {
    throw new Error(`${file}: not valid JSON (${(error as Error).message})`);
  }
  return { ...parseSchedulerConfig(value, file), _source: file };
}

/** The sampler a config's "_class_name" asks for; throws naming the class when none here reproduces it. */
export function defaultSamplerName(config: { _class_name?: unknown; _source?: unknown }): SamplerName {
  const className = config._class_name;
  const where = typeof config._source === "string" ? `${config._source}: ` : "";
  if (typeof className !== "string") {
    throw new Error(`${where}the scheduler config has no "_class_name"; pass a sampler name explicitly`);
  }
  const name = SAMPLER_FOR_CLASS[className];
  if (!name) {
    throw new Error(
      `${where}scheduler class "${className}" is not implemented; pass one of the samplers ` +
        `(${Object.values(SAMPLER_FOR_CLASS).join(", ")}, dpmpp_2m, dpmpp_2m_karras) explicitly`,
    );
  }
  return name;
}

function locateConfig(path: string): string {
  if (!existsSync(path)) throw new Error(`${path}: not found (expected a model folder or scheduler_config.json)`);
  if (!statSync(path).isDirectory()) return path;
  for (const candidate of [join(path, "scheduler", "scheduler_config.json"), join(path, "scheduler_config.json")]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`${path}: no scheduler/scheduler_config.json (is this a diffusers model folder?)`);
}

/** JSON.parse plus the bare NaN / Infinity / -Infinity tokens Python's json module writes. */
export function parsePythonJson(text: string): unknown {
  const marker = "\u0000sdtune-number:";
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i] ?? "";
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      out += c;
      continue;
    }
    const token = ["-Infinity", "Infinity", "NaN"].find((t) => text.startsWith(t, i));
    if (token) {
      out += JSON.stringify(marker + token);
      i += token.length - 1;
      continue;
    }
    out += c;
  }
  return JSON.parse(out, (_key, value: unknown) =>
    typeof value === "string" && value.startsWith(marker) ? Number(value.slice(marker.length)) : value,
  );
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length ? `field "${issue.path.join(".")}"` : "config"}: ${issue.message}`)
    .join("; ");
}
