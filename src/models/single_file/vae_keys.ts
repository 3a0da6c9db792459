// The VAE of a single-file checkpoint: LDM names ("first_stage_model.encoder.down.0.block.1.norm1.weight")
// <-> diffusers AutoencoderKL names ("encoder.down_blocks.0.resnets.1.norm1.weight"), the mid-block
// attention's 1x1 convolutions <-> linear layers, and the config read off the shapes.
import type { ShapeOf } from "./shapes.js";

export const VAE_PREFIX = "first_stage_model.";

/** LDM mid-block attention layer -> diffusers (current names; the legacy ones are read too). */
const ATTENTION: Record<string, string> = { norm: "group_norm", q: "to_q", k: "to_k", v: "to_v", proj_out: "to_out.0" };
const LEGACY_ATTENTION: Record<string, string> = {
  query: "to_q",
  key: "to_k",
  value: "to_v",
  proj_attn: "to_out.0",
};
const ATTENTION_TO_LDM = Object.fromEntries(Object.entries(ATTENTION).map(([k, v]) => [v, k]));

const resnetToDiffusers = (rest: string): string => rest.replace(/^nin_shortcut\./, "conv_shortcut.");
const resnetToLdm = (rest: string): string => rest.replace(/^conv_shortcut\./, "nin_shortcut.");

/**
 * One VAE parameter (no prefix) from LDM to diffusers; `levels` = number of down blocks
 * (LDM numbers the decoder's up blocks from the bottom, diffusers from the top).
 */
export function vaeKeyToDiffusers(key: string, levels: number): string | undefined {
  let m: RegExpExecArray | null;
  if ((m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(key))) {
    return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${resnetToDiffusers(m[3]!)}`;
  }
  if ((m = /^encoder\.down\.(\d+)\.downsample\.conv\.(.+)$/.exec(key))) {
    return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  }
  if ((m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(key))) {
    return `decoder.up_blocks.${levels - 1 - Number(m[1])}.resnets.${m[2]}.${resnetToDiffusers(m[3]!)}`;
  }
  if ((m = /^decoder\.up\.(\d+)\.upsample\.conv\.(.+)$/.exec(key))) {
    return `decoder.up_blocks.${levels - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}`;
  }
  if ((m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(key))) {
    return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${resnetToDiffusers(m[3]!)}`;
  }
  if ((m = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(key))) {
    return `${m[1]}.mid_block.attentions.0.${ATTENTION[m[2]!]}.${m[3]}`;
  }
  if ((m = /^(encoder|decoder)\.norm_out\.(weight|bias)$/.exec(key))) return `${m[1]}.conv_norm_out.${m[2]}`;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)$/.test(key)) return key;
  if (/^(quant_conv|post_quant_conv)\.(weight|bias)$/.test(key)) return key;
  return undefined;
}

/** One AutoencoderKL parameter from diffusers (current or legacy attention names) to LDM. */
export function vaeKeyToLdm(key: string, levels: number): string | undefined {
  let m: RegExpExecArray | null;
  if ((m = /^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(key))) {
    return `encoder.down.${m[1]}.block.${m[2]}.${resnetToLdm(m[3]!)}`;
  }
  if ((m = /^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/.exec(key))) {
    return `encoder.down.${m[1]}.downsample.conv.${m[2]}`;
  }
  if ((m = /^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(key))) {
    return `decoder.up.${levels - 1 - Number(m[1])}.block.${m[2]}.${resnetToLdm(m[3]!)}`;
  }
  if ((m = /^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/.exec(key))) {
    return `decoder.up.${levels - 1 - Number(m[1])}.upsample.conv.${m[2]}`;
  }
  if ((m = /^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)$/.exec(key))) {
    return `${m[1]}.mid.block_${Number(m[2]) + 1}.${resnetToLdm(m[3]!)}`;
  }
  if ((m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$/.exec(key))) {
    const layer = ATTENTION_TO_LDM[LEGACY_ATTENTION[m[2]!] ?? m[2]!];
    return layer ? `${m[1]}.mid.attn_1.${layer}.${m[3]}` : undefined;
  }
  if ((m = /^(encoder|decoder)\.conv_norm_out\.(weight|bias)$/.exec(key))) return `${m[1]}.norm_out.${m[2]}`;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)$/.test(key)) return key;
  if (/^(quant_conv|post_quant_conv)\.(weight|bias)$/.test(key)) return key;
  return undefined;
}

/** The mid-block attention projections: 1x1 convolutions in LDM, linear layers in diffusers. */
export function isVaeAttentionProjection(ldmKey: string): boolean {
  return /\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(ldmKey);
}

/** The number of down blocks of an LDM VAE (keys without prefix). */
export function ldmVaeLevels(keys: Iterable<string>): number {
  let levels = 0;
  for (const key of keys) {
    const m = /^encoder\.down\.(\d+)\./.exec(key);
    if (m) levels = Math.max(levels, Number(m[1]) + 1);
  }
  return levels;
}

/** diffusers' AutoencoderKL config.json for an LDM VAE. */
export function inferVAEConfig(
  shape: ShapeOf,
  keys: ReadonlySet<string>,
  vPrediction: boolean,
): Record<string, unknown> {
  const levels = ldmVaeLevels(keys);
  let layers = 0;
  while (keys.has(`encoder.down.0.block.${layers}.conv1.weight`)) layers++;
  const channels = Array.from({ length: levels }, (_, i) => shape(`encoder.down.${i}.block.0.conv1.weight`)[0]!);
  return {
    _class_name: "AutoencoderKL",
    act_fn: "silu",
    block_out_channels: channels,
    down_block_types: channels.map(() => "DownEncoderBlock2D"),
    in_channels: shape("encoder.conv_in.weight")[1],
    latent_channels: shape("post_quant_conv.weight")[0],
    layers_per_block: layers,
    norm_num_groups: 32,
    out_channels: shape("decoder.conv_out.weight")[0],
    sample_size: vPrediction ? 768 : 512,
    // Stable Diffusion 1.x and 2.x both scale latents by 0.18215 (the yaml's scale_factor).
    scaling_factor: 0.18215,
    up_block_types: channels.map(() => "UpDecoderBlock2D"),
  };
}
