// Kohya names <-> module paths. Kohya replaces every "." of a diffusers module path
// by "_" ("...attn1.to_out.0" -> "..._attn1_to_out_0"), which cannot be undone by
// rule alone ("to_out_0" vs "proj_in"). Going back uses, in order of trust: the
// module names of the base model, when the caller has them; otherwise a tokenizer
// over the Stable Diffusion / CLIP module vocabulary, whose result must also fit
// the grammar of LoRA-targetable SD UNet / CLIP text layers.
import { join } from "node:path";
import { existsSync } from "node:fs";

import { inspectSafetensors } from "../../io/safetensors.js";
import { resolveWeightFiles } from "../../models/files.js";
import {
  isLdmUnetName,
  ldmToDiffusers,
  SD_UNET_LAYOUT,
  unetLayoutFromModuleNames,
  type UnetLayout,
} from "../../models/ldm.js";
import { LORA_COMPONENTS, splitAdapterKey, type LoraComponent } from "./types.js";

/** Module names of the base model, per component ("down_blocks.0.attentions.0.proj_in", ...). */
export type BaseModuleNames = Partial<Record<LoraComponent, Iterable<string>>>;

// ---------------------------------------------------------------- prefixes

/** Kohya prefixes, longest first so "lora_te1_" wins over "lora_te_"-like overlaps. */
const KOHYA_PREFIXES: [string, LoraComponent][] = [
  ["lora_unet_", "unet"],
  ["lora_te1_", "text_encoder"],
  ["lora_te2_", "text_encoder_2"],
  ["lora_te_", "text_encoder"],
];

export function kohyaComponentOf(name: string): { component: LoraComponent; rest: string } | undefined {
  for (const [prefix, component] of KOHYA_PREFIXES) {
    if (name.startsWith(prefix)) return { component, rest: name.slice(prefix.length) };
  }
  return undefined;
}

export interface KohyaNameOptions {
  /** "lora_te1_"/"lora_te2_" (SDXL, as sd-scripts writes it) instead of "lora_te_". */
  numberedTextEncoders?: boolean;
}

/** "unet.down_blocks.0.attentions.0.proj_in" -> "lora_unet_down_blocks_0_attentions_0_proj_in". */
export function toKohyaName(key: string, options: KohyaNameOptions = {}): string {
  const { component, path } = splitAdapterKey(key);
  const prefix =
    component === "unet"
      ? "lora_unet_"
      : component === "text_encoder_2"
        ? "lora_te2_"
        : options.numberedTextEncoders
          ? "lora_te1_"
          : "lora_te_";
  return prefix + underscored(path);
}

export const underscored = (path: string): string => path.replace(/\./g, "_");

// ---------------------------------------------------------------- vocabulary and grammar

// Module-name words that themselves contain underscores. Everything else in a
// kohya name is a single word or a number, joined by ".".
const UNDERSCORE_WORDS = [
  "down_blocks",
  "up_blocks",
  "mid_block",
  "transformer_blocks",
  "to_q",
  "to_k",
  "to_v",
  "to_out",
  "proj_in",
  "proj_out",
  "conv_shortcut",
  "time_emb_proj",
  "conv_in",
  "conv_out",
  "conv_norm_out",
  "time_embedding",
  "add_embedding",
  "linear_1",
  "linear_2",
  "text_model",
  "self_attn",
  "q_proj",
  "k_proj",
  "v_proj",
  "out_proj",
  "final_layer_norm",
  "layer_norm1",
  "layer_norm2",
  "text_projection",
].map((w) => w.split("_"));

/** Joins kohya's "_"-separated parts into module-path segments, longest vocabulary word first. */
export function tokenizeKohyaName(name: string): string {
  const parts = name.split("_");
  const segments: string[] = [];
  for (let i = 0; i < parts.length;) {
    let taken = 1;
    for (const word of UNDERSCORE_WORDS) {
      if (word.length > taken && word.every((w, k) => parts[i + k] === w)) taken = word.length;
    }
    segments.push(parts.slice(i, i + taken).join("_"));
    i += taken;
  }
  return segments.join(".");
}

// The Linear / Conv2d layers of a diffusers UNet2DConditionModel and a transformers
// CLIP text model: what a LoRA can target.
const ATTENTION_INNER = String.raw`(?:proj_in|proj_out|transformer_blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))`;
const RESNET_INNER = String.raw`(?:conv1|conv2|time_emb_proj|conv_shortcut)`;
const UNET_GRAMMAR = new RegExp(
  String.raw`^(?:(?:down_blocks|up_blocks)\.\d+\.(?:attentions\.\d+\.${ATTENTION_INNER}|resnets\.\d+\.${RESNET_INNER})` +
    String.raw`|down_blocks\.\d+\.downsamplers\.0\.conv|up_blocks\.\d+\.upsamplers\.0\.conv` +
    String.raw`|mid_block\.(?:attentions\.\d+\.${ATTENTION_INNER}|resnets\.\d+\.${RESNET_INNER})` +
    String.raw`|conv_in|conv_out|time_embedding\.linear_[12]|add_embedding\.linear_[12])$`,
);
const CLIP_GRAMMAR =
  /^(?:text_model\.encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])|text_projection)$/;

export function isKnownModulePath(component: LoraComponent, path: string): boolean {
  return (component === "unet" ? UNET_GRAMMAR : CLIP_GRAMMAR).test(path);
}

// ---------------------------------------------------------------- resolving kohya names

export interface KohyaResolver {
  /** The adapter key ("unet.<path>") of a kohya module name, or an error message. */
  resolve(name: string): { key: string } | { error: string };
  /** The UNet layout used for LDM names. */
  readonly layout: UnetLayout;
}

/**
 * A resolver for one file. `defaultLayout` is the UNet layout assumed for LDM names
 * when no UNet module names are given (SD 1.x/2.x unless the caller knows better).
 */
export function kohyaResolver(base: BaseModuleNames = {}, defaultLayout: UnetLayout = SD_UNET_LAYOUT): KohyaResolver {
  const lookups = new Map<LoraComponent, Map<string, string[]>>();
  for (const component of LORA_COMPONENTS) {
    const names = base[component];
    if (!names) continue;
    const byKohya = new Map<string, string[]>();
    for (const name of moduleNames(names)) {
      const list = byKohya.get(underscored(name)) ?? [];
      list.push(name);
      byKohya.set(underscored(name), list);
    }
    lookups.set(component, byKohya);
  }
  const unetNames = base.unet ? [...moduleNames(base.unet)] : undefined;
  const layout = (unetNames && unetLayoutFromModuleNames(unetNames)) ?? defaultLayout;

  function resolve(name: string): { key: string } | { error: string } {
    const split = kohyaComponentOf(name);
    if (!split) return { error: `"${name}": unknown prefix (expected lora_unet_, lora_te_, lora_te1_ or lora_te2_)` };
    const { component } = split;
    let rest = split.rest;
    if (component === "unet" && isLdmUnetName(rest)) {
      const mapped = ldmToDiffusers(rest, layout);
      if (!mapped) {
        return {
          error:
            `"${name}": LDM/CompVis UNet name with no counterpart in this UNet layout ` +
            `(${lookups.has("unet") ? "the base model's" : "SD 1.x/2.x or SDXL assumed; pass the base model (--base)"})`,
        };
      }
      rest = mapped;
    }
    const lookup = lookups.get(component);
    if (lookup) {
      const found = lookup.get(rest);
      if (!found) return { error: `"${name}": the base model's ${component} has no module named like that` };
      if (found.length > 1) return { error: `"${name}": ambiguous in the base model (${found.join(", ")})` };
      return { key: `${component}.${found[0]}` };
    }
    if (component !== "unet" && /(^|_)transformer_resblocks_/.test(rest)) {
      return { error: `"${name}": OpenCLIP text-encoder names (SD 2.x original checkpoints) are not supported yet` };
    }
    const path = tokenizeKohyaName(rest);
    if (!isKnownModulePath(component, path)) {
      return {
        error: `"${name}": not a known ${component} layer (read as "${path}"); pass the base model (--base) to resolve it`,
      };
    }
    return { key: `${component}.${path}` };
  }
  return { resolve, layout };
}

/** Module names from module or parameter names ("x.weight" / "x.bias" -> "x"). */
export function* moduleNames(names: Iterable<string>): Iterable<string> {
  const seen = new Set<string>();
  for (const name of names) {
    const module = name.replace(/\.(weight|bias)$/, "");
    if (!seen.has(module)) {
      seen.add(module);
      yield module;
    }
  }
}

/**
 * The module names of a diffusers model folder's unet/, text_encoder/ and
 * text_encoder_2/ (whichever exist), read from the safetensors headers only.
 */
export async function baseModuleNamesFromModel(dir: string): Promise<BaseModuleNames> {
  const out: BaseModuleNames = {};
  for (const component of LORA_COMPONENTS) {
    const sub = join(dir, component);
    if (!existsSync(sub)) continue;
    const names: string[] = [];
    for (const file of resolveWeightFiles(sub)) {
      for (const t of (await inspectSafetensors(file)).tensors) {
        if (t.name.endsWith(".weight")) names.push(t.name.slice(0, -".weight".length));
      }
    }
    out[component] = names;
  }
  if (!out.unet && !out.text_encoder) {
    throw new Error(
      `${dir}: not a diffusers model folder (expected unet/ and/or text_encoder/ with safetensors weights)`,
    );
  }
  return out;
}
