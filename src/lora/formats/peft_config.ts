// PEFT LoraConfig fields that decide a module's rank and alpha, from a PEFT
// adapter_config.json or from diffusers' "lora_adapter_metadata" safetensors entry.
import { LORA_COMPONENTS, type LoraComponent } from "./types.js";

export interface PeftLoraConfig {
  r: number;
  loraAlpha: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** Scale alpha / sqrt(r) instead of alpha / r. */
  useRslora: boolean;
  useDora: boolean;
  baseModelClass?: string;
}

/** Reads the fields that matter, with errors naming `where` and the field. */
export function parsePeftConfig(raw: unknown, where: string): PeftLoraConfig {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${where}: expected a JSON object`);
  const o = raw as Record<string, unknown>;
  const num = (field: string, fallback?: number): number => {
    const v = o[field];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new Error(`${where}: missing "${field}"`);
    }
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new Error(`${where}: "${field}" must be a positive number (got ${JSON.stringify(v)})`);
    }
    return v;
  };
  const pattern = (field: string): Record<string, number> => {
    const v = o[field];
    if (v === undefined || v === null) return {};
    if (typeof v !== "object" || Array.isArray(v)) throw new Error(`${where}: "${field}" must be an object`);
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== "number" || !Number.isFinite(x)) throw new Error(`${where}: "${field}.${k}" must be a number`);
    }
    return v as Record<string, number>;
  };
  if (o.peft_type !== undefined && o.peft_type !== "LORA") {
    throw new Error(`${where}: peft_type "${String(o.peft_type)}" is not supported (only LORA)`);
  }
  const mapping = o.auto_mapping as { base_model_class?: unknown } | undefined;
  const r = num("r", 8); // PEFT's defaults when a field is absent
  return {
    r,
    loraAlpha: num("lora_alpha", 8),
    rankPattern: pattern("rank_pattern"),
    alphaPattern: pattern("alpha_pattern"),
    useRslora: o.use_rslora === true,
    useDora: o.use_dora === true,
    baseModelClass: typeof mapping?.base_model_class === "string" ? mapping.base_model_class : undefined,
  };
}

/**
 * diffusers' "lora_adapter_metadata": one LoraConfig per component, with keys
 * prefixed "unet." / "text_encoder." (pipeline save), or a single unprefixed one
 * (model save). Returns the config per component ("*" for the unprefixed case).
 */
export function parseAdapterMetadata(json: string, where: string): Map<LoraComponent | "*", PeftLoraConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    throw new Error(`${where}: "lora_adapter_metadata" is not valid JSON (${(error as Error).message})`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(`${where}: "lora_adapter_metadata" must be a JSON object`);
  }
  const grouped = new Map<LoraComponent | "*", Record<string, unknown>>();
  for (const [key, value] of Object.entries(raw)) {
    const component = LORA_COMPONENTS.find((c) => key.startsWith(`${c}.`));
    const group = component ?? "*";
    const field = component ? key.slice(component.length + 1) : key;
    const entry = grouped.get(group) ?? {};
    entry[field] = value;
    grouped.set(group, entry);
  }
  const out = new Map<LoraComponent | "*", PeftLoraConfig>();
  for (const [group, fields] of grouped) {
    out.set(group, parsePeftConfig(fields, `${where}: lora_adapter_metadata${group === "*" ? "" : ` (${group})`}`));
  }
  return out;
}

/** The first pattern key matching a module path the way PEFT matches them (a dotted suffix, as a regex). */
function patternValue(patterns: Record<string, number>, path: string): number | undefined {
  for (const [key, value] of Object.entries(patterns)) {
    if (key === path) return value;
    try {
      if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(path)) return value;
    } catch {
      if (path.endsWith(`.${key}`)) return value;
    }
  }
  return undefined;
}

/** The rank the config expects for a module. */
export function configRank(config: PeftLoraConfig, path: string): number {
  return patternValue(config.rankPattern, path) ?? config.r;
}

/**
 * The module's alpha in sdtune's convention (delta = alpha / rank * up @ down):
 * lora_alpha (or its alpha_pattern entry), or, with rsLoRA (scale alpha / sqrt(rank)),
 * alpha * sqrt(rank).
 */
export function configAlpha(config: PeftLoraConfig, path: string, rank: number): number {
  const alpha = patternValue(config.alphaPattern, path) ?? config.loraAlpha;
  return config.useRslora ? alpha * Math.sqrt(rank) : alpha;
}

/** The component a PEFT adapter was made for, from its base model class. */
export function componentOfModelClass(name: string | undefined): LoraComponent | undefined {
  if (!name) return undefined;
  if (name === "UNet2DConditionModel") return "unet";
  if (name === "CLIPTextModel") return "text_encoder";
  if (name === "CLIPTextModelWithProjection") return "text_encoder_2";
  return undefined;
}
