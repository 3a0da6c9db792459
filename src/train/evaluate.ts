// A stage's closing evaluation: the stage's result against the model it started
// from, with identical seeds (CLIP score; CLIP-I for DreamBooth), written to
// <run>/eval/<stage>/ and linked from the training report.
import type { StageConfig } from "../config/train.js";
import { evaluateRun } from "../eval/hooks.js";
import type { ProgressEvent } from "../native.js";
import type { StageRecord } from "./outputs.js";
import type { StageBase } from "./stage_models.js";

export async function evaluateStage(
  runDir: string,
  stage: StageConfig & { name: string },
  base: StageBase,
  record: StageRecord,
  options: { signal?: AbortSignal; onProgress?: (event: ProgressEvent) => void },
): Promise<void> {
  const e = stage.evaluate!;
  const trained = record.loraFiles.kohya ?? record.loraFiles.diffusers ?? record.loraFiles.peft;
  // A LoRA stage: the base (with earlier stages' LoRAs) vs the same plus this LoRA.
  // A full fine-tune: its written model alone (the base is another model).
  const model = record.fullModel ?? base.modelDir;
  const loras = record.fullModel ? [] : [...base.loras, trained!].map((path) => ({ path }));
  await evaluateRun({
    runDir,
    stage: stage.name,
    model,
    loras,
    variantName: stage.name,
    prompts: e.prompts,
    negativePrompt: e.negative_prompt,
    seeds: e.seeds,
    ...(e.sampler ? { sampler: e.sampler } : {}),
    steps: e.num_inference_steps,
    guidanceScale: e.guidance_scale,
    ...(e.width ? { width: e.width } : {}),
    ...(e.height ? { height: e.height } : {}),
    includeBase: e.include_base && !record.fullModel,
    ...(e.instance_images || stage.method === "dreambooth"
      ? { instanceImages: e.instance_images ?? stage.dataset.path }
      : {}),
    clipModel: e.clip_model,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}
