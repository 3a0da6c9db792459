// CLIP (transformers CLIPModel folder: config.json + model.safetensors): text and
// image features in the shared projection space, for CLIP score and friends.
import { join } from "node:path";

import { native, type NativeClipModel, type Tensor } from "../native/index.js";
import { nativeClipModelConfig, parseClipConfig, type ClipConfig } from "./clip_config.js";
import { LoadedModel } from "./loaded_model.js";
import { modelFile, readJsonFile, resolveWeightFiles } from "./files.js";
import { checkModelOptions, warningSink, type ModelLoadOptions } from "./options.js";
import { checkModelMemory, clipModelParameters } from "./memory.js";

export class ClipModel extends LoadedModel<NativeClipModel> {
  private constructor(
    handle: NativeClipModel,
    readonly config: ClipConfig,
    readonly path: string,
  ) {
    super(handle);
  }

  static async load(dir: string, options: ModelLoadOptions = {}): Promise<ClipModel> {
    checkModelOptions(options, "ClipModel.load");
    const configPath = join(dir, "config.json");
    const config = parseClipConfig(readJsonFile(modelFile(configPath)), configPath);
    checkModelMemory(
      `${dir}: the ClipModel`,
      clipModelParameters(nativeClipModelConfig(config)),
      options.dtype ?? "float32",
      options.device ?? "cpu",
    );
    const files = resolveWeightFiles(dir, { variant: options.variant, onWarning: warningSink(options) });
    const handle = await native().ClipModel.load({
      config: nativeClipModelConfig(config),
      files,
      dtype: options.dtype ?? "float32",
      device: options.device ?? "cpu",
    });
    return new ClipModel(handle, config, dir);
  }

  /** The stored logit_scale; similarity logits are exp(logitScale) * cos. */
  get logitScale(): number {
    return this.handle.logitScale;
  }

  /** inputIds int64 [n, L] (+ the tokenizer's attention mask) -> [n, projection_dim], not normalized. */
  async getTextFeatures(inputIds: Tensor, attentionMask?: Tensor): Promise<Tensor> {
    if (inputIds.dtype !== "int64" || inputIds.shape.length !== 2) {
      throw new TypeError(
        `ClipModel: inputIds must be an int64 [batch, length] tensor (got ${inputIds.dtype} [${inputIds.shape.join(", ")}])`,
      );
    }
    if (attentionMask && attentionMask.shape.join(",") !== inputIds.shape.join(",")) {
      throw new TypeError(
        `ClipModel: attentionMask [${attentionMask.shape.join(", ")}] must have the shape of inputIds [${inputIds.shape.join(", ")}]`,
      );
    }
    return this.handle.getTextFeatures(inputIds, attentionMask);
  }

  /** pixelValues float [n, 3, S, S] (CLIPImageProcessor output) -> [n, projection_dim], not normalized. */
  async getImageFeatures(pixelValues: Tensor): Promise<Tensor> {
    const v = this.config.vision_config;
    const [, c, h, w] = pixelValues.shape;
    if (pixelValues.shape.length !== 4 || c !== v.num_channels || h !== v.image_size || w !== v.image_size) {
      throw new TypeError(
        `ClipModel: pixelValues must be [batch, ${v.num_channels}, ${v.image_size}, ${v.image_size}] ` +
          `(got [${pixelValues.shape.join(", ")}]); resize and center-crop to image_size first`,
      );
    }
    return this.handle.getImageFeatures(pixelValues);
  }
}
