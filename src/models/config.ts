// The conversion of parsed UNet and VAE configs (src/config/models.ts: schemas, defaults,
// validators) to the resolved configs the native loaders take.
import { perBlock, type UNetConfig, type VAEConfig } from "../config/models.js";
import type { NativeUNetConfig, NativeVAEConfig } from "../native/index.js";

export {
  ACTIVATIONS,
  ModelConfigError,
  parseUNetConfig,
  parseVAEConfig,
  unetConfigSchema,
  vaeConfigSchema,
} from "../config/models.js";
export type { UNetConfig, VAEConfig } from "../config/models.js";

/** The resolved config the native UNet takes (per-block lists; attention_head_dim read as head counts). */
export function nativeUNetConfig(c: UNetConfig): NativeUNetConfig {
  const n = c.block_out_channels.length;
  return {
    inChannels: c.in_channels,
    outChannels: c.out_channels,
    blockOutChannels: [...c.block_out_channels],
    downBlockTypes: c.down_block_types as NativeUNetConfig["downBlockTypes"],
    upBlockTypes: c.up_block_types as NativeUNetConfig["upBlockTypes"],
    midBlockType: c.mid_block_type as NativeUNetConfig["midBlockType"],
    layersPerBlock: perBlock(c.layers_per_block, n),
    numAttentionHeads: perBlock(c.attention_head_dim, n),
    crossAttentionDim: perBlock(c.cross_attention_dim, n),
    transformerLayersPerBlock: perBlock(c.transformer_layers_per_block as number | number[], n),
    onlyCrossAttention: perBlock(c.only_cross_attention, n),
    useLinearProjection: c.use_linear_projection,
    upcastAttention: c.upcast_attention,
    normNumGroups: c.norm_num_groups!,
    normEps: c.norm_eps,
    actFn: c.act_fn,
    flipSinToCos: c.flip_sin_to_cos,
    freqShift: c.freq_shift,
    resnetTimeScaleShift: c.resnet_time_scale_shift as NativeUNetConfig["resnetTimeScaleShift"],
    centerInputSample: c.center_input_sample,
    downsamplePadding: c.downsample_padding,
    midBlockScaleFactor: c.mid_block_scale_factor,
    dropout: c.dropout,
    convInKernel: c.conv_in_kernel,
    convOutKernel: c.conv_out_kernel,
    timeEmbeddingDim: c.time_embedding_dim,
    timeEmbeddingActFn: c.time_embedding_act_fn,
    timestepPostAct: c.timestep_post_act,
  };
}

/** The resolved config the native VAE takes. */
export function nativeVAEConfig(c: VAEConfig): NativeVAEConfig {
  return {
    inChannels: c.in_channels,
    outChannels: c.out_channels,
    latentChannels: c.latent_channels,
    blockOutChannels: [...c.block_out_channels],
    downBlockTypes: c.down_block_types as NativeVAEConfig["downBlockTypes"],
    upBlockTypes: c.up_block_types as NativeVAEConfig["upBlockTypes"],
    layersPerBlock: c.layers_per_block,
    normNumGroups: c.norm_num_groups,
    actFn: c.act_fn,
    scalingFactor: c.scaling_factor,
    midBlockAddAttention: c.mid_block_add_attention,
  };
}
