// The demo's model: the Stable Diffusion architecture (UNet2DConditionModel,
// AutoencoderKL, CLIPTextModel, a CLIP BPE tokenizer, PNDM scheduler config) at a
// tiny size, randomly initialised from a seed and written as a diffusers folder.
// It trains in seconds on a CPU; its images are not meant to look like anything.
import { existsSync } from "node:fs";
import { join } from "node:path";

import { TextEncoder } from "../models/text_encoder.js";
import { UNet } from "../models/unet.js";
import { VAE } from "../models/vae.js";
import { savePipeline } from "../pipeline/save.js";
import { ClipTokenizer } from "../text/clip_tokenizer.js";
import { writeDemoTokenizer } from "./tokenizer.js";

/** Every word the demo's prompts and captions use (the tokenizer spells them as single tokens). */
export const DEMO_WORDS = [
  "a",
  "photo",
  "of",
  "thumbs",
  "up",
  "on",
  "blue",
  "green",
  "white",
  "orange",
  "gray",
  "pink",
  "background",
  "sks",
  "hand",
  "giving",
  "person",
];

const UNET = {
  sample_size: 16,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  block_out_channels: [32, 64],
  layers_per_block: 1,
  attention_head_dim: [2, 4],
  cross_attention_dim: 64,
  use_linear_projection: true,
  norm_num_groups: 32,
};

const VAE_CONFIG = {
  in_channels: 3,
  out_channels: 3,
  latent_channels: 4,
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  block_out_channels: [32, 32, 64],
  layers_per_block: 1,
  norm_num_groups: 32,
  sample_size: 64,
  scaling_factor: 0.18215,
};

const SCHEDULER = {
  _class_name: "PNDMScheduler",
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: "leading",
  trained_betas: null,
};

/** Writes the demo model into `dir` unless it is already there; resolves to `dir`. */
export async function writeDemoModel(dir: string, options: { seed?: number } = {}): Promise<string> {
  if (existsSync(join(dir, "model_index.json"))) return dir;
  const seed = options.seed ?? 42;
  const tokenizerDir = join(dir, ".tokenizer-source");
  const vocabSize = await writeDemoTokenizer(tokenizerDir, DEMO_WORDS);
  const tokenizer = await ClipTokenizer.fromPretrained(tokenizerDir);
  const unet = await UNet.fromConfig(UNET, { seed });
  const vae = await VAE.fromConfig(VAE_CONFIG, { seed: seed + 1 });
  const textEncoder = await TextEncoder.fromConfig(
    {
      architectures: ["CLIPTextModel"],
      model_type: "clip_text_model",
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      max_position_embeddings: 77,
      vocab_size: vocabSize,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      bos_token_id: vocabSize - 2,
      eos_token_id: vocabSize - 1,
      pad_token_id: vocabSize - 1,
      projection_dim: 64,
    },
    { seed: seed + 2 },
  );
  try {
    await savePipeline(dir, { unet, vae, textEncoder, tokenizer, schedulerConfig: SCHEDULER });
  } finally {
    unet.dispose();
    vae.dispose();
    textEncoder.dispose();
  }
  return dir;
}
