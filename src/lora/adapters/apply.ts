// LoRA adapters on loaded models: apply LoRA files (any format, see ../formats/load.ts)
// and LoraWeights. Keys "unet.<path>" go to the UNet, "text_encoder.<path>" to the
// text encoder. The math is native (native/nn/lora.h); this file routes keys and checks
// arguments. The rest of the adapter API lives beside it and is re-exported here:
// trainable.ts (create, parameters, extract), active.ts (scales, enable, remove, fuse),
// models.ts (the models and shared checks).
import { native, type NativeLoraAdapterWeights } from "../../native/index.js";
import { loadLoraFile, type LoadLoraOptions } from "../formats/load.js";
import { explainMisfit } from "../formats/trained_for.js";
import { SD_UNET_LAYOUT, unetLayoutFromModuleNames } from "../../models/ldm.js";
import { applyBlockWeights, parseBlockWeights } from "../tools/block_weights.js";
import { disposeLora, splitAdapterKey, type LoraComponent, type LoraWeights } from "../formats/types.js";
import { checkName, checkScale, freshName, MODEL_OF, targetsOf, type LoraModels, type Target } from "./models.js";

export type { LoraAdapterInfo, LoraInit, LoraType } from "../../native/index.js";
export type { LoraTargets } from "./targets.js";
export type { LoraModels } from "./models.js";
export { createTrainableLora, extractLora, loraParameters } from "./trainable.js";
export type { CreateLoraOptions, TrainableLora } from "./trainable.js";
export { fuseLora, listLoras, removeLora, setLoraEnabled, setLoraScales, unfuseLora } from "./active.js";
export type { FuseLoraOptions } from "./active.js";

export interface ApplyLoraOptions {
  /** Adapter name (default "default_<n>", the first free one), for scales, fuse and remove. */
  name?: string;
  /** The runtime scale (diffusers' lora_scale / kohya's multiplier). Default 1. */
  scale?: number;
  /** Keep the adapter trainable (float32 leaves with gradients), e.g. to continue training it. */
  trainable?: boolean;
  /** Dropout on the adapter input while training. Default 0. */
  dropout?: number;
  /**
   * Per-block weights, AUTOMATIC1111 "LoRA Block Weight" style: a preset ("OUTALL") or 17 / 26
   * values ("1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"); see src/lora/tools/block_weights.ts.
   */
  blockWeights?: string | number[];
}

/**
 * Attaches every adapter of `weights` to its model (weights are copied; dispose `weights`
 * whenever convenient). All-or-nothing: a key for a component with no model given, a
 * module the model lacks, or a shape that does not fit (a LoRA made for another base) is
 * listed in one error and nothing stays attached. Resolves to the adapter name.
 */
export async function applyLora(
  models: LoraModels,
  weights: LoraWeights,
  options: ApplyLoraOptions = {},
): Promise<string> {
  const targets = targetsOf(models, "applyLora");
  const scale = checkScale(options.scale ?? 1, "applyLora: scale");
  if (options.blockWeights !== undefined) {
    const weighted = await blockWeighted(models, weights, options.blockWeights);
    try {
      return await applyLora(models, weighted, { ...options, blockWeights: undefined });
    } finally {
      disposeLora(weighted);
    }
  }
  const byComponent = new Map<LoraComponent, NativeLoraAdapterWeights[]>();
  const add = (key: string, entry: Omit<NativeLoraAdapterWeights, "path">) => {
    const { component, path } = splitAdapterKey(key);
    byComponent.set(component, [...(byComponent.get(component) ?? []), { path, ...entry }]);
  };
  for (const [key, adapter] of weights.adapters) {
    const { down, up, alpha, magnitude } = adapter;
    add(key, magnitude ? { down, up, alpha, type: "dora", factors: { magnitude } } : { down, up, alpha });
  }
  for (const [key, adapter] of weights.lycoris ?? []) {
    add(key, { alpha: adapter.alpha, type: adapter.type, factors: adapter.factors });
  }
  const missing = [...byComponent].filter(([component]) => !targets.some((t) => t.component === component));
  if (missing.length) {
    const lines = missing.map(([component, list]) => {
      const model = MODEL_OF[component];
      const hint = model ? `pass models.${model}` : "sdtune has no model for this component";
      return `  - ${list.length} adapters for "${component}" (${hint})`;
    });
    throw new Error(`applyLora: the LoRA targets components that were not given:\n${lines.join("\n")}`);
  }
  if (byComponent.size === 0) throw new Error("applyLora: the LoRA holds no adapters");
  const name =
    options.name === undefined ? await freshName(targets.map((t) => t.handle)) : checkName(options.name, "applyLora");
  const attached: Target[] = [];
  try {
    for (const target of targets) {
      const adapters = byComponent.get(target.component);
      if (!adapters) continue;
      await native().lora.attach(target.handle, name, adapters, {
        multiplier: scale,
        dropout: options.dropout ?? 0,
        trainable: options.trainable ?? false,
        keyPrefix: `${target.component}.`,
      });
      attached.push(target);
    }
  } catch (error) {
    for (const target of attached) await native().lora.remove(target.handle, name);
    throw error;
  }
  return name;
}

/**
 * Reads a LoRA file (any format; kohya names resolved against the models' own module
 * names) and applies it. Resolves to the adapter name.
 */
export async function applyLoraFile(
  models: LoraModels,
  path: string,
  options: ApplyLoraOptions & Pick<LoadLoraOptions, "signal" | "onProgress"> = {},
): Promise<string> {
  const targets = targetsOf(models, "applyLoraFile");
  const baseModuleNames: Partial<Record<LoraComponent, string[]>> = {};
  for (const t of targets) {
    const modules = native().lora.modules(t.handle);
    baseModuleNames[t.component] = modules.filter((m) => m.kind === "linear" || m.kind === "conv2d").map((m) => m.path);
  }
  const weights = await loadLoraFile(path, {
    baseModuleNames,
    signal: options.signal,
    onProgress: options.onProgress,
  }).catch(async (error: unknown) => Promise.reject(await explainMisfit(path, error)));
  try {
    return await applyLora(models, weights, options);
  } catch (error) {
    throw await explainMisfit(path, error);
  } finally {
    disposeLora(weights);
  }
}

/** `weights` with block weights applied, in the UNet layout of `models.unet` (SD 1.x/2.x without one). */
async function blockWeighted(models: LoraModels, weights: LoraWeights, spec: string | number[]): Promise<LoraWeights> {
  const blocks = parseBlockWeights(spec);
  const unetModules = models.unet
    ? native()
        .lora.modules(models.unet.handle)
        .map((m) => m.path)
    : [];
  const layout = unetLayoutFromModuleNames(unetModules) ?? SD_UNET_LAYOUT;
  const weighted = await applyBlockWeights(weights, blocks, layout);
  if (!weighted.adapters.size)
    throw new Error("applyLora: the block weights leave no layer of this LoRA at a non-zero weight");
  return weighted;
}
