// The models one training stage works on: the stage's base (the run's model, or
// an earlier stage's result: its full model, or its LoRA fused into the base it
// was trained on), loaded in the run's precision, plus the trainable parameters
// (fresh LoRA adapters or the whole model). Built the same way on a fresh run and
// on a resumed one, so both start from bit-identical weights.
import { existsSync } from "node:fs";
import { join } from "node:path";

import type { StageConfig } from "../config/train.js";
import { applyLoraFile, createTrainableLora, fuseLora, loraParameters } from "../lora/index.js";
import { parseVAEConfig } from "../models/config.js";
import { readJsonFile } from "../models/files.js";
import { TextEncoder } from "../models/text_encoder.js";
import { UNet } from "../models/unet.js";
import { VAE } from "../models/vae.js";
import type { Tensor } from "../native/index.js";
import { readSchedulerConfig } from "../sched/index.js";
import { ClipTokenizer } from "../text/clip_tokenizer.js";
import { attachInitLora } from "./init_lora.js";
import type { Placement } from "./precision.js";
import type { ParamGroupSpec } from "./trainer.js";

/** A model folder plus LoRA files fused into it, in order, at scale 1. */
export interface StageBase {
  modelDir: string;
  loras: string[];
}

export interface StageModels {
  unet: UNet;
  textEncoder: TextEncoder;
  /** Loaded when first needed (pixels, class images, validation): see ensureVae. */
  vae?: VAE;
  ensureVae(): Promise<VAE>;
  /** vae/config.json's scaling_factor (known without loading the VAE). */
  vaeScalingFactor: number;
  tokenizer: ClipTokenizer;
  schedulerConfig: Record<string, unknown>;
  groups: ParamGroupSpec[];
  /** The adapter name of the trained LoRA (LoRA stages). */
  loraName?: string;
  dispose(): void;
}

export const TRAINED_LORA = "trained";

/** The stage's frozen base: models in the run's precision with earlier stages' LoRAs fused in. */
export async function loadStageBase(
  base: StageBase,
  stage: StageConfig,
  placement: Placement,
  options: { loadVae: boolean; variant?: string },
): Promise<StageModels> {
  const dir = base.modelDir;
  for (const part of ["unet", "text_encoder", "tokenizer", "scheduler"]) {
    if (!existsSync(join(dir, part))) throw new Error(`${dir}: missing ${part}/ (not a Stable Diffusion model folder)`);
  }
  // Trainable full models keep the frozen dtype too: AdamW holds float32 master weights.
  const load = { dtype: placement.weightDtype, device: placement.device, variant: options.variant };
  const unet = await UNet.load(join(dir, "unet"), load);
  let textEncoder: TextEncoder | undefined;
  let vae: VAE | undefined;
  const disposeAll = (): void => {
    unet.dispose();
    textEncoder?.dispose();
    vae?.dispose();
  };
  try {
    textEncoder = await TextEncoder.load(join(dir, "text_encoder"), load);
    if (options.loadVae) vae = await VAE.load(join(dir, "vae"), load);
    const tokenizer = await ClipTokenizer.fromPretrained(join(dir, "tokenizer"));
    const vaeConfigPath = join(dir, "vae", "config.json");
    const vaeScalingFactor = parseVAEConfig(readJsonFile(vaeConfigPath), vaeConfigPath).scaling_factor;
    const { _source: _ignored, ...schedulerConfig } = readSchedulerConfig(dir);

    // Earlier stages' LoRAs become part of the frozen base.
    if (base.loras.length) {
      const names: string[] = [];
      for (const [i, path] of base.loras.entries()) {
        names.push(await applyLoraFile({ unet, textEncoder }, path, { name: `base_${i}` }));
      }
      await fuseLora({ unet, textEncoder }, { names, permanent: true }); // folds them in and drops the adapters
    }
    unet.setGradientCheckpointing(stage.gradient_checkpointing);
    textEncoder.setGradientCheckpointing(stage.gradient_checkpointing);
    const models: StageModels = {
      unet,
      textEncoder,
      vae,
      tokenizer,
      schedulerConfig,
      groups: [],
      vaeScalingFactor,
      ensureVae: async () => (models.vae ??= vae = await VAE.load(join(dir, "vae"), load)),
      dispose: disposeAll,
    };
    return models;
  } catch (error) {
    disposeAll();
    throw error;
  }
}

/** Adds what the stage trains: LoRA adapters (fresh and seeded, or init_lora's) or whole models. */
export async function addTrainable(
  models: StageModels,
  stage: StageConfig & { name: string },
  seed: number,
): Promise<void> {
  const lora = stage.lora;
  if (stage.init_lora) await attachInitLora(models, stage, TRAINED_LORA);
  const parts = [
    { name: "unet", mode: stage.train_unet, model: models.unet, targets: lora.unet_targets },
    {
      name: "text_encoder",
      mode: stage.train_text_encoder,
      model: models.textEncoder,
      targets: lora.text_encoder_targets,
    },
  ] as const;
  for (const [seedOffset, part] of parts.entries()) {
    if (part.mode === "full") models.groups.push({ name: part.name, full: true });
    if (part.mode !== "lora") continue;
    const params = stage.init_lora
      ? await loraParameters(part.model, TRAINED_LORA)
      : (
          await createTrainableLora(part.model, {
            name: TRAINED_LORA,
            targets: part.targets,
            rank: lora.rank,
            alpha: lora.alpha ?? lora.rank,
            dropout: lora.dropout,
            init: lora.init,
            seed: seed + seedOffset,
            type: lora.type,
            factor: lora.factor,
            decomposeBoth: lora.decompose_both,
          })
        ).parameters;
    models.groups.push({ name: part.name, params: params as [string, Tensor][] });
    models.loraName = TRAINED_LORA;
  }
}
