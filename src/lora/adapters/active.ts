// Several adapters on the models: list them, choose the active ones and their scales,
// switch them all on or off, remove one, fuse into the base weights and back.
import { native, type LoraAdapterInfo } from "../../native/index.js";
import { checkName, checkScale, hasAdapter, targetsOf, type LoraModels, type ModelKey, type Target } from "./models.js";

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
