// Sampler names as users bring them: our own ("dpmpp_2m_karras"), AUTOMATIC1111's infotext
// ("DPM++ 2M Karras", "Euler a", "PLMS"), ComfyUI's KSampler ("dpmpp_2m" with scheduler
// "karras"), kohya's sample_sampler ("euler_a", "k_euler", "dpmsolver++") and diffusers'
// scheduler classes ("EulerAncestralDiscreteScheduler"). Each resolves to one of the native
// samplers plus the scheduler-config overrides that make it the same sampler. This table is
// the one place such spellings are known; a1111SamplerName (src/pipeline/generate.ts) writes
// the A1111 spelling back, and every name it writes resolves here to the same sampler.
import { SAMPLER_FOR_CLASS, type SamplerName, type SchedulerOverrides } from "./scheduler.js";

export interface ResolvedSampler {
  sampler: SamplerName;
  /** Scheduler-config overrides the name implies (e.g. use_karras_sigmas for "Euler Karras"). */
  overrides: SchedulerOverrides;
}

/** Spellings (lower case, spaces collapsed) -> native sampler; Karras suffixes are handled apart. */
const ALIASES: Readonly<Record<string, SamplerName>> = {
  // AUTOMATIC1111 / Forge infotext names
  ddim: "ddim",
  plms: "pndm",
  pndm: "pndm",
  ddpm: "ddpm",
  euler: "euler",
  "euler a": "euler_ancestral",
  "dpm++ 2m": "dpmpp_2m",
  // ComfyUI KSampler names and ours
  euler_ancestral: "euler_ancestral",
  dpmpp_2m: "dpmpp_2m",
  dpm_multistep: "dpm_multistep",
  // kohya sd-scripts sample_sampler names
  euler_a: "euler_ancestral",
  k_euler: "euler",
  k_euler_a: "euler_ancestral",
  "dpmsolver++": "dpmpp_2m",
  // diffusers class names (lower-cased below)
  ...Object.fromEntries(Object.entries(SAMPLER_FOR_CLASS).map(([cls, name]) => [cls.toLowerCase(), name])),
};

/** Schedule types (A1111's "Schedule type", ComfyUI's KSampler "scheduler") that change nothing. */
const PLAIN_SCHEDULES = new Set(["", "normal", "automatic", "default"]);
const KARRAS = /(?:[ _]karras)$/;
/** "DPM++ 3M", "DPM 2M": a DPM-Solver multistep of that order and algorithm (what a1111SamplerName writes). */
const DPM_SOLVER = /^dpm(\+\+)? ([123])m$/;

/**
 * The native sampler (and the overrides it implies) for a sampler name in any of the spellings
 * above; `scheduleType` is A1111's "Schedule type" or ComfyUI's scheduler ("karras", "normal").
 * Throws naming the value and what is accepted.
 */
export function resolveSamplerName(name: string, scheduleType?: string): ResolvedSampler {
  const key = normalise(name);
  const schedule = normalise(scheduleType ?? "");
  if (schedule !== "karras" && !PLAIN_SCHEDULES.has(schedule)) {
    throw new RangeError(
      `unknown schedule type "${scheduleType}" for sampler "${name}"; valid: karras, normal (the model's sigmas)`,
    );
  }
  // A name that is itself in the table ("dpmpp_2m_karras") wins over stripping its suffix.
  const direct = lookup(key);
  const karras = schedule === "karras" || (!direct && KARRAS.test(key));
  const resolved = direct ?? lookup(key.replace(KARRAS, ""));
  if (!resolved) {
    throw new RangeError(
      `unknown sampler "${name}"; valid samplers: ${[...new Set(Object.values(SAMPLER_FOR_CLASS))].join(", ")}, ` +
        "dpmpp_2m, dpmpp_2m_karras, or as AUTOMATIC1111 / ComfyUI / kohya name them " +
        '("DPM++ 2M Karras", "Euler a", "PLMS", "dpmpp_2m" with schedule type "karras", "euler_a", ...)',
    );
  }
  if (!karras || resolved.sampler === "dpmpp_2m_karras") return resolved;
  if (resolved.sampler === "dpmpp_2m") return { sampler: "dpmpp_2m_karras", overrides: resolved.overrides };
  return { sampler: resolved.sampler, overrides: { ...resolved.overrides, use_karras_sigmas: true } };
}

function lookup(key: string): ResolvedSampler | undefined {
  const sampler = ALIASES[key];
  if (sampler) return { sampler, overrides: {} };
  if (key === "dpmpp_2m_karras") return { sampler: "dpmpp_2m_karras", overrides: {} };
  const dpm = DPM_SOLVER.exec(key);
  if (!dpm) return undefined;
  const order = Number(dpm[2]);
  if (dpm[1] && order === 2) return { sampler: "dpmpp_2m", overrides: {} };
  return {
    sampler: "dpm_multistep",
    overrides: { algorithm_type: dpm[1] ? "dpmsolver++" : "dpmsolver", solver_order: order },
  };
}

function normalise(text: string): string {
  return text.trim().toLowerCase().replace(/\s+/g, " ");
}
