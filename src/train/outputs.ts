// A finished stage's outputs: the trained LoRA in the formats asked for (kohya
// loads in diffusers, AUTOMATIC1111 and ComfyUI), and a full diffusers model when
// the stage fine-tuned a whole model or asked for one (LoRA merged in).
import { join } from "node:path";

import { disposeLora, extractLora, fuseLora, kohyaTrainingMetadata, saveLora } from "../lora/index.js";
import { saveDiffusersModel } from "../models/save_model.js";
import type { StageContext, StageOutcome } from "./stage.js";
import { stageDir } from "./stage.js";

export interface StageRecord {
  name: string;
  steps: number;
  lastLoss: number;
  /** format -> file */
  loraFiles: Partial<Record<"kohya" | "diffusers" | "peft", string>>;
  /** A complete diffusers folder (full fine-tunes, or save.full_model). */
  fullModel?: string;
  /** metrics.jsonl line count when the stage ended (resume at a stage boundary). */
  metricsLines: number;
}

export async function saveStageOutputs(outcome: StageOutcome, ctx: StageContext): Promise<StageRecord> {
  const { stage } = ctx;
  const { models, trainer } = outcome;
  const dir = stageDir(ctx.runDir, stage.name);
  const record: StageRecord = {
    name: stage.name,
    steps: outcome.steps,
    lastLoss: outcome.lastLoss,
    loraFiles: {},
    metricsLines: 0,
  };
  const lora = { unet: models.unet, textEncoder: models.textEncoder };

  if (models.loraName) {
    const weights = await extractLora(lora, models.loraName);
    try {
      const resolution = stage.resolution ?? Number(models.unet.config.sample_size) * (models.vae?.scaleFactor ?? 8);
      const kohya = kohyaTrainingMetadata({
        outputName: stage.name,
        learningRate: stage.learning_rate,
        unetLr: stage.train_unet === "lora" ? stage.learning_rate : null,
        textEncoderLr:
          stage.train_text_encoder === "lora" ? (stage.text_encoder_learning_rate ?? stage.learning_rate) : null,
        numTrainImages: outcome.dataset.items.filter((i) => i.role !== "class").length,
        numRegImages: outcome.dataset.items.filter((i) => i.role === "class").length,
        steps: outcome.steps,
        maxTrainSteps: stage.max_train_steps,
        batchSizePerDevice: stage.train_batch_size,
        gradientAccumulationSteps: stage.gradient_accumulation_steps,
        gradientCheckpointing: stage.gradient_checkpointing,
        lrScheduler: stage.lr_scheduler,
        lrWarmupSteps: stage.lr_warmup_steps,
        maxGradNorm: stage.max_grad_norm,
        mixedPrecision: ctx.placement.mixedPrecision,
        seed: ctx.seed,
        resolution: [resolution, resolution],
        noiseOffset: stage.noise_offset || null,
        minSnrGamma: stage.snr_gamma ?? null,
        priorLossWeight: stage.prior_preservation?.prior_loss_weight,
        flipAug: stage.random_flip,
        shuffleCaption: stage.shuffle_tags,
        keepTokens: stage.keep_tags,
      });
      for (const format of stage.save.lora_formats) {
        const path =
          format === "kohya"
            ? join(dir, "lora", `${stage.name}.safetensors`)
            : join(dir, "lora", format, "pytorch_lora_weights.safetensors");
        await saveLora(path, weights, { format, metadata: format === "kohya" ? kohya : { sdtune_stage: stage.name } });
        record.loraFiles[format] = path;
      }
    } finally {
      disposeLora(weights);
    }
  }

  const full = stage.train_unet === "full" || stage.train_text_encoder === "full" || stage.save.full_model;
  if (full) {
    if (stage.use_ema) await trainer.copyEmaToModel();
    if (models.loraName) await fuseLora(lora, { names: [models.loraName], permanent: true });
    const out = join(dir, "model");
    await saveDiffusersModel({ base: ctx.base.modelDir, out, models: lora });
    record.fullModel = out;
  }
  return record;
}
