// The UNet of a single-file checkpoint: LDM names ("model.diffusion_model.input_blocks.1.0.in_layers.0.weight")
// <-> diffusers names ("down_blocks.0.resnets.0.norm1.weight"), over the block table that LoRA names
// use too (src/lora/formats/ldm.ts), and the diffusers config read off the LDM keys and shapes.
import { LDM_RESNET_LAYERS, ldmBlockPairs, type LdmBlockPair, type UnetLayout } from "../ldm.js";
import type { ShapeOf } from "./shapes.js";

export const UNET_PREFIX = "model.diffusion_model.";

const RESNET_TO_LDM = Object.fromEntries(Object.entries(LDM_RESNET_LAYERS).map(([k, v]) => [v, k]));

/** The block layout of an LDM UNet from its keys (without UNET_PREFIX). */
export function ldmUnetLayout(keys: ReadonlySet<string>, where: string): UnetLayout {
  const inputs = new Set<number>();
  const ops: number[] = [];
  for (const key of keys) {
    const m = /^input_blocks\.(\d+)\.0\.(op\.)?/.exec(key);
    if (!m || m[1] === "0") continue;
    inputs.add(Number(m[1]));
    if (m[2]) ops.push(Number(m[1]));
  }
  if (inputs.size === 0) throw new Error(`${where}: no UNet input blocks (model.diffusion_model.input_blocks.1.*)`);
  const last = Math.max(...inputs);
  const L = ops.length ? Math.min(...ops) - 1 : last;
  const levels = Math.floor((last - 1) / (L + 1)) + 1;
  const has = (prefix: string): boolean => [...keys].some((k) => k.startsWith(prefix));
  const downAttention = Array.from({ length: levels }, (_, i) => has(`input_blocks.${1 + i * (L + 1)}.1.`));
  const upAttention = Array.from({ length: levels }, (_, i) =>
    keys.has(`output_blocks.${i * (L + 1)}.1.proj_in.weight`),
  );
  return {
    layersPerBlock: L,
    downAttention,
    downsample: Array.from({ length: levels }, (_, i) => has(`input_blocks.${(i + 1) * (L + 1)}.0.op.`)),
    upAttention,
    upsample: upAttention.map((a, i) => keys.has(`output_blocks.${i * (L + 1) + L}.${a ? 2 : 1}.conv.weight`)),
  };
}

/** One parameter name from one side to the other; undefined when the layout has no such block. */
export function mapUnetKey(key: string, layout: UnetLayout, from: "ldm" | "diffusers"): string | undefined {
  const to = from === "ldm" ? "diffusers" : "ldm";
  let best: LdmBlockPair | undefined;
  for (const pair of pairsFor(layout)) {
    const prefix = pair[from];
    if (key.startsWith(`${prefix}.`) && (!best || prefix.length > best[from].length)) best = pair;
  }
  if (!best) return undefined;
  const inner = key.slice(best[from].length + 1);
  if (best.kind === "leaf") return inner === "weight" || inner === "bias" ? `${best[to]}.${inner}` : undefined;
  if (best.kind === "attention") return `${best[to]}.${inner}`;
  const table = from === "ldm" ? LDM_RESNET_LAYERS : RESNET_TO_LDM;
  for (const [sub, mapped] of Object.entries(table)) {
    if (inner.startsWith(`${sub}.`)) return `${best[to]}.${mapped}${inner.slice(sub.length)}`;
  }
  return undefined;
}

const pairCache = new WeakMap<UnetLayout, LdmBlockPair[]>();
function pairsFor(layout: UnetLayout): LdmBlockPair[] {
  let pairs = pairCache.get(layout);
  if (!pairs) pairCache.set(layout, (pairs = ldmBlockPairs(layout)));
  return pairs;
}

export interface UNetHints {
  /** SD 2.x: heads of 64 channels; SD 1.x: 8 heads. */
  family: "sd1" | "sd2";
  /** From the .yaml beside the file: model.params.unet_config.params.num_heads / num_head_channels. */
  numHeads?: number;
  numHeadChannels?: number;
  vPrediction: boolean;
}

/** diffusers' UNet2DConditionModel config.json for an LDM UNet, from its keys (without prefix) and shapes. */
export function inferUNetConfig(shape: ShapeOf, layout: UnetLayout, hints: UNetHints): Record<string, unknown> {
  const L = layout.layersPerBlock;
  const channels = layout.downAttention.map(
    (_, i) => shape(`input_blocks.${1 + i * (L + 1)}.0.out_layers.3.weight`)[0]!,
  );
  const firstAttention = layout.downAttention.findIndex((a) => a);
  const attn = firstAttention < 0 ? undefined : `input_blocks.${1 + firstAttention * (L + 1)}.1`;
  // LDM: num_head_channels (when set) fixes the head width, else num_heads the head count.
  const perHead = hints.numHeadChannels ?? (hints.numHeads === undefined && hints.family === "sd2" ? 64 : undefined);
  const heads = perHead ? channels.map((c) => Math.max(1, Math.floor(c / perHead))) : (hints.numHeads ?? 8);
  return {
    _class_name: "UNet2DConditionModel",
    act_fn: "silu",
    attention_head_dim: heads,
    block_out_channels: channels,
    center_input_sample: false,
    cross_attention_dim: attn ? shape(`${attn}.transformer_blocks.0.attn2.to_k.weight`)[1] : channels.at(-1),
    down_block_types: layout.downAttention.map((a) => (a ? "CrossAttnDownBlock2D" : "DownBlock2D")),
    downsample_padding: 1,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: shape("input_blocks.0.0.weight")[1],
    layers_per_block: L,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    out_channels: shape("out.2.weight")[0],
    sample_size: hints.family === "sd2" && hints.vPrediction ? 96 : 64,
    up_block_types: layout.upAttention.map((a) => (a ? "CrossAttnUpBlock2D" : "UpBlock2D")),
    // SD 2.x 768-v overflows float16 attention without upcasting (diffusers' stable-diffusion-2-1 config).
    upcast_attention: hints.family === "sd2" && hints.vPrediction,
    use_linear_projection: attn ? shape(`${attn}.proj_in.weight`).length === 2 : false,
  };
}
