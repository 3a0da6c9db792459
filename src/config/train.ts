// The training config: one YAML/JSON file (or object) for text-to-image LoRA,
// DreamBooth (with prior preservation), full fine-tuning and multi-stage runs.
// Key names follow diffusers' training scripts where they exist, so a diffusers
// user can read a config without a manual. Every field has a default except the
// model, the output folder, the dataset and the step count.
import { z } from "zod";

import { ConfigError, parseConfig } from "./errors.js";
import { ADAMW_DEFAULTS, OPTIMIZERS, optimizerDefaultLearningRate, stageOptimizerProblems } from "./optimizer.js";
import { resolveSamplerName } from "./samplers.js";

/** A sampler as diffusers, AUTOMATIC1111, ComfyUI or kohya spell it (resolved again where it is used). */
const Sampler = z.string().superRefine((name, ctx) => {
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
const L = TRAIN_LIMITS;

export const LoraSchema = z.strictObject({
  type: z
    .enum(["lora", "dora", "loha", "lokr"])
    .default("lora")
    .describe("lora; dora (peft's weight-decomposed LoRA); loha, lokr (LyCORIS' Hadamard / Kronecker products)"),
  rank: z.int().min(1).max(L.loraRank).default(4).describe("LoRA rank r"),
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
    .max(L.loraRank)
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
    .max(L.repeats)
    .default(1)
    .describe("how many times each image appears per epoch (kohya's repeats)"),
});

export const PriorPreservationSchema = z.strictObject({
  class_prompt: z.string().min(1),
  class_data_dir: z.string().optional().describe("class images; generated with the base model when missing or too few"),
  num_class_images: z.int().min(1).max(L.classImages).default(100),
  prior_loss_weight: z.number().min(0).default(1),
  sample_batch_size: z.int().min(1).max(L.batchSize).default(4),
  num_inference_steps: z.int().min(1).max(L.inferenceSteps).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  sampler: Sampler.optional(),
});

export const ValidationSchema = z.strictObject({
  prompts: z.array(z.string()).min(1).max(L.listLength),
  negative_prompt: z.string().default(""),
  every_n_steps: z.int().min(1).max(L.steps).default(100),
  seeds: z.array(z.int().min(0)).min(1).max(L.listLength).default([0]),
  num_inference_steps: z.int().min(1).max(L.inferenceSteps).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  sampler: Sampler.optional(),
  width: z.int().min(8).max(L.side).multipleOf(8).optional(),
  height: z.int().min(8).max(L.side).multipleOf(8).optional(),
});

export const StageEvaluationSchema = z.strictObject({
  prompts: z.array(z.string()).min(1).max(L.listLength),
  negative_prompt: z.string().default(""),
  seeds: z.array(z.int().min(0)).min(1).max(L.listLength).default([0, 1, 2]),
  sampler: Sampler.optional(),
  num_inference_steps: z.int().min(1).max(L.inferenceSteps).default(25),
  guidance_scale: z.number().min(0).default(7.5),
  width: z.int().min(8).max(L.side).multipleOf(8).optional(),
  height: z.int().min(8).max(L.side).multipleOf(8).optional(),
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
  min_side: z.int().min(64).max(L.side).default(256),
  max_side: z.int().min(64).max(L.side).default(1024),
  step: z.int().min(8).max(L.side).default(64),
});

/**
 * A stage name becomes a folder and file names inside output_dir: portable characters only, so
 * no name can climb out of the run ("../x"), nest folders ("a/b") or differ between systems.
 */
const StageName = z
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

export const stageShape = {
  name: StageName.optional(),
  method: z.enum(["text-to-image", "dreambooth"]).default("text-to-image"),
  dataset: DatasetSchema,
  instance_prompt: z.string().min(1).optional().describe("DreamBooth: the prompt with the subject's identifier"),
  prior_preservation: PriorPreservationSchema.optional(),
  train_unet: z.enum(["lora", "full", "none"]).default("lora"),
  train_text_encoder: z.enum(["none", "lora", "full"]).default("none"),
  lora: LoraSchema.default(LoraSchema.parse({})),
  resolution: z.int().min(8).max(L.side).multipleOf(8).optional().describe("default: the UNet's sample_size in pixels"),
  center_crop: z.boolean().default(false),
  random_flip: z.boolean().default(false),
  buckets: BucketSchema.optional(),
  caption_dropout: z.number().min(0).max(1).default(0),
  shuffle_tags: z.boolean().default(false),
  keep_tags: z.int().min(0).max(L.tags).default(0),
  train_batch_size: z.int().min(1).max(L.batchSize).default(1),
  gradient_accumulation_steps: z.int().min(1).max(L.accumulation).default(1),
  max_train_steps: z.int().min(1).max(L.steps).optional().describe("optimizer steps; overrides num_train_epochs"),
  num_train_epochs: z
    .int()
    .min(1)
    .max(L.steps)
    .optional()
    .describe("epochs (passes over the dataset with its repeats), when max_train_steps is not given"),
  save_every_n_steps: z.int().min(1).max(L.steps).optional().describe("also write the LoRA every N steps"),
  save_every_n_epochs: z.int().min(1).max(L.steps).optional().describe("also write the LoRA every N epochs"),
  init_lora: z
    .string()
    .min(1)
    .optional()
    .describe("start from this LoRA file (diffusers, kohya or peft; kohya's network_weights)"),
  learning_rate: z
    .number()
    .positive()
    .optional()
    .describe("default: 1e-4 for LoRA, 5e-6 for full fine-tuning (diffusers' DreamBooth script)"),
  text_encoder_learning_rate: z.number().positive().optional(),
  lr_scheduler: z.enum(LR_SCHEDULES).default("constant"),
  lr_warmup_steps: z.int().min(0).max(L.steps).default(0),
  lr_num_cycles: z.number().positive().optional(),
  lr_power: z.number().positive().default(1),
  optimizer: z.enum(OPTIMIZERS).default("adamw").describe("adamw, prodigy, adafactor or lion (README: Optimizers)"),
  optimizer_args: z
    .record(z.string(), z.unknown())
    .default({})
    .describe("the optimizer's arguments under its reference's names (e.g. prodigy: d_coef, use_bias_correction)"),
  adam_beta1: z.number().min(0).lt(1).default(ADAMW_DEFAULTS.adam_beta1),
  adam_beta2: z.number().min(0).lt(1).default(ADAMW_DEFAULTS.adam_beta2),
  adam_weight_decay: z.number().min(0).default(ADAMW_DEFAULTS.adam_weight_decay),
  adam_epsilon: z.number().positive().default(ADAMW_DEFAULTS.adam_epsilon),
  max_grad_norm: z.number().min(0).default(1).describe("0 turns clipping off"),
  snr_gamma: z.number().positive().optional().describe("min-SNR-gamma loss weighting (5 is the paper's value)"),
  noise_offset: z.number().min(0).default(0),
  prediction_type: z.enum(["epsilon", "v_prediction"]).optional().describe("default: the scheduler config's"),
  gradient_checkpointing: z.boolean().default(false),
  cache_latents: z.boolean().default(false),
  cache_text_embeddings: z.boolean().default(false),
  use_ema: z.boolean().default(false),
  ema_decay: z.number().min(0).max(1).default(0.9999),
  checkpointing_steps: z.int().min(1).max(L.steps).default(500),
  checkpoints_total_limit: z.int().min(1).max(L.listLength).default(3),
  validation: ValidationSchema.optional(),
  evaluate: StageEvaluationSchema.optional().describe(
    "evaluate the stage's result when it ends (CLIP score, grids, report)",
  ),
  save: SaveSchema.default(SaveSchema.parse({})),
};

export const StageSchema = z.strictObject(stageShape).superRefine((stage, ctx) => {
  if (stage.max_train_steps === undefined && stage.num_train_epochs === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["max_train_steps"],
      message: "how long to train: give max_train_steps or num_train_epochs",
    });
  }
  const savesLora = stage.train_unet === "lora" || stage.train_text_encoder === "lora";
  for (const key of ["save_every_n_steps", "save_every_n_epochs", "init_lora"] as const) {
    if (stage[key] !== undefined && !savesLora) {
      ctx.addIssue({ code: "custom", path: [key], message: "applies to LoRA training; this stage trains no LoRA" });
    }
  }
  if (stage.optimizer === "adamw8bit") {
    ctx.addIssue({ code: "custom", path: ["optimizer"], message: ADAMW8BIT_REFUSAL });
  }
  for (const p of stageOptimizerProblems(stage)) ctx.addIssue({ code: "custom", path: p.path, message: p.message });
  if (stage.cache_latents && !stage.center_crop) {
    ctx.addIssue({
      code: "custom",
      path: ["cache_latents"],
      message: "cached latents need a fixed crop: set center_crop: true (a random crop cuts a new box every step)",
    });
  }
  if (stage.cache_text_embeddings && stage.shuffle_tags) {
    ctx.addIssue({
      code: "custom",
      path: ["cache_text_embeddings"],
      message: "shuffle_tags makes a new caption nearly every step, so text embeddings cannot be cached",
    });
  }
  if (stage.method === "dreambooth" && !stage.instance_prompt) {
    ctx.addIssue({
      code: "custom",
      path: ["instance_prompt"],
      message: 'DreamBooth needs an instance_prompt (e.g. "a photo of sks dog")',
    });
  }
  if (stage.method !== "dreambooth" && stage.prior_preservation) {
    ctx.addIssue({
      code: "custom",
      path: ["prior_preservation"],
      message: "prior preservation applies to method: dreambooth only",
    });
  }
  if (stage.save.extract_lora && stage.train_unet !== "full" && stage.train_text_encoder !== "full") {
    ctx.addIssue({
      code: "custom",
      path: ["save", "extract_lora"],
      message: "extract_lora saves a full fine-tune as a LoRA: set train_unet or train_text_encoder to full",
    });
  }
  if (stage.train_unet === "none" && stage.train_text_encoder === "none") {
    ctx.addIssue({
      code: "custom",
      path: ["train_unet"],
      message: "nothing to train: train_unet and train_text_encoder are both none",
    });
  }
  if (stage.use_ema && stage.train_unet !== "full") {
    ctx.addIssue({ code: "custom", path: ["use_ema"], message: "EMA applies to full fine-tuning (train_unet: full)" });
  }
  if (stage.cache_text_embeddings && stage.train_text_encoder !== "none") {
    ctx.addIssue({
      code: "custom",
      path: ["cache_text_embeddings"],
      message: "text embeddings cannot be cached while the text encoder trains",
    });
  }
  if (stage.lora.type !== "lora") loraTypeIssues(stage, ctx);
  if (stage.buckets?.enabled && stage.buckets.min_side > stage.buckets.max_side) {
    ctx.addIssue({ code: "custom", path: ["buckets", "min_side"], message: "min_side must not exceed max_side" });
  }
});
export type StageConfig = z.output<typeof StageSchema>;

/** The logs `report_to` can ask for (src/train/logs.ts writes them). */
export const REPORT_TO = ["tensorboard", "wandb"] as const;
export type ReportTo = (typeof REPORT_TO)[number];

function reportTargets(value: string | string[]): ReportTo[] {
  const asked = Array.isArray(value) ? value : [value];
  return REPORT_TO.filter((t) => asked.includes(t) || asked.includes("all"));
}

const ReportToName = z.enum([...REPORT_TO, "all", "none"]);

/** What DoRA / LoHa / LoKr do not combine with. */
function loraTypeIssues(stage: z.output<z.ZodObject<typeof stageShape>>, ctx: z.RefinementCtx): void {
  const type = stage.lora.type;
  const other = stage.save.lora_formats.filter((f) => f !== "kohya");
  if (other.length && type !== "dora") {
    ctx.addIssue({
      code: "custom",
      path: ["save", "lora_formats"],
      message: `lora.type ${type} is saved in the kohya (LyCORIS) layout only: set save.lora_formats: [kohya] (not ${other.join(", ")})`,
    });
  }
  if ((type === "loha" || type === "lokr") && stage.lora.dropout > 0) {
    ctx.addIssue({ code: "custom", path: ["lora", "dropout"], message: `LyCORIS' ${type} has no dropout: set 0` });
  }
}

const topShape = {
  $schema: z.string().optional(),
  model: z.string().min(1).describe("a diffusers folder or a Hugging Face model id"),
  revision: z.string().optional(),
  variant: z.string().optional().describe('weights variant, e.g. "fp16"'),
  output_dir: z.string().min(1),
  seed: z.int().min(0).default(0),
  device: z
    .string()
    .regex(/^(auto|cpu|cuda(:\d+)?)$/, 'expected "auto", "cpu", "cuda" or "cuda:N"')
    .default("auto"),
  mixed_precision: z
    .enum(["auto", "no", "fp16", "bf16"])
    .default("auto")
    .describe("auto: bf16 on GPUs that have it, fp16 with loss scaling on older ones, fp32 on CPU"),
  cache_dir: z
    .string()
    .optional()
    .describe("latent / text-embedding cache folder (default: $SDTUNE_CACHE_DIR or ~/.cache/sdtune)"),
  report_to: z
    .union([ReportToName, z.array(ReportToName).max(REPORT_TO.length + 2)])
    .default([])
    .describe(
      "logs besides metrics.jsonl (diffusers' --report_to): tensorboard (event files in <output_dir>/logs), wandb (an offline run in <output_dir>/wandb), all or none",
    ),
  stages: z.array(z.record(z.string(), z.unknown())).min(1).optional(),
};

/** The top level: run-wide keys, plus any stage key as a default for every stage. */
const TopSchema = z.strictObject({ ...topShape, ...partialShape(stageShape) });

export interface TrainConfig {
  model: string;
  revision?: string;
  variant?: string;
  output_dir: string;
  seed: number;
  device: string;
  mixed_precision: "auto" | "no" | "fp16" | "bf16";
  cache_dir?: string;
  report_to: ReportTo[];
  stages: (StageConfig & { name: string; learning_rate: number })[];
}

/**
 * Validates a raw config (parsed YAML/JSON). A config without `stages` is one
 * stage; with `stages`, top-level stage keys are defaults each stage may override.
 * Throws a ConfigError that names every bad path.
 */
export function resolveTrainConfig(raw: unknown, source = "config"): TrainConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${source}: the config must be a mapping of keys to values`);
  }
  const top = parseConfig(TopSchema, raw, source);
  const input = raw as Record<string, unknown>;
  const topKeys = new Set(Object.keys(topShape));
  const defaults = Object.fromEntries(Object.entries(input).filter(([k]) => !topKeys.has(k)));
  const rawStages = (input.stages as Record<string, unknown>[] | undefined) ?? [{}];
  const problems: string[] = [];
  const stages: TrainConfig["stages"] = [];
  rawStages.forEach((stage, i) => {
    const where = input.stages ? `stages[${i}]` : "";
    try {
      const merged = deepMerge(defaults, stage);
      const parsed = parseConfig(StageSchema, merged, source);
      const full = parsed.train_unet === "full" || parsed.train_text_encoder === "full";
      const resolvedStage = {
        ...parsed,
        name: parsed.name ?? (rawStages.length > 1 ? `stage-${i + 1}` : "train"),
        learning_rate: parsed.learning_rate ?? optimizerDefaultLearningRate(parsed.optimizer) ?? (full ? 5e-6 : 1e-4),
      };
      LORA_KEYS_GIVEN.set(resolvedStage, isPlainObject(merged.lora) ? Object.keys(merged.lora) : []);
      stages.push(resolvedStage);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(
        ...error.problems.map((p) =>
          where && !p.startsWith("(top level)")
            ? `${where}.${p}`
            : where
              ? `${where}: ${p.replace(/^\(top level\): /, "")}`
              : p,
        ),
      );
    }
  });
  if (problems.length) throw new ConfigError(`${source}: invalid config:\n  ${problems.join("\n  ")}`, problems);
  const names = stages.map((s) => s.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw new ConfigError(`${source}: two stages are named "${duplicate}"; stage names must be unique`);
  return {
    model: top.model,
    revision: top.revision,
    variant: top.variant,
    output_dir: top.output_dir,
    seed: top.seed,
    device: top.device,
    mixed_precision: top.mixed_precision,
    cache_dir: top.cache_dir,
    report_to: reportTargets(top.report_to),
    stages,
  };
}

/** The lora.* keys each resolved stage's config gave (init_lora: the rest come from the file). */
const LORA_KEYS_GIVEN = new WeakMap<object, string[]>();
export const loraKeysGiven = (stage: object): readonly string[] => LORA_KEYS_GIVEN.get(stage) ?? [];

/** JSON Schema of the config file, for editors (yaml-language-server, VS Code). */
export function trainConfigJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(
    z.strictObject({
      ...topShape,
      ...partialShape(stageShape),
      stages: z
        .array(z.strictObject(partialShape(stageShape)))
        .min(1)
        .optional(),
    }),
    { unrepresentable: "any" },
  ) as Record<string, unknown>;
  return { ...schema, title: "sdtune training config" };
}

function partialShape<T extends Record<string, z.ZodType>>(shape: T): { [K in keyof T]: z.ZodOptional<T[K]> } {
  return Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, v.optional()])) as {
    [K in keyof T]: z.ZodOptional<T[K]>;
  };
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
