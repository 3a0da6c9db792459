// Scheduler configs on disk: reading scheduler_config.json from a model folder, and
// which sampler its "_class_name" stands for. The schema and its validators live in
// src/config/scheduler.ts.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

import {
  parseSchedulerConfig,
  SAMPLER_FOR_CLASS,
  type SamplerName,
  type SchedulerConfig,
} from "../config/scheduler.js";

export {
  parseSchedulerConfig,
  parseSchedulerOverrides,
  schedulerConfigSchema,
  schedulerFieldsSchema,
  schedulerOverridesSchema,
} from "../config/scheduler.js";
export type { SchedulerConfig, SchedulerOverrides } from "../config/scheduler.js";
export { SAMPLER_FOR_CLASS } from "../config/scheduler.js";

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
