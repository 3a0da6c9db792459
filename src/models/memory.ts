// How much memory a model needs, estimated from its config before it is built: the parameter
// count of diffusers' UNet2DConditionModel / AutoencoderKL and transformers' CLIP text and vision
// towers, block by block. Within a few percent of the real count for every Stable Diffusion and
// CLIP release (test/memory_estimate.test.ts compares with the fixture models' weight files);
// what matters is that a config asking for terabytes is refused before a byte is allocated.
import type {
  NativeClipModelConfig,
  NativeClipTextConfig,
  NativeUNetConfig,
  NativeVAEConfig,
} from "../native/index.js";
import { checkMemory } from "../runtime.js";

/** Bytes per element of a model dtype. */
export function dtypeBytes(dtype: string): number {
  return dtype === "float16" || dtype === "bfloat16" ? 2 : 4;
}

/** A ResNet block c_in -> c_out (two 3x3 convolutions, group norms, the time projection, a shortcut). */
function resnet(cin: number, cout: number, temb: number): number {
  const shortcut = cin === cout ? 0 : cin * cout + cout;
  return 2 * cin + cin * cout * 9 + cout + temb * cout + cout + 2 * cout + cout * cout * 9 + cout + shortcut;
}

/** A Transformer2DModel of `layers` basic blocks at width c (self + cross attention, GEGLU feed-forward). */
function transformer(c: number, cross: number, layers: number): number {
  const block = 4 * c * c + 3 * c + (2 * c * c + 2 * c * cross + c) + (c * 8 * c + 8 * c + 4 * c * c + c) + 6 * c;
  return 2 * c + 2 * (c * c + c) + layers * block;
}

/** Parameters of a UNet2DConditionModel. */
export function unetParameters(c: NativeUNetConfig): number {
  const ch = c.blockOutChannels;
  const temb = c.timeEmbeddingDim ?? 4 * ch[0]!;
  let n = c.inChannels * ch[0]! * c.convInKernel ** 2 + ch[0]! + ch[0]! * temb + temb * temb + 2 * temb;
  const attends = (types: readonly string[], i: number): boolean => types[i]!.startsWith("CrossAttn");
  let prev = ch[0]!;
  for (let i = 0; i < ch.length; i++) {
    const L = c.layersPerBlock[i]!;
    for (let j = 0; j < L; j++) {
      n += resnet(j === 0 ? prev : ch[i]!, ch[i]!, temb);
      if (attends(c.downBlockTypes, i))
        n += transformer(ch[i]!, c.crossAttentionDim[i]!, c.transformerLayersPerBlock[i]!);
    }
    if (i < ch.length - 1) n += ch[i]! * ch[i]! * 9 + ch[i]!;
    prev = ch[i]!;
  }
  const last = ch.length - 1;
  n += 2 * resnet(ch[last]!, ch[last]!, temb);
  if (c.midBlockType) n += transformer(ch[last]!, c.crossAttentionDim[last]!, c.transformerLayersPerBlock[last]!);
  for (let i = last; i >= 0; i--) {
    const L = c.layersPerBlock[i]! + 1;
    const up = last - i;
    for (let j = 0; j < L; j++) {
      // Each up resnet takes the previous output concatenated with a skip of the down path.
      const skip = j === L - 1 ? ch[Math.max(i - 1, 0)]! : ch[i]!;
      n += resnet((j === 0 ? (ch[i + 1] ?? ch[i]!) : ch[i]!) + skip, ch[i]!, temb);
      if (attends(c.upBlockTypes, up))
        n += transformer(ch[i]!, c.crossAttentionDim[i]!, c.transformerLayersPerBlock[i]!);
    }
    if (i > 0) n += ch[i]! * ch[i]! * 9 + ch[i]!;
  }
  return n + 2 * ch[0]! + ch[0]! * c.outChannels * c.convOutKernel ** 2 + c.outChannels;
}

/** Parameters of an AutoencoderKL (encoder, decoder, the two 1x1 quantisation convolutions). */
export function vaeParameters(c: NativeVAEConfig): number {
  const ch = c.blockOutChannels;
  const last = ch[ch.length - 1]!;
  const mid = 2 * resnet(last, last, 0) + 2 * last + 4 * (last * last + last);
  let n = 2 * mid;
  n += c.inChannels * ch[0]! * 9 + ch[0]! + 2 * last + last * 2 * c.latentChannels * 9;
  n += c.latentChannels * last * 9 + last + 2 * ch[0]! + ch[0]! * c.outChannels * 9 + c.outChannels;
  n += 4 * c.latentChannels * c.latentChannels + 3 * c.latentChannels;
  let prev = ch[0]!;
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j < c.layersPerBlock; j++) n += resnet(j === 0 ? prev : ch[i]!, ch[i]!, 0);
    if (i < ch.length - 1) n += ch[i]! * ch[i]! * 9 + ch[i]!;
    prev = ch[i]!;
  }
  prev = last;
  for (let i = ch.length - 1; i >= 0; i--) {
    for (let j = 0; j <= c.layersPerBlock; j++) n += resnet(j === 0 ? prev : ch[i]!, ch[i]!, 0);
    if (i > 0) n += ch[i]! * ch[i]! * 9 + ch[i]!;
    prev = ch[i]!;
  }
  return n;
}

/** Parameters of a CLIP transformer tower (the text encoder, or the vision side with `patches`). */
export function clipTowerParameters(
  c: Pick<NativeClipTextConfig, "hiddenSize" | "intermediateSize" | "numHiddenLayers">,
  embeddings: number,
): number {
  const h = c.hiddenSize;
  const layer = 4 * (h * h + h) + 2 * h * c.intermediateSize + c.intermediateSize + h + 4 * h;
  return embeddings * h + c.numHiddenLayers * layer + 2 * h;
}

/** Parameters of a CLIP text encoder (token and position embeddings, the layers, the final norm). */
export function textEncoderParameters(c: NativeClipTextConfig): number {
  return clipTowerParameters(c, c.vocabSize + c.maxPositionEmbeddings);
}

/** The memory of training a UNet step, in elements per sample (activations kept for the backward). */
export interface ActivationEstimate {
  /** Elements kept for the backward pass per sample. */
  kept: number;
  /** The largest transient on top of them (attention scores and their softmax at the widest level). */
  transient: number;
}

/**
 * Activations of one UNet forward + backward per sample at a latent of `height` x `width`: each
 * resnet keeps ~8 feature maps of its width, each transformer layer ~24 plus its attention
 * probabilities (heads x tokens x tokens for self-attention, x 77 for cross-attention). With
 * gradient checkpointing only block inputs stay, plus one block recomputed at a time.
 */
export function unetActivations(
  c: NativeUNetConfig,
  height: number,
  width: number,
  checkpointing: boolean,
): ActivationEstimate {
  const blocks: number[] = [];
  let widest = 0;
  const level = (i: number, resnets: number, attention: boolean): void => {
    const s = (height * width) / 4 ** i;
    const ch = c.blockOutChannels[i]!;
    const heads = c.numAttentionHeads[i]!;
    const layers = c.transformerLayersPerBlock[i]!;
    for (let j = 0; j < resnets; j++) {
      blocks.push(8 * ch * s);
      if (attention) blocks.push(layers * (26 * ch * s + heads * s * (s + 77)));
    }
    if (attention) widest = Math.max(widest, 2 * heads * s * s);
  };
  const last = c.blockOutChannels.length - 1;
  for (let i = 0; i <= last; i++) level(i, c.layersPerBlock[i]!, c.downBlockTypes[i]!.startsWith("CrossAttn"));
  // The mid block: resnet, transformer, resnet.
  level(last, 1, c.midBlockType !== null);
  level(last, 1, false);
  for (let i = last; i >= 0; i--) level(i, c.layersPerBlock[i]! + 1, c.upBlockTypes[last - i]!.startsWith("CrossAttn"));
  const total = blocks.reduce((a, b) => a + b, 0);
  if (!checkpointing) return { kept: total, transient: widest };
  const inputs = blocks.length * c.blockOutChannels[0]! * height * width;
  return { kept: inputs, transient: Math.max(...blocks) + widest };
}

/** Refuses to build a model of `parameters` in `dtype` on `device` when it cannot fit. */
export function checkModelMemory(what: string, parameters: number, dtype: string, device: string): void {
  checkMemory(
    what,
    { weights: parameters * dtypeBytes(dtype) },
    device,
    "Check that the config is the model's own; load in float16/bfloat16 or on a device with more memory.",
  );
}

/** Parameters of a CLIPModel: both towers, the patch embedding and the two projections. */
export function clipModelParameters(c: NativeClipModelConfig): number {
  const v = c.vision;
  const patches = (v.imageSize / v.patchSize) ** 2 + 1;
  const vision =
    clipTowerParameters(v, patches + 1) + v.numChannels * v.patchSize ** 2 * v.hiddenSize + 2 * v.hiddenSize;
  return textEncoderParameters(c.text) + vision + c.projectionDim * (c.text.hiddenSize + v.hiddenSize) + 1;
}
