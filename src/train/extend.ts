// Training a finished stage longer: resumed with a larger max_train_steps or
// num_train_epochs (resume_check.ts lets only those counts grow), a stage that
// progress.json lists as done is taken off that list, so it continues from its newest
// checkpoint (the one its last step saved) as if it had been configured with the
// larger count from the start. Its old LoRA files and evaluation are kept, named by its step.
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";

import type { TrainConfig } from "../config/train.js";
import { runEvalDir } from "../eval/hooks.js";
import { writeFileAtomic } from "../io/atomic.js";
import type { StageRecord } from "./outputs.js";
import type { TrainProgress } from "./run.js";
import { stageDir } from "./stage.js";
import { plannedTotal } from "./stage_plan.js";

/** The stage's total steps now, from what its record says about an epoch; undefined when unknown. */
function totalNow(stage: TrainConfig["stages"][number], record: StageRecord): number | undefined {
  if (stage.max_train_steps === undefined && record.stepsPerEpoch === undefined) return undefined;
  return plannedTotal(stage, record.stepsPerEpoch ?? 1);
}

/**
 * Removes from `records` the finished stage the config now trains for longer, and returns
 * it (undefined when none). Refuses one that later finished stages were trained on, and
 * a count lowered below the steps a stage already took.
 */
export async function reopenExtended(
  config: TrainConfig,
  runDir: string,
  records: StageRecord[],
  onProgress?: (event: TrainProgress) => void,
  /** False on data-parallel ranks other than 0: they only drop the record, rank 0 moves the files. */
  writeFiles = true,
): Promise<StageRecord | undefined> {
  for (const [i, record] of records.entries()) {
    const stage = config.stages.find((s) => s.name === record.name);
    const total = stage && totalNow(stage, record);
    if (total === undefined || total === record.steps) continue;
    if (total < record.steps) {
      throw new Error(
        `stage "${record.name}" finished after ${record.steps} steps, but this config trains it for ${total}; ` +
          "a finished stage can only be trained longer",
      );
    }
    const later = records.slice(i + 1).map((r) => `"${r.name}"`);
    if (later.length) {
      throw new Error(
        `stage "${record.name}" cannot be trained longer: stage ${later.join(", ")} already trained on its result. ` +
          "Start a new run in another output_dir to change it.",
      );
    }
    records.splice(i, 1);
    if (writeFiles) {
      await keepOldEvaluation(runDir, record);
      await keepOldLoras(runDir, record);
    }
    onProgress?.({
      phase: "notice",
      stage: record.name,
      message: `stage "${record.name}" finished at step ${record.steps}; training it on to step ${total}`,
    });
    return record;
  }
  return undefined;
}

/**
 * The shorter training's LoRA files are kept as the intermediate `<stage>-step<N>` ones
 * (the layout of lora_saves.ts), so it stays comparable with the longer result.
 */
async function keepOldLoras(runDir: string, record: StageRecord): Promise<void> {
  const lora = join(stageDir(runDir, record.name), "lora");
  const name = `${record.name}-step${record.steps}`;
  for (const [format, file] of Object.entries(record.loraFiles)) {
    if (!existsSync(file)) continue;
    const to =
      format === "kohya"
        ? join(lora, `${name}.safetensors`)
        : join(lora, name, format, "pytorch_lora_weights.safetensors");
    await mkdir(dirname(to), { recursive: true });
    await writeFileAtomic(to, await readFile(file));
  }
}

/** The evaluation of the shorter training moves to eval/<stage>-step<N> (replacing an older such copy). */
async function keepOldEvaluation(runDir: string, record: StageRecord): Promise<void> {
  const from = runEvalDir(runDir, record.name);
  if (!existsSync(from)) return;
  const to = runEvalDir(runDir, `${record.name}-step${record.steps}`);
  await rm(to, { recursive: true, force: true });
  await rename(from, to);
}
