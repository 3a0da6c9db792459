// Stable Diffusion's text encoder: a transformers CLIPTextModel folder
// (config.json + model[.variant].safetensors), run natively.
import { join } from "node:path";

import { native, type NativeTextEncoder, type Tensor, type TextEncoderOutput } from "../native/index.js";
import { nativeClipTextConfig, parseClipTextEncoderConfig, type ClipTextConfig } from "./clip_config.js";
import { LoadedModel } from "./loaded_model.js";
import { modelFile, readJsonFile, resolveWeightFiles } from "./files.js";
import { checkModelOptions, warningSink, type ModelDType, type ModelLoadOptions } from "./options.js";
import { explainedLoad } from "./single_file/source.js";
import { checkModelMemory, textEncoderParameters } from "./memory.js";

export type { ModelDType, ModelLoadOptions } from "./options.js";

export interface TextEncoderForward {
  /** Also return every hidden state ([0] = embeddings, [i] = layer i, no final LayerNorm). */
  outputHiddenStates?: boolean;
  /**
   * Use the output of an earlier layer: lastHiddenState = final_layer_norm(hiddenStates[-(clipSkip+1)]),
   * as diffusers' encode_prompt(clip_skip=k). The skipped layers are not run unless hidden states are asked for.
   */
  clipSkip?: number;
  /** [n, L] 1/0 padding mask (Stable Diffusion passes none; CLIP score does). */
  attentionMask?: Tensor;
}

export class TextEncoder extends LoadedModel<NativeTextEncoder> {
  private constructor(
    handle: NativeTextEncoder,
    readonly config: ClipTextConfig,
    /** The folder it was loaded from (undefined for a random init). */
    readonly path: string | undefined,
  ) {
    super(handle);
  }

  /** Loads a CLIPTextModel folder (or the text tower of a CLIPModel folder). */
  static async load(dir: string, options: ModelLoadOptions = {}): Promise<TextEncoder> {
    checkModelOptions(options, "TextEncoder.load");
    const configPath = join(dir, "config.json");
    const { config, ignorePrefixes } = parseClipTextEncoderConfig(readJsonFile(modelFile(configPath)), configPath);
    checkModelMemory(
      `${dir}: the TextEncoder`,
      textEncoderParameters(nativeClipTextConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const files = resolveWeightFiles(dir, { variant: options.variant, onWarning: warningSink(options) });
    const handle = await explainedLoad(
      dir,
      native().TextEncoder.load({
        config: nativeClipTextConfig(config),
        files,
        dtype: options.dtype ?? "float32",
        device: options.device ?? "cpu",
        ignorePrefixes,
      }),
    );
    return new TextEncoder(handle, config, dir);
  }

  /**
   * A randomly initialised text encoder (seeded; libtorch's default layer init) for a
   * CLIPTextConfig object: tests and benchmarks. `path` is undefined.
   */
  static async fromConfig(
    raw: unknown,
    options: { seed?: number; dtype?: ModelDType; device?: string } = {},
  ): Promise<TextEncoder> {
    checkModelOptions(options, "TextEncoder.fromConfig");
    const { config } = parseClipTextEncoderConfig(raw, "TextEncoder.fromConfig config");
    checkModelMemory(
      "TextEncoder.fromConfig",
      textEncoderParameters(nativeClipTextConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const handle = await native().TextEncoder.load({
      config: nativeClipTextConfig(config),
      randomSeed: options.seed ?? 0,
      dtype: options.dtype ?? "float32",
      device: options.device ?? "cpu",
    });
    return new TextEncoder(handle, config, undefined);
  }

  /** inputIds: int64 [n, L] with L <= max_position_embeddings. */
  async forward(inputIds: Tensor, options: TextEncoderForward = {}): Promise<TextEncoderOutput> {
    this.checkIds(inputIds, options);
    return this.handle.forward(inputIds, options);
  }

  /**
   * sum(lastHiddenState) and its gradients for the named parameters (e.g.
   * "text_model.encoder.layers.0.self_attn.q_proj.weight"); every other parameter stays frozen.
   * A diagnostic: gradient checks, checkpointing parity.
   */
  async lossAndGradients(
    inputIds: Tensor,
    options: { parameters: string[]; clipSkip?: number; attentionMask?: Tensor },
  ): Promise<{ loss: number; gradients: Record<string, Tensor> }> {
    this.checkIds(inputIds, options);
    return this.handle.lossAndGradients(inputIds, options);
  }

  /** Recompute each encoder layer during backward instead of storing its activations. */
  setGradientCheckpointing(on: boolean): void {
    this.handle.setGradientCheckpointing(on);
  }

  get gradientCheckpointing(): boolean {
    return this.handle.gradientCheckpointing;
  }

  /** Every weight by checkpoint key: views of the live tensors (fused LoRA shows, unfused adapters do not), no copy. */
  stateDict(): Promise<[string, Tensor][]> {
    return this.handle.stateDict();
  }

  private checkIds(inputIds: Tensor, options: { clipSkip?: number; attentionMask?: Tensor }): void {
    if (inputIds.dtype !== "int64" || inputIds.shape.length !== 2) {
      throw new TypeError(
        `TextEncoder: inputIds must be an int64 [batch, length] tensor (got ${inputIds.dtype} [${inputIds.shape.join(", ")}])`,
      );
    }
    const skip = options.clipSkip ?? 0;
    const layers = this.config.num_hidden_layers;
    if (!Number.isInteger(skip) || skip < 0 || skip > layers) {
      throw new RangeError(`TextEncoder: clipSkip ${skip} must be an integer in [0, ${layers}] (num_hidden_layers)`);
    }
    const mask = options.attentionMask;
    if (mask && mask.shape.join(",") !== inputIds.shape.join(",")) {
      throw new TypeError(
        `TextEncoder: attentionMask [${mask.shape.join(", ")}] must have the shape of inputIds [${inputIds.shape.join(", ")}]`,
      );
    }
  }
}
