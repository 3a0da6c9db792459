// diffusers' unet/config.json (UNet2DConditionModel) and vae/config.json (AutoencoderKL)
// as zod schemas with the defaults diffusers 0.27 fills in, and the checks for what sdtune
// does not implement. Every error names the file, the field and its value. The conversion
// to the native loaders' configs is src/models/config.ts.
import { z } from "zod";

import { ConfigError } from "./errors.js";
import { checkModelSizes } from "./limits.js";

const int = z.number().int();
const positiveInt = int.positive();
const intOrList = z.union([positiveInt, z.array(positiveInt).min(1)]);

/** Activations the native blocks implement (diffusers get_activation names). */
export const ACTIVATIONS = ["silu", "swish", "gelu", "mish", "relu"] as const;
const activation = z.enum(ACTIVATIONS);
// A boolean config flag; null (written by some diffusers versions, e.g. SD 1.5's
// "upcast_attention": null) reads as Python's falsy None.
const flag = (fallback: boolean) =>
  z
    .boolean()
    .nullable()
    .default(fallback)
    .transform((v) => v ?? false);

/** UNet2DConditionModel.__init__ arguments with diffusers' defaults (v0.27). */
export const unetConfigSchema = z.object({
  _class_name: z.string().optional(),
  _diffusers_version: z.string().optional(),
  sample_size: z
    .union([positiveInt, z.array(positiveInt).length(2)])
    .nullable()
    .default(null),
  in_channels: positiveInt.default(4),
  out_channels: positiveInt.default(4),
  center_input_sample: flag(false),
  flip_sin_to_cos: flag(true),
  freq_shift: z.number().default(0),
  down_block_types: z
    .array(z.string())
    .min(1)
    .default(["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
  mid_block_type: z.string().nullable().default("UNetMidBlock2DCrossAttn"),
  up_block_types: z
    .array(z.string())
    .min(1)
    .default(["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
  only_cross_attention: z.union([z.boolean(), z.array(z.boolean())]).default(false),
  block_out_channels: z.array(positiveInt).min(1).default([320, 640, 1280, 1280]),
  layers_per_block: intOrList.default(2),
  downsample_padding: int.nonnegative().default(1),
  mid_block_scale_factor: z.number().positive().default(1),
  dropout: z.number().min(0).max(1).default(0),
  act_fn: activation.default("silu"),
  norm_num_groups: positiveInt.nullable().default(32),
  norm_eps: z.number().positive().default(1e-5),
  cross_attention_dim: intOrList.default(1280),
  transformer_layers_per_block: z
    .union([positiveInt, z.array(z.union([positiveInt, z.array(positiveInt)])).min(1)])
    .default(1),
  reverse_transformer_layers_per_block: z.unknown().nullable().default(null),
  encoder_hid_dim: z.unknown().nullable().default(null),
  encoder_hid_dim_type: z.unknown().nullable().default(null),
  attention_head_dim: intOrList.default(8),
  num_attention_heads: z.unknown().nullable().default(null),
  dual_cross_attention: flag(false),
  use_linear_projection: flag(false),
  class_embed_type: z.unknown().nullable().default(null),
  addition_embed_type: z.unknown().nullable().default(null),
  addition_time_embed_dim: z.unknown().nullable().default(null),
  num_class_embeds: z.unknown().nullable().default(null),
  upcast_attention: flag(false),
  resnet_time_scale_shift: z.string().default("default"),
  // Only read by block types sdtune does not build (ResnetDownsampleBlock2D, SimpleCrossAttn*): ignored, as diffusers does here.
  resnet_skip_time_act: flag(false),
  resnet_out_scale_factor: z.number().default(1.0),
  time_embedding_type: z.string().default("positional"),
  time_embedding_dim: positiveInt.nullable().default(null),
  time_embedding_act_fn: activation.nullable().default(null),
  timestep_post_act: activation.nullable().default(null),
  time_cond_proj_dim: z.unknown().nullable().default(null),
  conv_in_kernel: positiveInt.default(3),
  conv_out_kernel: positiveInt.default(3),
  projection_class_embeddings_input_dim: z.unknown().nullable().default(null),
  attention_type: z.string().default("default"),
  class_embeddings_concat: flag(false),
  mid_block_only_cross_attention: z.boolean().nullable().default(null),
  cross_attention_norm: z.unknown().nullable().default(null),
  addition_embed_type_num_heads: positiveInt.default(64),
});

export type UNetConfig = z.output<typeof unetConfigSchema>;

/** AutoencoderKL.__init__ arguments with diffusers' defaults (v0.27). */
export const vaeConfigSchema = z.object({
  _class_name: z.string().optional(),
  _diffusers_version: z.string().optional(),
  in_channels: positiveInt.default(3),
  out_channels: positiveInt.default(3),
  down_block_types: z.array(z.string()).min(1).default(["DownEncoderBlock2D"]),
  up_block_types: z.array(z.string()).min(1).default(["UpDecoderBlock2D"]),
  block_out_channels: z.array(positiveInt).min(1).default([64]),
  layers_per_block: positiveInt.default(1),
  act_fn: activation.default("silu"),
  latent_channels: positiveInt.default(4),
  norm_num_groups: positiveInt.default(32),
  sample_size: z.union([positiveInt, z.array(positiveInt).length(2)]).default(32),
  scaling_factor: z.number().positive().default(0.18215),
  shift_factor: z.number().nullable().optional(),
  latents_mean: z.array(z.number()).nullable().default(null),
  latents_std: z.array(z.number()).nullable().default(null),
  force_upcast: flag(true),
  mid_block_add_attention: flag(true),
  use_quant_conv: flag(true),
  use_post_quant_conv: flag(true),
});

export type VAEConfig = z.output<typeof vaeConfigSchema>;

// ---- errors

/** An error in a model config: a ConfigError that names the file, the field and its value. */
export class ModelConfigError extends ConfigError {
  constructor(
    readonly file: string,
    readonly field: string,
    readonly value: unknown,
    reason: string,
  ) {
    const message = `${file}: "${field}" = ${show(value)} ${reason}`;
    super(message, [message]);
  }
}

function show(value: unknown): string {
  if (value === undefined) return "(missing)";
  const text = JSON.stringify(value);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = raw;
  for (const key of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function parseWith<S extends z.ZodType>(schema: S, raw: unknown, file: string): z.output<S> {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ModelConfigError(file, "(root)", raw, "must be a JSON object");
  }
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const messages = result.error.issues.map((issue) => {
    const field = issue.path.map(String).join(".") || "(root)";
    return `"${field}" = ${show(valueAt(raw, issue.path))}: ${issue.message}`;
  });
  const first = result.error.issues[0]!;
  const error = new ModelConfigError(file, first.path.map(String).join("."), valueAt(raw, first.path), "");
  error.message = `${file}: ${messages.join("; ")}`;
  throw error;
}

// ---- UNet

/** The fields whose non-default values select architectures sdtune does not implement. */
const UNET_UNSUPPORTED: [keyof UNetConfig, (v: unknown) => boolean, string][] = [
  ["addition_embed_type", (v) => v !== null, "is not supported (SDXL-style added conditioning)"],
  ["addition_time_embed_dim", (v) => v !== null, "is not supported (SDXL-style added conditioning)"],
  ["class_embed_type", (v) => v !== null, "is not supported (class-conditioned UNets)"],
  ["num_class_embeds", (v) => v !== null, "is not supported (class-conditioned UNets)"],
  ["projection_class_embeddings_input_dim", (v) => v !== null, "is not supported (class-conditioned UNets)"],
  ["class_embeddings_concat", (v) => v !== false, "is not supported (class-conditioned UNets)"],
  ["encoder_hid_dim", (v) => v !== null, "is not supported (encoder_hid_proj)"],
  ["encoder_hid_dim_type", (v) => v !== null, "is not supported (encoder_hid_proj)"],
  ["time_cond_proj_dim", (v) => v !== null, "is not supported (timestep-conditioned embeddings, e.g. LCM)"],
  ["time_embedding_type", (v) => v !== "positional", 'is not supported (only "positional")'],
  ["dual_cross_attention", (v) => v !== false, "is not supported"],
  ["attention_type", (v) => v !== "default", 'is not supported (only "default")'],
  ["cross_attention_norm", (v) => v !== null, "is not supported"],
  ["reverse_transformer_layers_per_block", (v) => v !== null, "is not supported"],
  [
    "num_attention_heads",
    (v) => v !== null,
    "is not supported: diffusers itself refuses it; give the head count as attention_head_dim",
  ],
  [
    "mid_block_type",
    (v) => v !== null && v !== "UNetMidBlock2DCrossAttn",
    "is not supported (expected UNetMidBlock2DCrossAttn or null)",
  ],
  [
    "resnet_time_scale_shift",
    (v) => v !== "default" && v !== "scale_shift",
    'is not supported (expected "default" or "scale_shift")',
  ],
  ["norm_num_groups", (v) => v === null, "is not supported (the blocks need GroupNorm)"],
];

const DOWN_TYPES = ["CrossAttnDownBlock2D", "DownBlock2D"];
const UP_TYPES = ["CrossAttnUpBlock2D", "UpBlock2D"];

/** Parses a unet/config.json object (`file` names it in errors) and checks that sdtune can build it. */
export function parseUNetConfig(raw: unknown, file: string): UNetConfig {
  checkModelSizes(raw, file);
  const config = parseWith(unetConfigSchema, raw, file);
  for (const [field, unsupported, reason] of UNET_UNSUPPORTED) {
    if (unsupported(config[field])) throw new ModelConfigError(file, field, config[field], reason);
  }
  const n = config.block_out_channels.length;
  config.down_block_types.forEach((t, i) => {
    if (!DOWN_TYPES.includes(t)) {
      throw new ModelConfigError(
        file,
        `down_block_types.${i}`,
        t,
        `is not supported (expected ${DOWN_TYPES.join(" or ")})`,
      );
    }
  });
  config.up_block_types.forEach((t, i) => {
    if (!UP_TYPES.includes(t)) {
      throw new ModelConfigError(
        file,
        `up_block_types.${i}`,
        t,
        `is not supported (expected ${UP_TYPES.join(" or ")})`,
      );
    }
  });
  for (const field of ["down_block_types", "up_block_types"] as const) {
    if (config[field].length !== n) {
      throw new ModelConfigError(file, field, config[field], `must have one entry per block_out_channels entry (${n})`);
    }
  }
  for (const field of [
    "only_cross_attention",
    "layers_per_block",
    "cross_attention_dim",
    "attention_head_dim",
    "transformer_layers_per_block",
  ] as const) {
    const v = config[field];
    if (Array.isArray(v) && v.length !== n) {
      throw new ModelConfigError(file, field, v, `must be a single value or one per down block (${n})`);
    }
  }
  const tlpb = config.transformer_layers_per_block;
  if (Array.isArray(tlpb) && tlpb.some((v) => Array.isArray(v))) {
    throw new ModelConfigError(file, "transformer_layers_per_block", tlpb, "is not supported as nested lists");
  }
  const groups = config.norm_num_groups!;
  config.block_out_channels.forEach((c, i) => {
    if (c % groups !== 0) {
      throw new ModelConfigError(file, `block_out_channels.${i}`, c, `is not divisible by norm_num_groups (${groups})`);
    }
  });
  const heads = perBlock(config.attention_head_dim, n);
  config.block_out_channels.forEach((c, i) => {
    const attention =
      config.down_block_types[i] === "CrossAttnDownBlock2D" ||
      config.up_block_types[n - 1 - i] === "CrossAttnUpBlock2D";
    if ((attention || i === n - 1) && c % heads[i]! !== 0) {
      throw new ModelConfigError(
        file,
        Array.isArray(config.attention_head_dim) ? `attention_head_dim.${i}` : "attention_head_dim",
        heads[i],
        `(the number of heads, in diffusers' legacy naming) does not divide block_out_channels.${i} = ${c}`,
      );
    }
  });
  for (const field of ["conv_in_kernel", "conv_out_kernel"] as const) {
    if (config[field] % 2 === 0) throw new ModelConfigError(file, field, config[field], "must be odd");
  }
  return config;
}

/** A per-block value given once or per block, as a list of n. */
export function perBlock<T>(value: T | T[], n: number): T[] {
  return Array.isArray(value) ? [...value] : Array.from({ length: n }, () => value);
}

// ---- VAE

/** Parses a vae/config.json object (`file` names it in errors) and checks that sdtune can build it. */
export function parseVAEConfig(raw: unknown, file: string): VAEConfig {
  checkModelSizes(raw, file);
  const config = parseWith(vaeConfigSchema, raw, file);
  const n = config.block_out_channels.length;
  config.down_block_types.forEach((t, i) => {
    if (t !== "DownEncoderBlock2D") {
      throw new ModelConfigError(file, `down_block_types.${i}`, t, "is not supported (expected DownEncoderBlock2D)");
    }
  });
  config.up_block_types.forEach((t, i) => {
    if (t !== "UpDecoderBlock2D") {
      throw new ModelConfigError(file, `up_block_types.${i}`, t, "is not supported (expected UpDecoderBlock2D)");
    }
  });
  for (const field of ["down_block_types", "up_block_types"] as const) {
    if (config[field].length !== n) {
      throw new ModelConfigError(file, field, config[field], `must have one entry per block_out_channels entry (${n})`);
    }
  }
  config.block_out_channels.forEach((c, i) => {
    if (c % config.norm_num_groups !== 0) {
      throw new ModelConfigError(
        file,
        `block_out_channels.${i}`,
        c,
        `is not divisible by norm_num_groups (${config.norm_num_groups})`,
      );
    }
  });
  if (config.shift_factor != null) {
    throw new ModelConfigError(file, "shift_factor", config.shift_factor, "is not supported (SD3/Flux-style latents)");
  }
  for (const field of ["use_quant_conv", "use_post_quant_conv"] as const) {
    if (!config[field]) throw new ModelConfigError(file, field, config[field], "is not supported (only true)");
  }
  return config;
}
