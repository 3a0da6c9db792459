// The text encoder of a single-file checkpoint, in one of two layouts:
//  - "clip" (SD 1.x): transformers' CLIPTextModel under cond_stage_model.transformer., names as diffusers has them;
//  - "openclip" (SD 2.x): open_clip's text tower under cond_stage_model.model. (resblocks, fused
//    in_proj_weight / in_proj_bias holding q, k, v stacked on dim 0, ln_final, text_projection).
// SD 2.x conditions on the penultimate layer, so diffusers' SD 2 text encoder has 23 of open_clip's
// 24 layers: a file that holds text_projection (open_clip's own, not one written by diffusers'
// scripts/convert_diffusers_to_original_stable_diffusion.py) loses its last layer, as diffusers'
// convert_from_ckpt.py does.
import type { ShapeOf } from "./shapes.js";

export type TextLayout = "clip" | "openclip";

export const TEXT_PREFIX: Record<TextLayout, string> = {
  clip: "cond_stage_model.transformer.",
  openclip: "cond_stage_model.model.",
};

/** open_clip tensors with no CLIPTextModel counterpart (the projection and logit scale serve image-text matching). */
const OPENCLIP_UNUSED = new Set(["text_projection", "logit_scale", "attn_mask"]);

/** Renames inside a residual block, open_clip -> transformers. */
const BLOCK: [string, string][] = [
  ["ln_1.", "layer_norm1."],
  ["ln_2.", "layer_norm2."],
  ["mlp.c_fc.", "mlp.fc1."],
  ["mlp.c_proj.", "mlp.fc2."],
  ["attn.out_proj.", "self_attn.out_proj."],
];
const TOP: [string, string][] = [
  ["positional_embedding", "text_model.embeddings.position_embedding.weight"],
  ["token_embedding.weight", "text_model.embeddings.token_embedding.weight"],
  ["ln_final.weight", "text_model.final_layer_norm.weight"],
  ["ln_final.bias", "text_model.final_layer_norm.bias"],
];

/** Where a diffusers tensor comes from: a source key, or a third of a fused q/k/v tensor. */
export interface TextSource {
  key: string;
  /** 0 = q, 1 = k, 2 = v: rows [i*h, (i+1)*h) of the fused tensor. */
  third?: number;
}

/**
 * The diffusers (transformers) text encoder as a map from its keys to their sources in the file
 * (keys without the layout's prefix). Unknown keys are returned in `unknown`.
 */
export function textToDiffusers(
  layout: TextLayout,
  keys: Iterable<string>,
): { map: Map<string, TextSource>; unknown: string[]; layers: number } {
  const list = [...keys];
  const map = new Map<string, TextSource>();
  const unknown: string[] = [];
  if (layout === "clip") {
    for (const key of list) {
      if (key.endsWith("position_ids")) continue; // a constant buffer that newer transformers no longer save
      map.set(key.startsWith("text_model.") ? key : `text_model.${key}`, { key });
    }
    return { map, unknown, layers: countLayers([...map.keys()], /^text_model\.encoder\.layers\.(\d+)\./) };
  }
  let layers = countLayers(list, /^transformer\.resblocks\.(\d+)\./);
  if (list.includes("text_projection")) layers -= 1; // open_clip's own file: SD 2 uses the penultimate layer
  for (const key of list) {
    const top = TOP.find(([from]) => from === key);
    if (top) {
      map.set(top[1], { key });
      continue;
    }
    const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(key);
    if (!m) {
      if (!OPENCLIP_UNUSED.has(key)) unknown.push(key);
      continue;
    }
    if (Number(m[1]) >= layers) continue;
    const base = `text_model.encoder.layers.${m[1]}.`;
    const fused = /^attn\.in_proj_(weight|bias)$/.exec(m[2]!);
    if (fused) {
      ["q", "k", "v"].forEach((p, third) => map.set(`${base}self_attn.${p}_proj.${fused[1]}`, { key, third }));
      continue;
    }
    const rename = BLOCK.find(([from]) => m[2]!.startsWith(from));
    if (rename) map.set(base + rename[1] + m[2]!.slice(rename[0].length), { key });
    else unknown.push(key);
  }
  return { map, unknown, layers };
}

/** Where a single-file tensor comes from: diffusers keys, concatenated on dim 0 when several. */
export function textToSingleFile(layout: TextLayout, keys: Iterable<string>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const key of keys) {
    if (key.endsWith("position_ids")) continue;
    if (layout === "clip") {
      out.set(key, [key]);
      continue;
    }
    const top = TOP.find(([, to]) => to === key);
    if (top) {
      out.set(top[0], [key]);
      continue;
    }
    const m = /^text_model\.encoder\.layers\.(\d+)\.(.+)$/.exec(key);
    if (!m) throw new Error(`text encoder: no open_clip name for "${key}"`);
    const base = `transformer.resblocks.${m[1]}.`;
    const qkv = /^self_attn\.[qkv]_proj\.(weight|bias)$/.exec(m[2]!);
    if (qkv) {
      const prefix = `text_model.encoder.layers.${m[1]}.self_attn.`;
      out.set(
        `${base}attn.in_proj_${qkv[1]}`,
        ["q", "k", "v"].map((p) => `${prefix}${p}_proj.${qkv[1]}`),
      );
      continue;
    }
    const rename = BLOCK.find(([, to]) => m[2]!.startsWith(to));
    if (!rename) throw new Error(`text encoder: no open_clip name for "${key}"`);
    out.set(base + rename[0] + m[2]!.slice(rename[1].length), [key]);
  }
  return out;
}

/** transformers' CLIPTextConfig for the text encoder, from the converted keys and shapes. */
export function inferTextConfig(
  layout: TextLayout,
  shapeOf: ShapeOf,
  map: ReadonlyMap<string, TextSource>,
  layers: number,
  file: string,
): Record<string, unknown> | Error {
  const shape = (key: string): number[] => shapeOf(map.get(key)?.key ?? key);
  const [vocab, hidden] = shape("text_model.embeddings.token_embedding.weight") as [number, number];
  const [maxPositions] = shape("text_model.embeddings.position_embedding.weight");
  const fc1 = map.get("text_model.encoder.layers.0.mlp.fc1.weight");
  if (!fc1)
    throw new Error(
      `${file}: the text encoder has no layers (no ${layout === "clip" ? "encoder.layers.0" : "resblocks.0"})`,
    );
  if (hidden % 64 !== 0) {
    // Stable Diffusion's encoders have heads of 64; any other width needs the real config.
    return new Error(
      `${file}: the text encoder's width ${hidden} is not a multiple of 64, so its number of attention heads ` +
        "cannot be read off the weights: pass `config` (a diffusers folder with the same architecture)",
    );
  }
  return {
    architectures: ["CLIPTextModel"],
    attention_dropout: 0,
    bos_token_id: 0,
    eos_token_id: 2,
    hidden_act: layout === "clip" ? "quick_gelu" : "gelu",
    hidden_size: hidden,
    initializer_factor: 1,
    initializer_range: 0.02,
    intermediate_size: shapeOf(fc1.key)[0],
    layer_norm_eps: 1e-5,
    max_position_embeddings: maxPositions,
    model_type: "clip_text_model",
    num_attention_heads: hidden / 64,
    num_hidden_layers: layers,
    pad_token_id: 1,
    projection_dim: layout === "clip" ? 768 : 512,
    torch_dtype: "float32",
    vocab_size: vocab,
  };
}

function countLayers(keys: string[], pattern: RegExp): number {
  let n = 0;
  for (const key of keys) {
    const m = pattern.exec(key);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}
