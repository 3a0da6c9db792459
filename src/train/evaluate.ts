// A stage's closing evaluation: the stage's result against the model it started from,
// with identical seeds (CLIP score; CLIP-I for DreamBooth), written to <run>/eval/<stage>/
// and linked from the training report.
import { basename, join } from "node:path";

import type { StageConfig } from "../config/train.js";
import { evaluate } from "../eval/evaluate.js";
import { runEvalDir } from "../eval/hooks.js";
import type { ProgressEvent } from "../native/index.js";
import type { StageRecord } from "./outputs.js";
import { insideRun } from "./paths.js";
import type { Placement } from "./precision.js";
import type { StageBase } from "./stage_models.js";

export async function evaluateStage(
  runDir: string,
  stage: StageConfig & { name: string },
  base: StageBase,
  record: StageRecord,
  placement: Placement,
  options: {
    /** evaluate.clip_model's local folder, resolved in preflight (before any training). */
    clipModel?: string;
    signal?: AbortSignal;
    onProgress?: (event: ProgressEvent) => void;
  },
): Promise<void> {
  const e = stage.evaluate!;
  const trained = record.loraFiles.kohya ?? record.loraFiles.diffusers ?? record.loraFiles.peft;
  const startLoras = base.loras.map((path) => ({ path, name: basename(path).replace(/\.safetensors$/, "") }));
  // A LoRA stage: the model the stage started from (the base with earlier stages' LoRAs)
  // against the same plus this stage's LoRA. A full fine-tune writes a new model: it is
  // evaluated alone (the starting point is another model).
  const full =
    record.fullModel !== undefined && !record.loraFiles.kohya && !record.loraFiles.diffusers && !record.loraFiles.peft;
  const variants = full
    ? []
    : [
        ...(e.include_base && startLoras.length ? [{ name: "start", loras: startLoras }] : []),
        { name: stage.name, loras: [...startLoras, { path: trained!, name: stage.name }] },
      ];
  const dtype = placement.weightDtype;
  await evaluate(
    {
      output_dir: insideRun(runDir, runEvalDir(runDir, stage.name)),
      title: `Evaluation of stage "${stage.name}" of ${runDir}`,
      clip_model: options.clipModel ?? e.clip_model,
      device: placement.device,
      generate: {
        model: full ? record.fullModel! : base.modelDir,
        prompts: e.prompts,
        negative_prompt: e.negative_prompt,
        seeds: e.seeds,
        ...(e.sampler ? { sampler: e.sampler } : {}),
        steps: e.num_inference_steps,
        guidance_scale: e.guidance_scale,
        ...(e.width ? { width: e.width } : {}),
        ...(e.height ? { height: e.height } : {}),
        include_base: full || (e.include_base && startLoras.length === 0),
        base_name: full ? stage.name : "base",
        variants,
        dtype,
        device: placement.device,
      },
      runs: [runDir],
      ...(e.instance_images || stage.method === "dreambooth"
        ? { instance_images: e.instance_images ?? stage.dataset.path }
        : {}),
    },
    {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      trainingReport: join(runDir, "report.html"),
    },
  );
}
