// A finished stage's outputs: the trained LoRA in the formats asked for (kohya
// loads in diffusers, AUTOMATIC1111 and ComfyUI), and a full diffusers model when
// the stage fine-tuned a whole model or asked for one (LoRA merged in).
import { join } from "node:path";

import { kohyaOptimizerName } from "../config/optimizer.js";
import { disposeLora, extractLora, fuseLora, kohyaTrainingMetadata, saveLora } from "../lora/index.js";
import { mergeLoraIntoModel } from "../lora/adapters/merge.js";
import type { Tensor } from "../native/index.js";
import { saveDiffusersModel } from "../models/save_model.js";
import { convertDiffusersToSingleFile } from "../models/single_file/to_single.js";
import type { StageContext, StageOutcome } from "./stage.js";
import { stageDir } from "./stage.js";
import { saveExtractedLora } from "./extract_output.js";

export interface StageRecord {
  name: string;
  steps: number;
  lastLoss: number;
  /** format -> file */
  loraFiles: Partial<Record<"kohya" | "diffusers" | "peft", string>>;
  /** A complete diffusers folder (full fine-tunes, or save.full_model). */
  fullModel?: string;
  /** The same model as one single-file checkpoint (save.full_model: single-file). */
  singleFile?: string;
  /** Optimizer steps per epoch (how far num_train_epochs reaches when a finished run is extended). */
  stepsPerEpoch?: number;
  /** metrics.jsonl line count when the stage ended (resume at a stage boundary). */
  metricsLines: number;
  /** Its end-of-stage evaluation finished (`evaluate` in the config). */
  evaluated?: boolean;
}

export async function saveStageOutputs(outcome: StageOutcome, ctx: StageContext): Promise<StageRecord> {
  const { stage } = ctx;
  const dir = stageDir(ctx.runDir, stage.name);
  const record: StageRecord = {
    name: stage.name,
    steps: outcome.steps,
    lastLoss: outcome.lastLoss,
    loraFiles: {},
    stepsPerEpoch: outcome.stepsPerEpoch,
    metricsLines: 0,
  };
  if (outcome.models.loraName) record.loraFiles = await writeLoraFiles(outcome, ctx, dir);
  const full = stage.train_unet === "full" || stage.train_text_encoder === "full" || stage.save.full_model;
  if (full) record.fullModel = await saveFullModel(outcome, ctx, join(dir, "model"), record.loraFiles);
  if (full && stage.save.extract_lora) await saveExtractedLora(ctx, dir, record);
  if (record.fullModel && stage.save.full_model === "single-file") {
    // Beside the folder (later stages and evaluation load the folder), for AUTOMATIC1111 / ComfyUI.
    record.singleFile = join(dir, "model.safetensors");
    await convertDiffusersToSingleFile(record.fullModel!, record.singleFile);
  }
  return record;
}

/** What a LoRA file is written from: the stage's models after `steps` steps, and its dataset (metadata). */
export type LoraSnapshot = Pick<StageOutcome, "models" | "dataset" | "steps" | "totalSteps">;

/**
 * The trained LoRA in each of save.lora_formats; returns format -> file. The final LoRA is
 * `lora/<stage>.safetensors` (kohya) and `lora/<format>/pytorch_lora_weights.safetensors`; an
 * intermediate one (`name` = "<stage>-step<N>") is `lora/<name>.safetensors` and
 * `lora/<name>/<format>/pytorch_lora_weights.safetensors`, so it loads like the final one.
 */
export async function writeLoraFiles(
  snapshot: LoraSnapshot,
  ctx: StageContext,
  dir: string,
  name = ctx.stage.name,
): Promise<StageRecord["loraFiles"]> {
  const { stage } = ctx;
  const { models } = snapshot;
  const files: StageRecord["loraFiles"] = {};
  const weights = await extractLora({ unet: models.unet, textEncoder: models.textEncoder }, models.loraName!);
  try {
    const kohya = kohyaMetadata(snapshot, ctx, name);
    const folder = name === stage.name ? join(dir, "lora") : join(dir, "lora", name);
    for (const format of stage.save.lora_formats) {
      const path =
        format === "kohya"
          ? join(dir, "lora", `${name}.safetensors`)
          : join(folder, format, "pytorch_lora_weights.safetensors");
      await saveLora(path, weights, { format, metadata: format === "kohya" ? kohya : { sdtune_stage: stage.name } });
      files[format] = path;
    }
  } finally {
    disposeLora(weights);
  }
  return files;
}

/** kohya's ss_* training metadata, so A1111 / ComfyUI users see how the LoRA was made. */
function kohyaMetadata(outcome: LoraSnapshot, ctx: StageContext, name: string): Record<string, string> {
  const { stage } = ctx;
  const { models } = outcome;
  const resolution = stage.resolution ?? Number(models.unet.config.sample_size) * (models.vae?.scaleFactor ?? 8);
  return kohyaTrainingMetadata({
    outputName: name,
    learningRate: stage.learning_rate,
    unetLr: stage.train_unet === "lora" ? stage.learning_rate : null,
    textEncoderLr:
      stage.train_text_encoder === "lora" ? (stage.text_encoder_learning_rate ?? stage.learning_rate) : null,
    numTrainImages: outcome.dataset.items.filter((i) => i.role !== "class").length,
    numRegImages: outcome.dataset.items.filter((i) => i.role === "class").length,
    steps: outcome.steps,
    maxTrainSteps: outcome.totalSteps,
    batchSizePerDevice: stage.train_batch_size,
    gradientAccumulationSteps: stage.gradient_accumulation_steps,
    gradientCheckpointing: stage.gradient_checkpointing,
    lrScheduler: stage.lr_scheduler,
    lrWarmupSteps: stage.lr_warmup_steps,
    optimizer: kohyaOptimizerName(stage),
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
}

/** A complete diffusers folder at `out`: the LoRA merged into the base files, or the fine-tuned weights. */
async function saveFullModel(
  outcome: StageOutcome,
  ctx: StageContext,
  out: string,
  loraFiles: StageRecord["loraFiles"],
): Promise<string> {
  const { stage } = ctx;
  const { models, trainer } = outcome;
  const wholeModels = stage.train_unet === "full" || stage.train_text_encoder === "full";
  if (!wholeModels) {
    // A LoRA stage: merged into the float32 base files, not into the half-precision copies trained on.
    const trained = loraFiles.kohya ?? loraFiles.diffusers ?? loraFiles.peft!;
    await mergeLoraIntoModel({
      base: ctx.base.modelDir,
      loras: [...ctx.base.loras, trained].map((path) => ({ path })),
      out,
      variant: ctx.variant,
      force: true,
    });
    return out;
  }
  const lora = { unet: models.unet, textEncoder: models.textEncoder };
  if (models.loraName) await fuseLora(lora, { names: [models.loraName], permanent: true });
  const overrides = await trainedWeights(trainer, stage.use_ema);
  try {
    await saveDiffusersModel({ base: ctx.base.modelDir, out, models: lora, variant: ctx.variant, overrides });
  } finally {
    for (const map of Object.values(overrides)) for (const t of map.values()) t.dispose();
  }
  return out;
}

/**
 * The float32 weights of the whole-model groups: the EMA average (UNet, with use_ema), else
 * the optimizer's master copies (half-precision parameters), else the parameters themselves.
 */
async function trainedWeights(
  trainer: StageOutcome["trainer"],
  useEma: boolean,
): Promise<{ unet: Map<string, Tensor>; textEncoder: Map<string, Tensor> }> {
  const state = await trainer.stateDict();
  const pick = (group: "unet" | "text_encoder"): Map<string, Tensor> => {
    const out = new Map<string, Tensor>();
    const param = `param.${group}.`;
    for (const [key, t] of state) {
      if (!key.startsWith(param)) continue;
      const name = key.slice(param.length);
      const ema = useEma && group === "unet" ? state.find(([k]) => k === `ema.${name}`)?.[1] : undefined;
      const master = state.find(([k]) => k === `optim.${group}.${name}.master`)?.[1];
      out.set(name, ema ?? master ?? t);
    }
    return out;
  };
  const result = { unet: pick("unet"), textEncoder: pick("text_encoder") };
  const kept = new Set([...result.unet.values(), ...result.textEncoder.values()]);
  for (const [, t] of state) if (!kept.has(t)) t.dispose();
  return result;
}
