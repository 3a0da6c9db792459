// transformers' CLIP configs (config.json of CLIPTextModel / CLIPVisionModel /
// CLIPModel, v4.39) as zod schemas with transformers' defaults, and their validators.
// The conversion to the plain objects the native loader takes is src/models/clip_config.ts.
import { z } from "zod";

import { checkModelSizes } from "./limits.js";

/** hidden_act values the native encoder implements (transformers ACT2FN names). */
export const CLIP_ACTIVATIONS = [
  "gelu",
  "quick_gelu",
  "gelu_new",
  "gelu_pytorch_tanh",
  "gelu_fast",
  "relu",
  "silu",
  "swish",
] as const;

const positiveInt = z.number().int().positive();
const hiddenAct = z.enum(CLIP_ACTIVATIONS, {
  error: () => `unsupported activation (expected one of ${CLIP_ACTIVATIONS.join(", ")})`,
});
// Released CLIP checkpoints all use 0; the native attention kernel has no dropout.
const attentionDropout = z.number().refine((v) => v === 0, { message: "only 0.0 is supported" });

const encoderFields = {
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  projection_dim: positiveInt.default(512),
  num_hidden_layers: positiveInt.default(12),
  hidden_act: hiddenAct.default("quick_gelu"),
  layer_norm_eps: z.number().positive().default(1e-5),
  attention_dropout: attentionDropout.default(0),
  model_type: z.string().optional(),
};

function headsDivide(c: { hidden_size: number; num_attention_heads: number }, ctx: z.RefinementCtx): void {
  if (c.hidden_size % c.num_attention_heads !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["num_attention_heads"],
      message: `hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${c.num_attention_heads}`,
    });
  }
}

/** CLIPTextConfig with transformers' defaults. */
export const clipTextConfigSchema = z
  .object({
    ...encoderFields,
    vocab_size: positiveInt.default(49408),
    hidden_size: positiveInt.default(512),
    intermediate_size: positiveInt.default(2048),
    num_attention_heads: positiveInt.default(8),
    max_position_embeddings: positiveInt.default(77),
    pad_token_id: z.number().int().nullable().default(1),
    bos_token_id: z.number().int().nullable().default(49406),
    // 2 in configs written before transformers#24773: the pooled row is then argmax(input_ids).
    eos_token_id: z.number().int().default(49407),
  })
  .superRefine(headsDivide);

/** CLIPVisionConfig with transformers' defaults. */
export const clipVisionConfigSchema = z
  .object({
    ...encoderFields,
    hidden_size: positiveInt.default(768),
    intermediate_size: positiveInt.default(3072),
    num_attention_heads: positiveInt.default(12),
    num_channels: positiveInt.default(3),
    image_size: positiveInt.default(224),
    patch_size: positiveInt.default(32),
  })
  .superRefine(headsDivide)
  .superRefine((c, ctx) => {
    if (c.patch_size > c.image_size) {
      ctx.addIssue({
        code: "custom",
        path: ["patch_size"],
        message: `patch_size ${c.patch_size} is larger than image_size ${c.image_size}`,
      });
    }
  });

const looseObject = z.record(z.string(), z.unknown());

/** CLIPConfig (sub-configs parsed separately so their errors carry their own path). */
const clipConfigSchema = z.object({
  text_config: looseObject.nullable().optional(),
  vision_config: looseObject.nullable().optional(),
  // Legacy keys: when present transformers builds the sub-config from them alone (with defaults).
  text_config_dict: looseObject.nullable().optional(),
  vision_config_dict: looseObject.nullable().optional(),
  projection_dim: positiveInt.default(512),
  logit_scale_init_value: z.number().default(2.6592),
  model_type: z.string().optional(),
});

export type ClipTextConfig = z.output<typeof clipTextConfigSchema>;
export type ClipVisionConfig = z.output<typeof clipVisionConfigSchema>;
export interface ClipConfig {
  text_config: ClipTextConfig;
  vision_config: ClipVisionConfig;
  projection_dim: number;
  logit_scale_init_value: number;
}

/** A text encoder's config and what the checkpoint next to it holds besides the text tower. */
export interface ClipTextEncoderConfig {
  config: ClipTextConfig;
  /** Checkpoint key prefixes that are not part of CLIPTextModel (e.g. a CLIPModel's vision tower). */
  ignorePrefixes: string[];
}

/**
 * A CLIPTextModel config.json, or the text part of a CLIPModel / CLIPTextModelWithProjection
 * one (as CLIPTextModel.from_pretrained reads them). `file` names the file in errors.
 */
export function parseClipTextEncoderConfig(raw: unknown, file: string): ClipTextEncoderConfig {
  checkModelSizes(raw, file);
  const object = asObject(raw, file, "");
  if (object.model_type === "clip") {
    return {
      config: parseClipConfig(raw, file).text_config,
      ignorePrefixes: ["vision_model.", "visual_projection.", "text_projection.", "logit_scale"],
    };
  }
  const architectures = Array.isArray(object.architectures) ? object.architectures : [];
  const withProjection = architectures.includes("CLIPTextModelWithProjection");
  return {
    config: parseWith(clipTextConfigSchema, raw, file, ""),
    ignorePrefixes: withProjection ? ["text_projection."] : [],
  };
}

/** A CLIPModel config.json. */
export function parseClipConfig(raw: unknown, file: string): ClipConfig {
  checkModelSizes(raw, file);
  const top = parseWith(clipConfigSchema, raw, file, "");
  const textRaw = top.text_config_dict ?? top.text_config ?? {};
  const visionRaw = top.vision_config_dict ?? top.vision_config ?? {};
  const textKey = top.text_config_dict ? "text_config_dict" : "text_config";
  const visionKey = top.vision_config_dict ? "vision_config_dict" : "vision_config";
  return {
    text_config: parseWith(clipTextConfigSchema, textRaw, file, textKey),
    vision_config: parseWith(clipVisionConfigSchema, visionRaw, file, visionKey),
    projection_dim: top.projection_dim,
    logit_scale_init_value: top.logit_scale_init_value,
  };
}

// ---------------------------------------------------------------- errors that name file, field and value

function asObject(raw: unknown, file: string, prefix: string): Record<string, unknown> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${file}: ${prefix || "the config"} must be a JSON object (got ${describe(raw)})`);
  }
  return raw as Record<string, unknown>;
}

function parseWith<S extends z.ZodType>(schema: S, raw: unknown, file: string, prefix: string): z.output<S> {
  asObject(raw, file, prefix);
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const path = issue.path.map(String);
    const field = [prefix, ...path].filter(Boolean).join(".");
    const value = valueAt(raw, path);
    const shown = value === undefined ? "" : ` = ${describe(value)}`;
    return `${field || "(root)"}${shown}: ${issue.message}`;
  });
  throw new Error(`${file}: invalid CLIP config: ${lines.join("; ")}`);
}

function valueAt(raw: unknown, path: string[]): unknown {
  let current: unknown = raw;
  for (const key of path) {
    if (typeof current !== "object" || current === null) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
