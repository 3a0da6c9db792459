// The parts of the training config: the sub-objects of a stage (LoRA, dataset, prior
// preservation, validation, evaluation, saving, buckets), the stage name rule and the bounds
// every size and count is checked against. src/config/train.ts assembles them into stages.
import { z } from "zod";

import { resolveSamplerName } from "./samplers.js";

/** A sampler as diffusers, AUTOMATIC1111, ComfyUI or kohya spell it (resolved again where it is used). */
export const Sampler = z.string().superRefine((name, ctx) => {
  try {
    resolveSamplerName(name);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: (error as Error).message });
  }
});

/** Learning-rate schedules (diffusers' get_scheduler names); src/train/lr_schedule.ts computes them. */
export const LR_SCHEDULES = [
  "constant",
  "constant_with_warmup",
  "linear",
  "cosine",
  "cosine_with_restarts",
  "polynomial",
] as const;
export type LrScheduleName = (typeof LR_SCHEDULES)[number];

/** The one refusal of the 8-bit optimizer (this build has no GPU kernels). */
export const ADAMW8BIT_REFUSAL =
  "optimizer adamw8bit needs the CUDA build (its block-wise 8-bit state is a GPU kernel); " +
  "this build has no GPU path. Use optimizer: adamw.";

/**
 * Upper bounds on every size and count, checked before anything is allocated: generous for
 * Stable Diffusion work (SDXL trains at 1024 px; LoRA ranks past 256 are rare), far below what
 * would exhaust a machine or run for ever.
 */
export const TRAIN_LIMITS = {
  loraRank: 1024,
  side: 4096,
  batchSize: 1024,
  accumulation: 4096,
  steps: 100_000_000,
  repeats: 10_000,
  classImages: 100_000,
  inferenceSteps: 1000,
  listLength: 1000,
  tags: 1000,
} as const;

export const LoraSchema = z.strictObject({
  type: z
    .enum(["lora", "dora", "loha", "lokr"])
    .default("lora")
    .describe("lora; dora (peft's weight-decomposed LoRA); loha, lokr (LyCORIS' Hadamard / Kronecker products)"),
  rank: z.int().min(1).max(TRAIN_LIMITS.loraRank).default(4).describe("LoRA rank r"),
  alpha: z.number().positive().optional().describe("LoRA alpha; the update is scaled by alpha / rank (default: rank)"),
  dropout: z.number().min(0).lt(1).default(0),
  init: z
    .enum(["gaussian", "kaiming"])
    .default("gaussian")
    .describe("gaussian: A ~ N(0, 1/r), B = 0 (diffusers scripts); kaiming: peft's default"),
  unet_targets: z
    .union([z.array(z.string().min(1)), z.string().min(1)])
    .default(["to_q", "to_k", "to_v", "to_out.0"])
    .describe("peft-style target_modules for the UNet"),
  text_encoder_targets: z
    .union([z.array(z.string().min(1)), z.string().min(1)])
    .default(["q_proj", "k_proj", "v_proj", "out_proj"])
    .describe("a list of module names, or one regular expression matched against whole module paths"),
  factor: z
    .int()
    .min(-1)
    .max(TRAIN_LIMITS.loraRank)
    .refine((f) => f !== 0, "factor must be -1 or a positive integer")
    .default(-1)
    .describe("LoKr: LyCORIS' factor (-1: split each dimension as evenly as possible)"),
  decompose_both: z.boolean().default(false).describe("LoKr: LyCORIS' decompose_both (w1 low-rank too)"),
  use_tucker: z
    .literal(false, "use_tucker (LyCORIS' Tucker decomposition of conv kernels) is not supported: remove it")
    .optional(),
});

export const DatasetSchema = z.strictObject({
  type: z
    .enum(["imagefolder", "parquet", "captions", "dreambooth"])
    .optional()
    .describe("inferred from the folder when omitted"),
  path: z.string().min(1).describe("a local folder/file or a Hugging Face dataset id"),
  revision: z.string().optional(),
  split: z.string().default("train"),
  caption_column: z.string().default("text"),
  image_column: z.string().default("image"),
  caption_ext: z
    .string()
    .optional()
    .describe('caption sidecar extension (captions folders: default ".txt"; DreamBooth: only when given)'),
  repeats: z
    .int()
    .min(1)
    .max(TRAIN_LIMITS.repeats)
    .default(1)
    .describe("how many times each image appears per epoch (kohya's repeats)"),
});

export const PriorPreservationSchema = z.strictObject({
  class_prompt: z.string().min(1),
  class_data_dir: z.string().optional().describe("class images; generated with the base model when missing or too few"),
  num_class_images: z.int().min(1).max(TRAIN_LIMITS.classImages).default(100),
  prior_loss_weight: z.number().min(0).default(1),
  sample_batch_size: z.int().min(1).max(TRAIN_LIMITS.batchSize).default(4),
  num_inference_steps: z.int().min(1).max(TRAIN_LIMITS.inferenceSteps).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  sampler: Sampler.optional(),
});

export const ValidationSchema = z.strictObject({
  prompts: z.array(z.string()).min(1).max(TRAIN_LIMITS.listLength),
  negative_prompt: z.string().default(""),
  every_n_steps: z.int().min(1).max(TRAIN_LIMITS.steps).default(100),
  seeds: z.array(z.int().min(0)).min(1).max(TRAIN_LIMITS.listLength).default([0]),
  num_inference_steps: z.int().min(1).max(TRAIN_LIMITS.inferenceSteps).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  sampler: Sampler.optional(),
  width: z.int().min(8).max(TRAIN_LIMITS.side).multipleOf(8).optional(),
  height: z.int().min(8).max(TRAIN_LIMITS.side).multipleOf(8).optional(),
});

export const StageEvaluationSchema = z.strictObject({
  prompts: z.array(z.string()).min(1).max(TRAIN_LIMITS.listLength),
  negative_prompt: z.string().default(""),
  seeds: z.array(z.int().min(0)).min(1).max(TRAIN_LIMITS.listLength).default([0, 1, 2]),
  sampler: Sampler.optional(),
  num_inference_steps: z.int().min(1).max(TRAIN_LIMITS.inferenceSteps).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  width: z.int().min(8).max(TRAIN_LIMITS.side).multipleOf(8).optional(),
  height: z.int().min(8).max(TRAIN_LIMITS.side).multipleOf(8).optional(),
  clip_model: z.string().default("openai/clip-vit-large-patch14").describe("a CLIP folder or hub id for CLIP score"),
  include_base: z.boolean().default(true).describe("also generate with the stage's starting model, for comparison"),
  instance_images: z.string().optional().describe("DreamBooth: images for CLIP-I (default: the instance folder)"),
});

export const SaveSchema = z.strictObject({
  lora_formats: z
    .array(z.enum(["diffusers", "kohya", "peft"]))
    .min(1)
    .default(["diffusers", "kohya"]),
  full_model: z
    .union([z.boolean(), z.enum(["diffusers", "single-file"])])
    .default(false)
    .describe(
      "also write a full diffusers model (with any LoRA merged in); single-file: also as model.safetensors in the LDM layout AUTOMATIC1111 and ComfyUI load",
    ),
  extract_lora: z
    .strictObject({
      rank: z.int().min(1).max(4096),
      conv_rank: z.int().min(1).max(4096).optional(),
      energy: z.number().gt(0).max(1).optional(),
    })
    .optional()
    .describe(
      "full fine-tunes: save the stage as a LoRA extracted from (fine-tuned - base) instead of a whole model (kept only with full_model); the next stage trains on base + that LoRA",
    ),
});

export const BucketSchema = z.strictObject({
  enabled: z.boolean().default(true),
  min_side: z.int().min(64).max(TRAIN_LIMITS.side).default(256),
  max_side: z.int().min(64).max(TRAIN_LIMITS.side).default(1024),
  step: z.int().min(8).max(TRAIN_LIMITS.side).default(64),
});

/**
 * A stage name becomes a folder and file names inside output_dir: portable characters only, so
 * no name can climb out of the run ("../x"), nest folders ("a/b") or differ between systems.
 */
export const StageName = z
  .string()
  .min(1)
  .max(64)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
    'a stage name becomes a folder inside output_dir: use letters, digits, ".", "_" and "-", starting with a letter or digit (no "/", "\\", spaces or absolute paths)',
  )
  .refine((n) => !n.includes(".."), 'a stage name must not contain ".."')
  .refine((n) => !n.endsWith("."), 'a stage name must not end with "." (Windows drops it)')
  .refine(
    (n) => !/^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$/i.test(n),
    "a stage name must not be a reserved Windows device name (CON, NUL, COM1...)",
  );
