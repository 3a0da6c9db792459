// Stable Diffusion's UNet2DConditionModel: a diffusers unet/ folder
// (config.json + diffusion_pytorch_model[.variant].safetensors), run natively.
import { join } from "node:path";

import {
  native,
  type NativeUNet,
  type ParameterInfo,
  type Tensor,
  type UNetLossAndGradients,
} from "../native/index.js";
import { nativeUNetConfig, parseUNetConfig, type UNetConfig } from "./config.js";
import { LoadedModel } from "./loaded_model.js";
import { modelFile, readJsonFile, resolveWeightFiles } from "./files.js";
import { checkModelOptions, warningSink, type ModelDType, type ModelLoadOptions } from "./options.js";
import { explainedLoad } from "./single_file/source.js";
import { checkModelMemory, unetParameters } from "./memory.js";

export { checkModelOptions } from "./options.js";
export type UNetDType = ModelDType;
export type UNetLoadOptions = ModelLoadOptions;

export class UNet extends LoadedModel<NativeUNet> {
  private constructor(
    handle: NativeUNet,
    /** The parsed config.json, with diffusers' defaults filled in. */
    readonly config: UNetConfig,
    /** The folder it was loaded from (undefined for a random init). */
    readonly path: string | undefined,
  ) {
    super(handle);
  }

  /** Loads a diffusers unet/ folder. */
  static async load(dir: string, options: ModelLoadOptions = {}): Promise<UNet> {
    checkModelOptions(options, "UNet.load");
    const configPath = join(dir, "config.json");
    const config = parseUNetConfig(readJsonFile(modelFile(configPath)), configPath);
    checkModelMemory(
      `${dir}: the UNet`,
      unetParameters(nativeUNetConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const files = resolveWeightFiles(dir, { variant: options.variant, onWarning: warningSink(options) });
    const handle = await explainedLoad(
      dir,
      native().UNet.load({
        config: nativeUNetConfig(config),
        files,
        dtype: options.dtype ?? "float32",
        device: options.device ?? "cpu",
      }),
    );
    return new UNet(handle, config, dir);
  }

  /** A randomly initialised UNet (seeded) for a config object: tests and benchmarks. */
  static async fromConfig(
    raw: unknown,
    options: { seed?: number; dtype?: ModelDType; device?: string } = {},
  ): Promise<UNet> {
    checkModelOptions(options, "UNet.fromConfig");
    const config = parseUNetConfig(raw, "UNet.fromConfig config");
    checkModelMemory(
      "UNet.fromConfig",
      unetParameters(nativeUNetConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const handle = await native().UNet.load({
      config: nativeUNetConfig(config),
      randomSeed: options.seed ?? 0,
      dtype: options.dtype ?? "float32",
      device: options.device ?? "cpu",
    });
    return new UNet(handle, config, undefined);
  }

  /**
   * The noise (or v) prediction. sample [B, in_channels, H, W]; timestep: a number, a 0-dim
   * tensor (broadcast to the batch) or a [B] tensor, integer or float; encoderHiddenStates
   * [B, L, cross_attention_dim]. Inputs are cast to the model's dtype; the output has it.
   */
  async forward(sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor): Promise<Tensor> {
    this.checkInputs(sample, timestep, encoderHiddenStates);
    return this.handle.forward(sample, timestep, encoderHiddenStates);
  }

  /** forward, plus the outputs of the top-level submodules (diffusers forward-hook names). */
  async forwardWithIntermediates(
    sample: Tensor,
    timestep: Tensor | number,
    encoderHiddenStates: Tensor,
  ): Promise<{ output: Tensor; intermediates: Record<string, Tensor> }> {
    this.checkInputs(sample, timestep, encoderHiddenStates);
    return this.handle.forwardWithIntermediates(sample, timestep, encoderHiddenStates);
  }

  /**
   * mse(forward(...), target) (mean, float32) and the gradient of every parameter.
   * A diagnostic for backward parity and checkpointing checks; training goes through the trainer.
   */
  async lossAndGradients(
    sample: Tensor,
    timestep: Tensor | number,
    encoderHiddenStates: Tensor,
    target: Tensor,
  ): Promise<UNetLossAndGradients> {
    this.checkInputs(sample, timestep, encoderHiddenStates);
    if (target.shape.join(",") !== [sample.shape[0], this.config.out_channels, ...sample.shape.slice(2)].join(",")) {
      throw new TypeError(`UNet: target [${target.shape.join(", ")}] must have the output's shape`);
    }
    return this.handle.lossAndGradients(sample, timestep, encoderHiddenStates, target);
  }

  /** Recompute each resnet and transformer block during backward instead of storing activations. */
  setGradientCheckpointing(on: boolean): void {
    this.handle.setGradientCheckpointing(on);
  }

  get gradientCheckpointing(): boolean {
    return this.handle.gradientCheckpointing;
  }

  /** Every parameter (name = checkpoint key), in module order. */
  parameterInfo(): ParameterInfo[] {
    return this.handle.parameterInfo();
  }

  /** Every weight by checkpoint key: views of the live tensors (fused LoRA shows, unfused adapters do not), no copy. */
  stateDict(): Promise<[string, Tensor][]> {
    return this.handle.stateDict();
  }

  private checkInputs(sample: Tensor, timestep: Tensor | number, ehs: Tensor): void {
    const c = this.config;
    if (sample.shape.length !== 4 || sample.shape[1] !== c.in_channels) {
      throw new TypeError(
        `UNet: sample must be [batch, ${c.in_channels}, height, width] (got [${sample.shape.join(", ")}])`,
      );
    }
    const batch = sample.shape[0]!;
    const crossDims = new Set(Array.isArray(c.cross_attention_dim) ? c.cross_attention_dim : [c.cross_attention_dim]);
    if (ehs.shape.length !== 3 || ehs.shape[0] !== batch || (crossDims.size === 1 && !crossDims.has(ehs.shape[2]!))) {
      throw new TypeError(
        `UNet: encoderHiddenStates must be [${batch}, length, ${[...crossDims].join("|")}] (got [${ehs.shape.join(", ")}])`,
      );
    }
    if (typeof timestep === "number") {
      if (!Number.isFinite(timestep)) throw new TypeError(`UNet: timestep ${timestep} must be finite`);
    } else if (timestep.shape.length > 1 || (timestep.numel !== 1 && timestep.numel !== batch)) {
      throw new TypeError(
        `UNet: timestep must be a scalar or hold one value per sample (${batch}) (got [${timestep.shape.join(", ")}])`,
      );
    }
  }
}

/** UNet.load as a function. */
export function loadUNet(dir: string, options: ModelLoadOptions = {}): Promise<UNet> {
  return UNet.load(dir, options);
}
