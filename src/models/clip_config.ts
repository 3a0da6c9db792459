// The conversion of parsed CLIP configs (src/config/clip.ts: schemas, defaults, validators)
// to the plain objects the native loader takes.
import type { ClipTextConfig, ClipVisionConfig, ClipConfig } from "../config/clip.js";
import type { NativeClipModelConfig, NativeClipTextConfig, NativeClipVisionConfig } from "../native/index.js";

export {
  CLIP_ACTIVATIONS,
  clipTextConfigSchema,
  clipVisionConfigSchema,
  parseClipTextEncoderConfig,
  parseClipConfig,
} from "../config/clip.js";
export type { ClipTextConfig, ClipVisionConfig, ClipConfig, ClipTextEncoderConfig } from "../config/clip.js";

export function nativeClipTextConfig(c: ClipTextConfig): NativeClipTextConfig {
  return {
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: c.num_attention_heads,
    maxPositionEmbeddings: c.max_position_embeddings,
    hiddenAct: c.hidden_act,
    layerNormEps: c.layer_norm_eps,
    attentionDropout: c.attention_dropout,
    eosTokenId: c.eos_token_id,
  };
}

export function nativeClipVisionConfig(c: ClipVisionConfig): NativeClipVisionConfig {
  return {
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: c.num_attention_heads,
    hiddenAct: c.hidden_act,
    layerNormEps: c.layer_norm_eps,
    attentionDropout: c.attention_dropout,
    numChannels: c.num_channels,
    imageSize: c.image_size,
    patchSize: c.patch_size,
  };
}

export function nativeClipModelConfig(c: ClipConfig): NativeClipModelConfig {
  return {
    text: nativeClipTextConfig(c.text_config),
    vision: nativeClipVisionConfig(c.vision_config),
    projectionDim: c.projection_dim,
    logitScaleInitValue: c.logit_scale_init_value,
  };
}
