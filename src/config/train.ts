// The training config: one YAML/JSON file (or object) for text-to-image LoRA,
// DreamBooth (with prior preservation), full fine-tuning and multi-stage runs.
// Key names follow diffusers' training scripts where they exist, so a diffusers
// user can read a config without a manual. Every field has a default except the
// model, the output folder, the dataset and the step count.
import { z } from "zod";

import { ConfigError, parseConfig } from "./errors.js";
import { ADAMW_DEFAULTS, OPTIMIZERS, optimizerDefaultLearningRate, stageOptimizerProblems } from "./optimizer.js";

import {
  BucketSchema,
  DatasetSchema,
  LoraSchema,
  PriorPreservationSchema,
  SaveSchema,
  StageEvaluationSchema,
  StageName,
  TRAIN_LIMITS,
  ValidationSchema,
  LR_SCHEDULES,
  ADAMW8BIT_REFUSAL,
} from "./train_parts.js";

// The parts are part of this module's surface (schemas, bounds, names).
export * from "./train_parts.js";

const L = TRAIN_LIMITS;

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
