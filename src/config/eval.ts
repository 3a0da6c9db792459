// The evaluation config (YAML/JSON file, CLI flags or an object): score existing image
// folders (mode A, `images`) or generate with a base model and LoRA variants first
// (mode B, `generate`). snake_case keys, as in the training config.
import { z } from "zod";

import { ConfigError, parseConfig } from "./errors.js";

export const ImageFolderSchema = z.strictObject({
  path: z.string().min(1).describe("folder of images (searched recursively)"),
  name: z.string().min(1).optional().describe("variant name in tables and grids (default: the folder's name)"),
});

export const LoraRefSchema = z.strictObject({
  path: z.string().min(1).describe("LoRA file or folder (diffusers, peft or kohya)"),
  scale: z.number().default(1),
  name: z.string().min(1).optional(),
});

export const VariantSchema = z.strictObject({
  name: z
    .string()
    .regex(/^(?!\.\.?$)[^\\/]+$/, "a variant name is a folder name: no / or \\, not . or ..")
    .describe("names the variant's column and its folder images/<name>/"),
  loras: z.array(LoraRefSchema).min(1),
});

export const GenerateSchema = z.strictObject({
  model: z.string().min(1).describe("diffusers model folder or hub id"),
  prompts: z.array(z.string()).min(1),
  negative_prompt: z.string().default(""),
  seeds: z.array(z.int().min(0)).min(1).default([0, 1, 2]),
  sampler: z
    .string()
    .min(1)
    .optional()
    .describe(
      'ddim, pndm, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras, ddpm, or as A1111/ComfyUI/kohya name them ("DPM++ 2M Karras", "Euler a"); default: the model\'s scheduler',
    ),
  steps: z.int().min(1).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  width: z.int().min(8).multipleOf(8).optional(),
  height: z.int().min(8).multipleOf(8).optional(),
  include_base: z.boolean().default(true).describe('also generate with no LoRA (variant "base")'),
  base_name: z
    .string()
    .regex(/^(?!\.\.?$)[^\\/]+$/, "a variant name is a folder name: no / or \\, not . or ..")
    .default("base")
    .describe("the name of the no-LoRA variant"),
  variants: z.array(VariantSchema).default([]),
  dtype: z.enum(["float32", "float16", "bfloat16"]).optional().describe("the pipeline's dtype (default float32)"),
  variant: z.string().optional().describe('weights variant of the model, e.g. "fp16"'),
  device: z.string().optional().describe("where the pipeline runs (default: the eval's device)"),
});

export const EvalConfigSchema = z
  .strictObject({
    output_dir: z.string().min(1),
    title: z.string().default("sdtune evaluation"),
    clip_model: z.string().min(1).default("openai/clip-vit-large-patch14").describe("CLIP folder or hub id"),
    clip_dtype: z.enum(["float32", "float16", "bfloat16"]).default("float32"),
    device: z.string().default("cpu"),
    batch_size: z.int().min(1).default(32),
    images: z.array(ImageFolderSchema).min(1).optional().describe("mode A: score these folders (one variant each)"),
    prompts_file: z
      .string()
      .optional()
      .describe("mode A: prompts for images that carry none (one per line, or a JSON list), in file-name order"),
    generate: GenerateSchema.optional().describe("mode B: generate the images first"),
    instance_images: z.string().optional().describe("real subject images: enables CLIP-I (DreamBooth fidelity)"),
    runs: z.array(z.string().min(1)).default([]).describe("training runs (folders with metrics.jsonl) to plot"),
    grid_cell: z.int().min(16).max(1024).default(256).describe("longest side of a grid cell in pixels"),
  })
  .superRefine((c, ctx) => {
    if (!c.images === !c.generate) {
      ctx.addIssue({
        code: "custom",
        path: [],
        message: "give either `images` (score existing folders) or `generate` (generate, then score), not both",
      });
    }
  });

export type EvalConfigInput = z.input<typeof EvalConfigSchema>;
export type EvalConfig = z.output<typeof EvalConfigSchema>;
export type GenerateConfig = z.output<typeof GenerateSchema>;

/** Validates and fills defaults; every problem names its key. */
export function parseEvalConfig(input: unknown, source = "eval config"): EvalConfig {
  const config = parseConfig(EvalConfigSchema, input, source);
  const names = config.images?.map((f, i) => f.name ?? folderName(f.path, i)) ?? [];
  if (config.generate) {
    if (config.generate.include_base) names.push(config.generate.base_name);
    names.push(...config.generate.variants.map((v) => v.name));
    if (names.length === 0) throw new ConfigError(`${source}: generate has no variants and include_base is false`);
  }
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) {
    throw new ConfigError(
      `${source}: two variants are named "${duplicate}"; give each folder or variant a unique name`,
    );
  }
  return config;
}

/** A folder's last path segment, or "images-<i>". */
export function folderName(path: string, index: number): string {
  return (
    path
      .replace(/[\\/]+$/, "")
      .split(/[\\/]/)
      .pop() || `images-${index + 1}`
  );
}
