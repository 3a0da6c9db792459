// LoRA adapters on loaded models: apply LoRA files (any format, see load.ts), create
// trainable adapters, set the active adapters and their scales, fuse into the weights
// and back, remove, and read adapters back as LoraWeights (to save with saveLora).
// Keys "unet.<path>" go to the UNet, "text_encoder.<path>" to the text encoder. The
// math is native (native/nn/lora.h); this file routes keys and checks arguments.
import {
  native,
  type Generator,
  type LoraAdapterInfo,
  type LoraInit,
  type LoraType,
  type NativeAdaptableModel,
  type NativeLoraAdapterWeights,
} from "../../native/index.js";
import type { Tensor } from "../../native/index.js";
import type { TextEncoder } from "../../models/text_encoder.js";
import type { UNet } from "../../models/unet.js";
import { createGenerator } from "../../sched/scheduler.js";
import { loadLoraFile, type LoadLoraOptions } from "../formats/load.js";
import { explainMisfit } from "../formats/trained_for.js";
import { SD_UNET_LAYOUT, unetLayoutFromModuleNames } from "../../models/ldm.js";
import { applyBlockWeights, parseBlockWeights } from "../tools/block_weights.js";
import { lycorisRank } from "../formats/lycoris.js";
import { matchTargets, type LoraTargets } from "./targets.js";
import {
  disposeLora,
  splitAdapterKey,
  type LoraAdapter,
  type LoraComponent,
  type LoraWeights,
  type LycorisAdapter,
} from "../formats/types.js";

export type { LoraAdapterInfo, LoraInit, LoraType } from "../../native/index.js";
export type { LoraTargets } from "./targets.js";

/** The models a LoRA applies to (a pipeline's components). */
export interface LoraModels {
  unet?: UNet;
  textEncoder?: TextEncoder;
}

type ModelKey = keyof LoraModels;
const COMPONENT_OF: Record<ModelKey, LoraComponent> = { unet: "unet", textEncoder: "text_encoder" };
const MODEL_OF: Partial<Record<LoraComponent, ModelKey>> = { unet: "unet", text_encoder: "textEncoder" };

interface Target {
  key: ModelKey;
  component: LoraComponent;
  handle: NativeAdaptableModel;
}

function targetsOf(models: LoraModels, what: string): Target[] {
  if (!models || typeof models !== "object")
    throw new TypeError(`${what}: models must be an object {unet?, textEncoder?}`);
  const out: Target[] = [];
  for (const key of Object.keys(COMPONENT_OF) as ModelKey[]) {
    const model = models[key];
    if (!model) continue;
    if (model.disposed) throw new Error(`${what}: the ${key} is disposed`);
    out.push({ key, component: COMPONENT_OF[key], handle: model.handle });
  }
  if (!out.length) throw new TypeError(`${what}: give at least one model (unet and/or textEncoder)`);
  return out;
}

function checkScale(scale: unknown, what: string): number {
  if (typeof scale !== "number" || !Number.isFinite(scale)) throw new TypeError(`${what} must be a finite number`);
  return scale;
}

function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || name.length === 0) throw new TypeError(`${what}: name must be a non-empty string`);
  return name;
}

/** "default_0", "default_1", ...: the first not on any of the models (diffusers' naming). */
async function freshName(handles: NativeAdaptableModel[]): Promise<string> {
  const taken = new Set<string>();
  for (const handle of handles) for (const info of await native().lora.list(handle)) taken.add(info.name);
  for (let i = 0; ; i++) if (!taken.has(`default_${i}`)) return `default_${i}`;
}

// ---------------------------------------------------------------- applying LoRA weights

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

// ---------------------------------------------------------------- trainable adapters

export interface CreateLoraOptions {
  /** Adapter name (default "default_<n>"). */
  name?: string;
  /** peft target_modules: names matched against the end of module paths, or one regular expression (full match). */
  targets: LoraTargets;
  rank: number;
  /** Default: rank (scale 1). */
  alpha?: number;
  dropout?: number;
  /** Default "gaussian" (diffusers' training scripts); "kaiming" is peft's default. */
  init?: LoraInit;
  /** Seed of a CPU generator for the init (reproducible); or give `generator`. Default: the global generator. */
  seed?: number;
  generator?: Generator;
  /** lora (default), dora (peft's use_dora), loha or lokr (LyCORIS); see native/nn/lora_types.h. */
  type?: LoraType;
  /** lokr: LyCORIS' factor (default -1: each dimension split as evenly as possible). */
  factor?: number;
  /** lokr: LyCORIS' decompose_both (w1 a low-rank product too when small enough). */
  decomposeBoth?: boolean;
}

export interface TrainableLora {
  name: string;
  /**
   * The live float32 tensors, named as peft names them: "<module path>.lora_A.weight" / ".lora_B.weight"
   * (DoRA adds ".lora_magnitude_vector"; LoHa / LoKr: "<module path>.<LyCORIS factor name>").
   */
  parameters: [string, Tensor][];
}

/** New trainable adapters on the matched Linear / Conv2d layers of one model (the base stays frozen). */
export async function createTrainableLora(
  model: UNet | TextEncoder,
  options: CreateLoraOptions,
): Promise<TrainableLora> {
  const what = "createTrainableLora";
  if (!model || model.disposed) throw new TypeError(`${what}: model must be a loaded UNet or TextEncoder`);
  const rank = options.rank;
  if (!Number.isInteger(rank) || rank <= 0) throw new RangeError(`${what}: rank must be a positive integer`);
  const alpha = checkScale(options.alpha ?? rank, `${what}: alpha`);
  const dropout = options.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`${what}: dropout must be in [0, 1)`);
  const init = options.init ?? "gaussian";
  if (!["gaussian", "kaiming", "random"].includes(init)) {
    throw new TypeError(`${what}: init "${String(init)}" must be gaussian, kaiming or random`);
  }
  if (options.seed !== undefined && options.generator) throw new TypeError(`${what}: give seed or generator, not both`);
  const handle = model.handle as NativeAdaptableModel;
  const paths = matchTargets(native().lora.modules(handle), options.targets, what);
  const name = options.name === undefined ? await freshName([handle]) : options.name;
  checkName(name, what);
  const generator = options.generator ?? (options.seed !== undefined ? createGenerator(options.seed) : undefined);
  const type = options.type ?? "lora";
  if (!["lora", "dora", "loha", "lokr"].includes(type)) {
    throw new TypeError(`${what}: type "${String(type)}" must be lora, dora, loha or lokr`);
  }
  const factor = options.factor ?? -1;
  if (!Number.isInteger(factor) || factor === 0 || factor < -1) {
    throw new RangeError(`${what}: factor must be -1 or a positive integer`);
  }
  const typed = { type, factor, decomposeBoth: options.decomposeBoth ?? false };
  const parameters = await native().lora.create(handle, name, {
    paths,
    rank,
    alpha,
    dropout,
    init,
    generator,
    ...typed,
  });
  return { name, parameters };
}

/** The live tensors of adapter `name` on one model (peft names, module order), e.g. for an optimizer. */
export async function loraParameters(model: UNet | TextEncoder, name: string): Promise<[string, Tensor][]> {
  return native().lora.parameters(model.handle as NativeAdaptableModel, checkName(name, "loraParameters"));
}

/** Adapter `name` from every model as LoraWeights ("unet.<path>", "text_encoder.<path>"), copied. */
export async function extractLora(models: LoraModels, name: string): Promise<LoraWeights> {
  const targets = targetsOf(models, "extractLora");
  checkName(name, "extractLora");
  const adapters = new Map<string, LoraAdapter>();
  const lycoris = new Map<string, LycorisAdapter>();
  for (const t of targets) {
    if (!(await hasAdapter(t, name))) continue;
    for (const a of await native().lora.extract(t.handle, name)) {
      const key = `${t.component}.${a.path}`;
      const factors = a.factors ?? {};
      if (a.type === "loha" || a.type === "lokr") {
        lycoris.set(key, { type: a.type, factors, alpha: a.alpha, rank: lycorisRank(a.type, factors) });
        continue;
      }
      const adapter: LoraAdapter = { down: a.down!, up: a.up!, alpha: a.alpha, rank: a.down!.shape[0]! };
      if (factors.magnitude) adapter.magnitude = factors.magnitude;
      adapters.set(key, adapter);
    }
  }
  if (!adapters.size && !lycoris.size) {
    throw new Error(`extractLora: no LoRA adapter named "${name}" on the given models`);
  }
  const sorted = <T>(m: Map<string, T>) => new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const out: LoraWeights = { format: "peft", adapters: sorted(adapters), metadata: {}, warnings: [] };
  if (lycoris.size) out.lycoris = sorted(lycoris);
  return out;
}

// ---------------------------------------------------------------- several adapters

async function hasAdapter(target: Target, name: string): Promise<boolean> {
  return (await native().lora.list(target.handle)).some((a) => a.name === name);
}

/** Every adapter on each model. */
export async function listLoras(models: LoraModels): Promise<Partial<Record<ModelKey, LoraAdapterInfo[]>>> {
  const out: Partial<Record<ModelKey, LoraAdapterInfo[]>> = {};
  for (const t of targetsOf(models, "listLoras")) out[t.key] = await native().lora.list(t.handle);
  return out;
}

/**
 * diffusers' set_adapters(names, weights): exactly the named adapters are active, each at
 * its scale (the others stay loaded, inactive). Every name must be on at least one model.
 */
export async function setLoraScales(
  models: LoraModels,
  scales: Record<string, number> | [string, number][],
): Promise<void> {
  const targets = targetsOf(models, "setLoraScales");
  const entries = Array.isArray(scales) ? scales : Object.entries(scales);
  for (const [name, scale] of entries) {
    checkName(name, "setLoraScales");
    checkScale(scale, `setLoraScales: the scale of "${name}"`);
  }
  const present = new Map<Target, Set<string>>();
  for (const t of targets) present.set(t, new Set((await native().lora.list(t.handle)).map((a) => a.name)));
  const unknown = entries.filter(([name]) => ![...present.values()].some((names) => names.has(name)));
  if (unknown.length) {
    throw new Error(
      `setLoraScales: no LoRA adapter named ${unknown.map(([n]) => `"${n}"`).join(", ")} on the given models`,
    );
  }
  for (const t of targets) {
    const here = entries.filter(([name]) => present.get(t)!.has(name));
    await native().lora.setAdapters(
      t.handle,
      here.map(([n]) => n),
      here.map(([, s]) => s),
    );
  }
}

/** diffusers' enable_lora / disable_lora: every adapter on or off, the active set and scales kept. */
export async function setLoraEnabled(models: LoraModels, enabled: boolean): Promise<void> {
  for (const t of targetsOf(models, "setLoraEnabled")) await native().lora.setEnabled(t.handle, enabled);
}

/** Deletes adapter `name` from every model holding it; resolves to the layers it was on, per model. */
export async function removeLora(models: LoraModels, name: string): Promise<Partial<Record<ModelKey, number>>> {
  checkName(name, "removeLora");
  const out: Partial<Record<ModelKey, number>> = {};
  for (const t of targetsOf(models, "removeLora")) {
    if (await hasAdapter(t, name)) out[t.key] = await native().lora.remove(t.handle, name);
  }
  if (!Object.keys(out).length) throw new Error(`removeLora: no LoRA adapter named "${name}" on the given models`);
  return out;
}

export interface FuseLoraOptions {
  /** Adapters to fuse (default: every active one). */
  names?: string[];
  /** diffusers' fuse_lora(lora_scale): multiplies each adapter's own scale. Default 1. */
  scale?: number;
  /** Delete the adapters after fusing and keep no copy of the old weights (unfuseLora cannot undo it). */
  permanent?: boolean;
}

/**
 * Adds the adapters into the base weights (float32 sum, rounded once to the weight dtype);
 * forward then skips them. unfuseLora restores the weights bit for bit. Resolves to the
 * number of layers changed, per model.
 */
export async function fuseLora(
  models: LoraModels,
  options: FuseLoraOptions = {},
): Promise<Partial<Record<ModelKey, number>>> {
  const targets = targetsOf(models, "fuseLora");
  const scale = checkScale(options.scale ?? 1, "fuseLora: scale");
  const out: Partial<Record<ModelKey, number>> = {};
  if (options.names) {
    const present = new Set<string>();
    for (const t of targets) for (const a of await native().lora.list(t.handle)) present.add(a.name);
    const unknown = options.names.filter((n) => !present.has(n));
    if (unknown.length) throw new Error(`fuseLora: no LoRA adapter named ${unknown.map((n) => `"${n}"`).join(", ")}`);
  }
  for (const t of targets) {
    const names = options.names
      ? (await native().lora.list(t.handle)).map((a) => a.name).filter((n) => options.names!.includes(n))
      : undefined;
    if (names && names.length === 0) continue;
    out[t.key] = await native().lora.fuse(t.handle, { names, scale, permanent: options.permanent ?? false });
  }
  return out;
}

/** Restores every fused layer's weights exactly; resolves to the layers restored, per model. */
export async function unfuseLora(models: LoraModels): Promise<Partial<Record<ModelKey, number>>> {
  const out: Partial<Record<ModelKey, number>> = {};
  for (const t of targetsOf(models, "unfuseLora")) out[t.key] = await native().lora.unfuse(t.handle);
  return out;
}
