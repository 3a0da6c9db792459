// Writing LoraWeights as kohya, diffusers or PEFT-key safetensors (atomically).
//
// Alpha and the formats without one. diffusers 0.27 and PEFT-key files carry no
// alpha: their loaders use alpha = rank (factor 1). A module with alpha != rank is
// therefore written with alpha / rank folded into `up` (one PyTorch-rounded
// multiply, exactly what `up * (alpha / rank)` gives in Python), and the alpha it
// had is recorded in the metadata entry "sdtune_folded_alphas". Loaders other
// than sdtune ignore that entry and see a correct factor-1 LoRA.
//
// Round trips are bit-exact:
// - Writing never changes a tensor whose factor is 1, so any chain that only
//   renames (diffusers <-> peft <-> kohya of a factor-1 LoRA, e.g. diffusers ->
//   kohya -> diffusers) returns every tensor bit for bit.
// - kohya -> diffusers/peft -> kohya: down is untouched and alpha comes back from
//   the record. up is unfolded by loraFiles.unfold. When alpha / rank is a power of
//   two the fold is exact and so is its inverse. For other factors (the fixture's
//   text encoder: 6 / 4 = 1.5) a float multiply is not injective -- two
//   neighbouring floats can fold to the same value, ~10-15% of elements at 1.5 --
//   so no division can recover the original alone. The record then also carries,
//   per module, the int8 difference between the original bit pattern and the
//   unfolded one (deflated: almost all zeros) and a fingerprint of the folded up
//   it belongs to; with it the unfold is exact. If the up weights were changed
//   since (fingerprint mismatch), alpha is still restored and up is unfolded to
//   the nearest preimage (within one ulp), with a warning.
import { existsSync, statSync } from "node:fs";
import { extname, join } from "node:path";

import { assertFinite } from "../../io/finite.js";
import { writeSafetensors } from "../../io/safetensors.js";
import { native, type ProgressEvent, type Tensor } from "../../native/index.js";
import { tensorFrom } from "../../tensor.js";
import { diffusersToLdm, SD_UNET_LAYOUT, SDXL_UNET_LAYOUT, type UnetLayout } from "../../models/ldm.js";
import { FOLDED_ALPHAS_KEY, foldedEntry, type FoldedEntry } from "./fold_record.js";
import { kohyaHashes, pyFloat } from "./kohya_metadata.js";
import { doraScaleEntry, lycorisEntries, lycorisNetworkMetadata, peftMagnitudeEntry } from "./lycoris.js";
import { toKohyaName, underscored } from "./names.js";
import { LoraFormatError, moduleCount, splitAdapterKey, type LoraAdapter, type LoraWeights } from "./types.js";

export type LoraSaveFormat = "kohya" | "diffusers" | "peft";

export interface SaveLoraOptions {
  format: LoraSaveFormat;
  /** Merged over the weights' own metadata (caller wins), except the entries that describe the tensors. */
  metadata?: Record<string, string>;
  /**
   * Kohya UNet names: "diffusers" (lora_unet_down_blocks_0_..., what sd-scripts writes for SD 1.x/2.x)
   * or "ldm" (lora_unet_input_blocks_1_1_..., what it writes for SDXL). Default: "ldm" when the LoRA
   * has a text_encoder_2 (SDXL), else "diffusers".
   */
  kohyaNaming?: "diffusers" | "ldm";
  /** The UNet layout for "ldm" names (default: SDXL's with a text_encoder_2, else SD 1.x/2.x). */
  unetLayout?: UnetLayout;
  /**
   * kohya: the file stem when `path` is a folder (default "lora"). diffusers / peft write
   * pytorch_lora_weights.safetensors into a folder, as diffusers does.
   */
  name?: string;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface SaveLoraResult {
  /** The file written (a folder argument gets pytorch_lora_weights.safetensors inside it). */
  path: string;
  format: LoraSaveFormat;
  modules: number;
  /** Modules whose alpha / rank was folded into up (diffusers / peft). */
  folded: number;
  /** Modules whose recorded alpha was restored and up unfolded (kohya). */
  unfolded: number;
  /**
   * Elements of unfolded up tensors with no exact preimage (their up was not made by folding
   * with the recorded alpha); 0 for files sdtune wrote.
   */
  inexact: number;
}

/** Entries that describe a particular file's tensors: recomputed or dropped on every save. */
const DERIVED_KEYS = ["format", "lora_adapter_metadata", FOLDED_ALPHAS_KEY, "sshs_model_hash", "sshs_legacy_hash"];
const KOHYA_DERIVED_KEYS = ["ss_network_dim", "ss_network_alpha"];

export async function saveLora(path: string, weights: LoraWeights, options: SaveLoraOptions): Promise<SaveLoraResult> {
  if (!["kohya", "diffusers", "peft"].includes(options.format)) {
    throw new TypeError(
      `saveLora: format must be "kohya", "diffusers" or "peft" (got ${JSON.stringify(options.format)})`,
    );
  }
  if (moduleCount(weights) === 0) throw new Error("saveLora: the LoRA has no modules");
  if (options.format !== "kohya") refuseTyped(weights, options.format);
  const target = targetFile(path, options);
  const metadata: Record<string, string> = { ...weights.metadata, ...options.metadata };
  for (const key of [...DERIVED_KEYS, ...KOHYA_DERIVED_KEYS]) delete metadata[key];

  const result: SaveLoraResult = {
    path: target,
    format: options.format,
    modules: 0,
    folded: 0,
    unfolded: 0,
    inexact: 0,
  };
  const entries: [string, Tensor][] = [];
  const created: Tensor[] = [];
  try {
    if (options.format === "kohya") {
      const written = await kohyaEntries(weights, options, entries, created, result);
      Object.assign(metadata, kohyaNetworkMetadata(metadata, written), lycorisNetworkMetadata(weights, metadata));
      Object.assign(metadata, kohyaHashes(entries, metadata));
    } else {
      const record = await diffusersEntries(weights, options, entries, created, result);
      metadata.format = "pt";
      if (Object.keys(record).length) metadata[FOLDED_ALPHAS_KEY] = JSON.stringify(record);
    }
    assertFinite(entries, `${target}: the LoRA's weights`, "the LoRA was not saved");
    await writeSafetensors(target, entries, metadata);
  } finally {
    for (const t of created) t.dispose();
  }
  return result;
}

/**
 * The file a save writes: `path` itself when it names a .safetensors file; otherwise `path` is a
 * folder (existing, ending in a slash, or a name without extension) and the file goes inside it,
 * so no save leaves an extensionless file a loader would not recognise.
 */
export function targetFile(path: string, options: Pick<SaveLoraOptions, "format" | "name">): string {
  const folder = /[/\\]$/.test(path) || (existsSync(path) && statSync(path).isDirectory()) || extname(path) === "";
  if (!folder) return path;
  if (options.format !== "kohya") return join(path, "pytorch_lora_weights.safetensors");
  return join(path, `${options.name ?? "lora"}.safetensors`);
}

function progress(options: SaveLoraOptions, step: number, total: number): void {
  options.signal?.throwIfAborted();
  options.onProgress?.({ phase: "lora.save", step, total });
}

// ---------------------------------------------------------------- kohya

async function kohyaEntries(
  weights: LoraWeights,
  options: SaveLoraOptions,
  entries: [string, Tensor][],
  created: Tensor[],
  result: SaveLoraResult,
): Promise<{ rank: number; alpha: number }[]> {
  const written: { rank: number; alpha: number }[] = [];
  const sdxl =
    [...weights.adapters.keys()].some((k) => k.startsWith("text_encoder_2.")) ||
    (weights.metadata.ss_base_model_version ?? "").startsWith("sdxl");
  const naming = options.kohyaNaming ?? (sdxl ? "ldm" : "diffusers");
  const layout = options.unetLayout ?? (sdxl ? SDXL_UNET_LAYOUT : SD_UNET_LAYOUT);
  const problems: string[] = [];
  const kohyaName = (key: string): string | undefined => {
    const { component, path } = splitAdapterKey(key);
    if (component !== "unet" || naming !== "ldm") return toKohyaName(key, { numberedTextEncoders: sdxl });
    const ldm = diffusersToLdm(underscored(path), layout);
    if (!ldm) problems.push(`module "${key}" has no LDM name in this UNet layout`);
    return ldm ? `lora_unet_${ldm}` : undefined;
  };
  let step = 0;
  const total = moduleCount(weights);
  for (const [key, adapter] of weights.lycoris ?? []) {
    progress(options, step++, total);
    const name = kohyaName(key);
    if (!name) continue;
    entries.push(...lycorisEntries(name, adapter, created));
    written.push({ rank: adapter.rank, alpha: adapter.alpha });
    result.modules++;
  }
  for (const [key, adapter] of weights.adapters) {
    progress(options, step++, total);
    const name = kohyaName(key);
    if (!name) continue;
    let { up, alpha } = adapter;
    if (
      adapter.originalAlpha !== undefined &&
      adapter.alpha === adapter.rank &&
      adapter.originalAlpha !== adapter.rank
    ) {
      const factor = adapter.originalAlpha / adapter.rank;
      const unfolded = await native().loraFiles.unfold(adapter.up, factor, adapter.foldResidual);
      created.push(unfolded.tensor);
      up = unfolded.tensor;
      alpha = adapter.originalAlpha;
      result.unfolded++;
      result.inexact += unfolded.inexact;
    }
    const alphaTensor = tensorFrom(new Float32Array([alpha]), []);
    created.push(alphaTensor);
    entries.push(
      [`${name}.lora_down.weight`, adapter.down],
      [`${name}.lora_up.weight`, up],
      [`${name}.alpha`, alphaTensor],
    );
    if (adapter.magnitude) {
      const entry = doraScaleEntry(name, adapter.magnitude, adapter.down.shape.length === 4);
      created.push(entry[1]);
      entries.push(entry);
    }
    written.push({ rank: adapter.rank, alpha });
    result.modules++;
  }
  if (problems.length) throw new LoraFormatError("saveLora", problems, "cannot name these modules for kohya");
  const names = new Set<string>();
  for (const [name] of entries) {
    if (names.has(name)) throw new Error(`saveLora: two modules share the kohya key "${name}"`);
    names.add(name);
  }
  return written;
}

/** ss_network_* entries as sd-scripts writes them ("Dynamic" when modules differ, as resize_lora does). */
function kohyaNetworkMetadata(
  metadata: Record<string, string>,
  written: { rank: number; alpha: number }[],
): Record<string, string> {
  const ranks = new Set(written.map((w) => w.rank));
  const alphas = new Set(written.map((w) => w.alpha));
  const one = (set: Set<number>, format: (x: number) => string) => (set.size === 1 ? format([...set][0]!) : "Dynamic");
  return {
    ss_network_module: metadata.ss_network_module ?? "networks.lora",
    ss_network_dim: one(ranks, String),
    // sd-scripts stores str(float(network_alpha)): "8.0", "0.5".
    ss_network_alpha: one(alphas, pyFloat),
  };
}

// ---------------------------------------------------------------- diffusers / peft

/** LoHa / LoKr modules have no diffusers / PEFT-key form here: say so instead of dropping them. */
function refuseTyped(weights: LoraWeights, format: LoraSaveFormat): void {
  const lycoris = [...(weights.lycoris ?? [])];
  if (!lycoris.length) return;
  const [key, adapter] = lycoris[0]!;
  throw new LoraFormatError(
    "saveLora",
    [`module "${key}" is ${adapter.type === "loha" ? "LoHa" : "LoKr"} (and ${lycoris.length - 1} more such modules)`],
    `${format} files hold LoRA and DoRA only: save LoHa and LoKr as "kohya" (the LyCORIS layout A1111 and ComfyUI read)`,
  );
}

async function diffusersEntries(
  weights: LoraWeights,
  options: SaveLoraOptions,
  entries: [string, Tensor][],
  created: Tensor[],
  result: SaveLoraResult,
): Promise<Record<string, FoldedEntry>> {
  const record: Record<string, FoldedEntry> = {};
  let step = 0;
  for (const [key, adapter] of weights.adapters) {
    progress(options, step++, weights.adapters.size);
    const up = await foldedUp(key, adapter, record, created, result);
    const [downKey, upKey] = diffusersKeys(key, options.format === "diffusers");
    entries.push([downKey, adapter.down], [upKey, up]);
    if (adapter.magnitude) {
      const entry = peftMagnitudeEntry(key, adapter.magnitude, adapter.down.shape.length === 4);
      created.push(entry[1]);
      entries.push(entry);
    }
    result.modules++;
  }
  return record;
}

async function foldedUp(
  key: string,
  adapter: LoraAdapter,
  record: Record<string, FoldedEntry>,
  created: Tensor[],
  result: SaveLoraResult,
): Promise<Tensor> {
  if (adapter.alpha === adapter.rank) {
    if (adapter.originalAlpha !== undefined)
      record[key] = foldedEntry(adapter.originalAlpha, adapter.up, adapter.foldResidual);
    return adapter.up;
  }
  const { folded, residual, nonzero } = await native().loraFiles.foldExact(adapter.up, adapter.alpha / adapter.rank);
  created.push(folded, residual);
  record[key] = foldedEntry(adapter.alpha, folded, nonzero ? residual : undefined);
  result.folded++;
  return folded;
}

/**
 * Keys as diffusers 0.27 writes them: its convert_state_dict_to_diffusers renames
 * only the attention projections (UNet to_q/to_k/to_v/to_out.0 -> .lora.down/up,
 * text encoder q/k/v/out_proj -> .lora_linear_layer.down/up); every other module
 * keeps PEFT's lora_A / lora_B. With `diffusersNames` false: PEFT keys throughout.
 */
export function diffusersKeys(key: string, diffusersNames: boolean): [string, string] {
  const { component, path } = splitAdapterKey(key);
  if (diffusersNames) {
    if (component === "unet" && /(^|\.)(to_q|to_k|to_v|to_out\.0)$/.test(path)) {
      return [`${key}.lora.down.weight`, `${key}.lora.up.weight`];
    }
    if (component !== "unet" && /(^|\.)(q_proj|k_proj|v_proj|out_proj)$/.test(path)) {
      return [`${key}.lora_linear_layer.down.weight`, `${key}.lora_linear_layer.up.weight`];
    }
  }
  return [`${key}.lora_A.weight`, `${key}.lora_B.weight`];
}
