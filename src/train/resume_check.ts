// Whether a run folder may be started or resumed with this config: a folder holding a
// saved run is never started over; a resume needs the same settings (only the keys in
// RESUME_SAFE_KEYS may change, and the step / epoch counts may grow: that extends the
// run), compared with the run's config.yaml, whose loss or damage refuses the resume
// rather than skipping the comparison.
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";

import { parse as parseYaml } from "yaml";

import type { TrainConfig } from "../config/train.js";
import type { TrainOptions } from "./run.js";
import { stageDir } from "./stage.js";

/**
 * Refuses to start over an existing run, and to resume one with changed settings (or whose
 * settings cannot be compared). A folder whose run never saved anything (a start that failed
 * or was stopped before its first checkpoint) is started over, saying so.
 */
export async function checkResumable(
  resolved: TrainConfig,
  runDir: string,
  options: TrainOptions,
  progress: { stages: unknown[] },
): Promise<void> {
  const previous = await readPreviousConfig(runDir);
  const saved = progress.stages.length > 0 || (await hasCheckpoints(runDir, resolved));
  if (!options.resume && saved) {
    throw new Error(
      `${runDir} already holds a training run. Resume it with --resume latest (resume: "latest"), ` +
        "or choose another output_dir; nothing there was changed.",
    );
  }
  if (!options.resume) {
    if (previous) {
      options.onProgress?.({
        phase: "notice",
        message: `${runDir} holds a run that never saved a checkpoint; starting it over`,
      });
    }
    return;
  }
  if (!previous) {
    if (!saved) throw new Error(`${runDir}: nothing to resume (no config.yaml, no checkpoint); start without --resume`);
    throw new Error(
      `${join(runDir, "config.yaml")} is missing, so the settings of the run being resumed cannot be compared ` +
        "with this config. Put back the config.yaml that started the run (an exact resume needs the same " +
        "settings), or start a new run in another output_dir.",
    );
  }
  const extended: string[] = [];
  const changed = changedKeys(previous, JSON.parse(JSON.stringify(resolved)) as Record<string, unknown>, extended);
  if (changed.length) {
    throw new Error(
      `${runDir}: the config differs from the run being resumed in ${changed.join(", ")}. An exact resume ` +
        "needs the same settings: undo the change, or start a new run in another output_dir. " +
        `(Only ${RESUME_SAFE_KEYS.join(", ")} may change between resumes, and ${EXTEND_KEYS.join(" / ")} ` +
        "may grow to train longer.)",
    );
  }
  for (const path of extended) scheduleNotice(resolved, path, options);
}

/** Counts that may grow on resume: the run continues as if configured with the larger count. */
const EXTEND_KEYS = ["max_train_steps", "num_train_epochs"];

/** A schedule that depends on the total steps changes shape when the total grows: say so. */
function scheduleNotice(config: TrainConfig, path: string, options: TrainOptions): void {
  const index = /^stages\[(\d+)\]/.exec(path)?.[1];
  const stage = config.stages[Number(index ?? 0)];
  if (!stage || stage.lr_scheduler === "constant" || stage.lr_scheduler === "constant_with_warmup") return;
  options.onProgress?.({
    phase: "notice",
    stage: stage.name,
    message:
      `stage "${stage.name}": training longer (${path}); its ${stage.lr_scheduler} learning-rate schedule depends ` +
      "on the total step count, so the steps from here follow the schedule for the new total, and the result " +
      "differs from a run configured with it from the start (a constant schedule continues exactly)",
  });
}

/** Keys that may change between a run and its resume without breaking exactness. */
const RESUME_SAFE_KEYS = [
  "checkpointing_steps",
  "checkpoints_total_limit",
  "validation",
  "evaluate",
  "save",
  "cache_dir",
  "device",
  "report_to",
];

/** "stages[1].learning_rate"-style paths of every difference that matters for an exact resume. */
function changedKeys(before: Record<string, unknown>, after: Record<string, unknown>, extended: string[]): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, path: string): void => {
    const key = path.split(/[.[]/).at(-1)!.replace("]", "");
    if (RESUME_SAFE_KEYS.includes(key)) return;
    // A count may grow, or be added (max_train_steps over num_train_epochs: the stage checks the total).
    if (EXTEND_KEYS.includes(key) && typeof b === "number" && (a === undefined || (typeof a === "number" && b >= a))) {
      if (a !== b) extended.push(path);
      return;
    }
    if (a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
      const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
      for (const k of keys) {
        const next = Array.isArray(a) ? `${path}[${k}]` : path ? `${path}.${k}` : k;
        walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], next);
      }
      return;
    }
    // A path saved relative to the working directory (runs started before config-relative paths)
    // and the same path saved absolute are the same setting.
    if (typeof a === "string" && typeof b === "string" && resolve(a) === resolve(b)) return;
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(path);
  };
  walk(before, after, "");
  return out;
}

/** The run folder's config.yaml; a damaged one is an error (it guards exact resumes). */
async function readPreviousConfig(runDir: string): Promise<Record<string, unknown> | undefined> {
  const path = join(runDir, "config.yaml");
  if (!existsSync(path)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(JSON.stringify(parseYaml(await readFile(path, "utf8")) ?? null));
  } catch (error) {
    throw garbledConfig(path, (error as Error).message.split("\n")[0]!);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed) || !("stages" in parsed)) {
    throw garbledConfig(path, "not a resolved training config");
  }
  return parsed as Record<string, unknown>;
}

function garbledConfig(path: string, why: string): Error {
  return new Error(
    `${path}: unreadable (${why}). It records the settings the run was started with, which a resume must ` +
      "match: put back the original config.yaml, or start a new run in another output_dir.",
  );
}

async function hasCheckpoints(runDir: string, config: TrainConfig): Promise<boolean> {
  for (const stage of config.stages) {
    const dir = join(stageDir(runDir, stage.name), "checkpoints");
    if (existsSync(dir) && (await readdir(dir)).some((n) => n.startsWith("checkpoint-"))) return true;
  }
  return false;
}
