// Native surface: CLIP (text encoder, CLIP model).
import type { DType, Tensor } from "./tensor.js";

/** CLIPTextConfig as the native loader takes it (see src/models/clip_config.ts). */
export interface NativeClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: string;
  layerNormEps: number;
  attentionDropout?: number;
  /** 2 (legacy configs): pooled row = argmax(input_ids); otherwise the first position of this id. */
  eosTokenId: number;
}

/** CLIPVisionConfig as the native loader takes it. */
export interface NativeClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  hiddenAct: string;
  layerNormEps: number;
  attentionDropout?: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
}

/** CLIPConfig as the native loader takes it. */
export interface NativeClipModelConfig {
  text: NativeClipTextConfig;
  vision: NativeClipVisionConfig;
  projectionDim: number;
  logitScaleInitValue?: number;
}

export interface NativeClipLoadOptions<Config> {
  config: Config;
  /** safetensors files holding the checkpoint (several when sharded). */
  files: string[];
  /** float32 (default), float16 or bfloat16. */
  dtype?: DType;
  /** "cpu" (default), "cuda", "cuda:N". */
  device?: string;
  /** Checkpoint keys with these prefixes are skipped (position_ids buffers always are). */
  ignorePrefixes?: string[];
}

export interface TextEncoderForwardOptions {
  /** Also return every hidden state: [0] = embeddings, [i] = output of layer i (no final LayerNorm). */
  outputHiddenStates?: boolean;
  /** [n, L], 1 = token, 0 = padding. The SD pipeline passes none. */
  attentionMask?: Tensor;
  /** k > 0: lastHiddenState = final_layer_norm(hiddenStates[-(k+1)]) (diffusers' clip_skip); pooled from it. */
  clipSkip?: number;
}

export interface TextEncoderOutput {
  /** [n, L, hidden], after final_layer_norm: the prompt embeddings. */
  lastHiddenState: Tensor;
  /** num_hidden_layers + 1 tensors [n, L, hidden], when asked for. */
  hiddenStates?: Tensor[];
  /** [n, hidden]: lastHiddenState at the end-of-text token. */
  pooledOutput: Tensor;
}

/** A loaded CLIPTextModel (native/bindings/text_encoder_binding.cc). */
export interface NativeTextEncoder {
  forward(inputIds: Tensor, options?: TextEncoderForwardOptions): Promise<TextEncoderOutput>;
  /** loss = sum(lastHiddenState) (float32) and its gradients for the named parameters (others stay frozen). */
  lossAndGradients(
    inputIds: Tensor,
    options: { parameters: string[]; attentionMask?: Tensor; clipSkip?: number },
  ): Promise<{ loss: number; gradients: Record<string, Tensor> }>;
  /** Recompute each encoder layer in backward instead of keeping activations (same gradients). */
  setGradientCheckpointing(on: boolean): void;
  readonly gradientCheckpointing: boolean;
  /** Every weight by checkpoint key: views of the live tensors (fused LoRA shows), no copy. */
  stateDict(): Promise<[string, Tensor][]>;
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  /** Idempotent; running work keeps the model until it ends. */
  dispose(): void;
}

/** A loaded CLIPModel (native/bindings/clip_binding.cc). */
export interface NativeClipModel {
  /** text_projection(pooled text output): [n, projection_dim]. */
  getTextFeatures(inputIds: Tensor, attentionMask?: Tensor): Promise<Tensor>;
  /** visual_projection(post-LN class token): pixelValues [n, 3, S, S] -> [n, projection_dim]. */
  getImageFeatures(pixelValues: Tensor): Promise<Tensor>;
  /** The stored logit_scale (logits use exp of it). */
  readonly logitScale: number;
  /** Every weight by checkpoint key: views of the live tensors, no copy. */
  stateDict(): Promise<[string, Tensor][]>;
  readonly dtype: DType;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}
