// Will the run fit? Before anything is built, each stage's memory is estimated from the model
// configs and the stage's settings (weights, trained parameters with their gradients and AdamW
// moments, the activations a step keeps for its backward) and compared with what the device has:
// a run that cannot fit stops with the estimate and what to change, instead of being killed by
// the kernel hours later.
import { existsSync } from "node:fs";
import { join } from "node:path";

import type { StageConfig, TrainConfig } from "../config/train.js";
import { parseClipTextEncoderConfig, nativeClipTextConfig } from "../models/clip_config.js";
import { nativeUNetConfig, nativeVAEConfig, parseUNetConfig, parseVAEConfig } from "../models/config.js";
import { readJsonFile } from "../models/files.js";
import { dtypeBytes, textEncoderParameters, unetActivations, unetParameters, vaeParameters } from "../models/memory.js";
import type { NativeUNetConfig } from "../native/index.js";
import { checkMemory } from "../runtime.js";
import type { Placement } from "./precision.js";

/** Trained float32 parameters carry a gradient and two AdamW moments (and a master copy under mixed precision). */
const TRAINED_BYTES = 16;

/** Throws, naming the stage, when a stage of `config` cannot fit on the placement's device. */
export function checkTrainingMemory(config: TrainConfig, modelDir: string, placement: Placement): void {
  const read = (part: string): unknown => readJsonFile(join(modelDir, part, "config.json"));
  const unetConfig = parseUNetConfig(read("unet"), join(modelDir, "unet", "config.json"));
  const unet = nativeUNetConfig(unetConfig);
  const sampleSize = ([unetConfig.sample_size].flat() as number[])[0]!;
  // A model without vae/ trains on cached latents only: 8x, as every Stable Diffusion VAE.
  const vae = existsSync(join(modelDir, "vae"))
    ? nativeVAEConfig(parseVAEConfig(read("vae"), join(modelDir, "vae", "config.json")))
    : undefined;
  const text = nativeClipTextConfig(
    parseClipTextEncoderConfig(read("text_encoder"), join(modelDir, "text_encoder", "config.json")).config,
  );
  const params = { unet: unetParameters(unet), vae: vae ? vaeParameters(vae) : 0, text: textEncoderParameters(text) };
  const weightBytes = dtypeBytes(placement.weightDtype);
  const weights = (params.unet + params.vae + params.text) * weightBytes;
  const vaeScale = vae ? 2 ** (vae.blockOutChannels.length - 1) : 8;
  for (const stage of config.stages) {
    const trained =
      (stage.train_unet === "full" ? params.unet : stage.train_unet === "lora" ? unetLoraParameters(unet, stage) : 0) +
      (stage.train_text_encoder === "full"
        ? params.text
        : stage.train_text_encoder === "lora"
          ? text.numHiddenLayers * 8 * text.hiddenSize * stage.lora.rank
          : 0);
    const side = (stage.resolution ?? sampleSize * vaeScale) / vaeScale;
    const batch = stage.train_batch_size * (stage.prior_preservation ? 2 : 1);
    const act = unetActivations(unet, side, side, stage.gradient_checkpointing);
    checkMemory(
      `stage "${stage.name}"`,
      {
        weights,
        "trained parameters with gradients and optimizer state": trained * TRAINED_BYTES,
        [`activations (batch ${batch} at ${side * vaeScale}x${side * vaeScale})`]:
          (act.kept * batch + act.transient) * weightBytes,
      },
      placement.device,
      "Lower train_batch_size or resolution, turn on gradient_checkpointing, train LoRA instead of the full UNet, " +
        "or use mixed_precision bf16 (fp16 on a GPU).",
    );
  }
}

/**
 * LoRA parameters on the UNet's attention: per transformer layer, the four self-attention
 * projections (c -> c) and the four cross-attention ones (q, out: c -> c; k, v: cross -> c), each
 * rank x (in + out). Targets beyond attention (feed-forward, convolutions) are counted twice over.
 */
function unetLoraParameters(c: NativeUNetConfig, stage: StageConfig): number {
  const r = stage.lora.rank;
  const targets = Array.isArray(stage.lora.unet_targets) ? stage.lora.unet_targets : [stage.lora.unet_targets];
  const attentionOnly = targets.every((t) => /^(to_q|to_k|to_v|to_out(\.0)?)$/.test(t));
  let n = 0;
  const count = (i: number, blocks: number): void => {
    const ch = c.blockOutChannels[i]!;
    n += blocks * c.transformerLayersPerBlock[i]! * r * (14 * ch + 2 * c.crossAttentionDim[i]!);
  };
  const last = c.blockOutChannels.length - 1;
  for (let i = 0; i <= last; i++) {
    if (c.downBlockTypes[i]!.startsWith("CrossAttn")) count(i, c.layersPerBlock[i]!);
    if (c.upBlockTypes[last - i]!.startsWith("CrossAttn")) count(i, c.layersPerBlock[i]! + 1);
  }
  if (c.midBlockType) count(last, 1);
  return attentionOnly ? n : 2 * n;
}
