// The models LoRA adapters live on (a pipeline's UNet and text encoder) and the
// argument checks every adapter operation shares: which models were given, scales,
// adapter names, the next free default name.
import { native, type NativeAdaptableModel } from "../../native/index.js";
import type { TextEncoder } from "../../models/text_encoder.js";
import type { UNet } from "../../models/unet.js";
import type { LoraComponent } from "../formats/types.js";

/** The models a LoRA applies to (a pipeline's components). */
export interface LoraModels {
  unet?: UNet;
  textEncoder?: TextEncoder;
}

export type ModelKey = keyof LoraModels;
const COMPONENT_OF: Record<ModelKey, LoraComponent> = { unet: "unet", textEncoder: "text_encoder" };
export const MODEL_OF: Partial<Record<LoraComponent, ModelKey>> = { unet: "unet", text_encoder: "textEncoder" };

/** One given model: its key in LoraModels, its LoRA component and its native handle. */
export interface Target {
  key: ModelKey;
  component: LoraComponent;
  handle: NativeAdaptableModel;
}

export function targetsOf(models: LoraModels, what: string): Target[] {
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

export function checkScale(scale: unknown, what: string): number {
  if (typeof scale !== "number" || !Number.isFinite(scale)) throw new TypeError(`${what} must be a finite number`);
  return scale;
}

export function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || name.length === 0) throw new TypeError(`${what}: name must be a non-empty string`);
  return name;
}

/** "default_0", "default_1", ...: the first not on any of the models (diffusers' naming). */
export async function freshName(handles: NativeAdaptableModel[]): Promise<string> {
  const taken = new Set<string>();
  for (const handle of handles) for (const info of await native().lora.list(handle)) taken.add(info.name);
  for (let i = 0; ; i++) if (!taken.has(`default_${i}`)) return `default_${i}`;
}

/** Whether adapter `name` is on the model. */
export async function hasAdapter(target: Target, name: string): Promise<boolean> {
  return (await native().lora.list(target.handle)).some((a) => a.name === name);
}
