// Loading any supported LoRA file (or PEFT folder) into LoraWeights. The format is
// detected from the keys and the folder; every key must be understood: anything
// that is not is listed in one error, never dropped.
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";

import { nonFiniteTensors } from "../../io/finite.js";
import { CONVERT_FILE, PICKLE, pickleFiles, pickleRefusal } from "../../io/pickle.js";
import { readSafetensors } from "../../io/safetensors.js";
import { readJsonFile } from "../../models/files.js";
import type { ProgressEvent, Tensor } from "../../native/index.js";
import { applyFoldedRecord } from "./fold_record.js";
import { SD_UNET_LAYOUT, SDXL_UNET_LAYOUT } from "../../models/ldm.js";
import { LycorisCollector, lycorisKey, lycorisNames, magnitudeFromDoraScale, magnitudeFromPeft } from "./lycoris.js";
import { kohyaResolver, type BaseModuleNames } from "./names.js";
import {
  componentOfModelClass,
  configAlpha,
  configRank,
  parseAdapterMetadata,
  parsePeftConfig,
  type PeftLoraConfig,
} from "./peft_config.js";
import {
  LoraFormatError,
  type LoraAdapter,
  type LoraComponent,
  type LoraFormat,
  type LoraWeights,
  type LycorisAdapter,
} from "./types.js";

export interface LoadLoraOptions {
  /** Module names of the base model: resolves kohya names exactly and checks every target exists. */
  baseModuleNames?: BaseModuleNames;
  /** The component of a PEFT adapter folder whose config does not name its base model class. */
  component?: LoraComponent;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

/** Reads a LoRA: a .safetensors file in any supported format, or a folder holding one (or a PEFT adapter). */
export async function loadLoraFile(path: string, options: LoadLoraOptions = {}): Promise<LoraWeights> {
  const { file, config } = locateLoraFile(path);
  const peftConfig = config ? readPeftConfig(config) : undefined;
  const contents = await readSafetensors(file);
  const adapters = new Map<string, LoraAdapter>();
  let lycoris = new Map<string, LycorisAdapter>();
  try {
    const problems: string[] = [];
    const warnings: string[] = [];
    const nonFinite = nonFiniteTensors(contents.tensors);
    if (nonFinite.length) {
      throw new LoraFormatError(
        file,
        nonFinite.map((n) => `"${n}" holds NaN or infinite values (the LoRA was saved from a diverged training run)`),
        "refusing a LoRA whose weights are not finite",
      );
    }
    const format: LoraFormat = peftConfig ? "peft_adapter" : detectFormat(file, [...contents.tensors.keys()]);
    const modules = new ModuleCollector();
    const lycorisModules = new LycorisCollector();
    if (format === "kohya") {
      await collectKohya(contents.tensors, contents.metadata, { modules, lycoris: lycorisModules }, problems, options);
    } else collectDiffusers(contents.tensors, format, modules, problems, warnings, options.component, peftConfig);
    if (problems.length) throw new LoraFormatError(file, problems, "cannot read this LoRA");

    const alphaSource = alphaRule(format, contents.metadata, peftConfig, file);
    const keysSorted = [...modules.entries.keys()].sort();
    for (const [i, key] of keysSorted.entries()) {
      options.signal?.throwIfAborted();
      const adapter = await modules.finish(key, alphaSource, problems);
      if (adapter) adapters.set(key, adapter);
      options.onProgress?.({ phase: "lora.load", step: i + 1, total: keysSorted.length });
    }
    lycoris = new Map([...lycorisModules.finish(problems)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    for (const key of lycoris.keys()) {
      if (adapters.has(key) || modules.entries.has(key)) problems.push(`module "${key}": mixes LoRA and LyCORIS keys`);
    }
    checkBaseModules(new Map<string, unknown>([...adapters, ...lycoris]), options.baseModuleNames, problems);
    if (problems.length) throw new LoraFormatError(file, problems, "cannot read this LoRA");
    if (format === "diffusers" || format === "peft") applyFoldedRecord(adapters, contents.metadata, warnings);
    return { format, adapters, ...(lycoris.size ? { lycoris } : {}), metadata: { ...contents.metadata }, warnings };
  } catch (error) {
    adapters.clear();
    lycoris.clear();
    throw error;
  } finally {
    // Alpha tensors (read into numbers) and, on failure, everything: free the file views now.
    const kept = new Set([
      ...[...adapters.values()].flatMap((a) => [a.down, a.up, ...(a.magnitude ? [a.magnitude] : [])]),
      ...[...lycoris.values()].flatMap((a) => Object.values(a.factors)),
    ]);
    for (const t of contents.tensors.values()) if (!kept.has(t)) t.dispose();
  }
}

// ---------------------------------------------------------------- files and folders

/** The safetensors file a LoRA path names (a folder: the one it holds), and a PEFT adapter's config. */
export function locateLoraFile(path: string): { file: string; config?: string } {
  if (!existsSync(path)) throw new Error(`${path}: no such file or folder`);
  if (statSync(path).isDirectory()) {
    const entries = readdirSync(path);
    if (entries.includes("adapter_config.json")) {
      if (entries.includes("adapter_model.safetensors")) {
        return { file: join(path, "adapter_model.safetensors"), config: join(path, "adapter_config.json") };
      }
      throw refusePickles(path, entries) ?? new Error(`${path}: adapter_config.json without adapter_model.safetensors`);
    }
    if (entries.includes("pytorch_lora_weights.safetensors"))
      return { file: join(path, "pytorch_lora_weights.safetensors") };
    const candidates = entries.filter((e) => e.endsWith(".safetensors"));
    if (candidates.length === 1) return { file: join(path, candidates[0]!) };
    if (candidates.length > 1) {
      throw new Error(`${path}: several .safetensors files (${candidates.join(", ")}); name the LoRA file itself`);
    }
    throw refusePickles(path, entries) ?? new Error(`${path}: no LoRA .safetensors file in this folder`);
  }
  if (PICKLE.test(path)) throw refusePickles(dirname(path), [basename(path)])!;
  const sibling = join(dirname(path), "adapter_config.json");
  if (basename(path) === "adapter_model.safetensors" && existsSync(sibling)) return { file: path, config: sibling };
  return { file: path };
}

function refusePickles(dir: string, entries: string[]): Error | undefined {
  const pickles = pickleFiles(entries);
  if (!pickles.length) return undefined;
  return new Error(
    pickleRefusal(
      `${dir}: only pickled LoRA weights (${pickles.join(", ")})`,
      `Convert once with Python: ${CONVERT_FILE}.`,
    ),
  );
}

function readPeftConfig(path: string): PeftLoraConfig {
  const config = parsePeftConfig(readJsonFile(path), path);
  return config;
}

// ---------------------------------------------------------------- detection

type KeyStyle = "kohya" | "diffusers" | "peft" | "peft_adapter";

function styleOf(key: string): KeyStyle | undefined {
  if (/^lora_(unet|te[12]?)_/.test(key)) return "kohya";
  if (key.startsWith("base_model.model.")) return "peft_adapter";
  if (/\.(lora|lora_linear_layer)\.(down|up)\.weight$/.test(key) || /_lora\.(down|up)\.weight$/.test(key)) {
    return "diffusers";
  }
  if (/\.lora_[AB](\.[^.]+)?\.weight$/.test(key)) return "peft";
  return undefined;
}

function detectFormat(file: string, keys: string[]): LoraFormat {
  const styles = new Set(keys.map(styleOf).filter((s): s is KeyStyle => s !== undefined));
  if (styles.size === 0) {
    const hint = keys.some((k) => /\.(hada_w1_a|lokr_w1|lokr_w1_a)$/.test(k))
      ? "LyCORIS LoHa/LoKr files are not supported"
      : keys.some((k) => /^(transformer|lora_transformer)[._]/.test(k))
        ? "this looks like a LoRA for a transformer model (SD3/Flux), not a Stable Diffusion UNet"
        : `no LoRA keys found (first keys: ${keys.slice(0, 3).join(", ") || "none"})`;
    throw new LoraFormatError(file, [hint], "not a LoRA file sdtune can read");
  }
  if (styles.has("kohya") && styles.size > 1) {
    throw new LoraFormatError(file, [
      `mixes kohya keys with ${[...styles].filter((s) => s !== "kohya").join("/")} keys`,
    ]);
  }
  if (styles.has("kohya")) return "kohya";
  if (styles.has("peft_adapter")) {
    throw new LoraFormatError(file, [
      "keys start with base_model.model. (a PEFT adapter): load the folder that holds adapter_config.json, " +
        "which gives lora_alpha",
    ]);
  }
  // diffusers 0.27 writes attention modules in its own keys and everything else in PEFT keys.
  if (styles.has("diffusers")) return "diffusers";
  return "peft";
}

// ---------------------------------------------------------------- collecting halves

interface Halves {
  down?: { tensor: Tensor; key: string };
  /** DoRA's dora_scale. */
  magnitude?: { tensor: Tensor; key: string };
  up?: { tensor: Tensor; key: string };
  alpha?: { tensor: Tensor; key: string };
  /** The key the missing half should have, for error messages. */
  twin: { down: string; up: string };
}

type AlphaRule = (key: string, path: string, rank: number) => number | undefined;

class ModuleCollector {
  readonly entries = new Map<string, Halves>();
  readonly duplicates: string[] = [];

  add(
    module: string,
    part: "down" | "up" | "alpha" | "magnitude",
    tensor: Tensor,
    fileKey: string,
    twin: Halves["twin"],
  ): void {
    const entry = this.entries.get(module) ?? { twin };
    const existing = entry[part];
    if (existing) this.duplicates.push(`module "${module}" appears twice: "${existing.key}" and "${fileKey}"`);
    entry[part] = { tensor, key: fileKey };
    this.entries.set(module, entry);
  }

  async finish(key: string, alphaRule: AlphaRule, problems: string[]): Promise<LoraAdapter | undefined> {
    const h = this.entries.get(key)!;
    if (!h.down || !h.up) {
      const present = h.down ?? h.up ?? h.alpha;
      const missing = !h.down && !h.up ? "both halves" : !h.down ? `"${h.twin.down}"` : `"${h.twin.up}"`;
      problems.push(`module "${key}": has "${present!.key}" but ${missing} ${!h.down && !h.up ? "are" : "is"} missing`);
      return undefined;
    }
    const rank = checkShapes(key, h.down, h.up, problems);
    if (rank === undefined) return undefined;
    const path = key.slice(key.indexOf(".") + 1);
    let alpha = alphaRule(key, path, rank);
    if (h.alpha) {
      const value = await readScalar(h.alpha.tensor, h.alpha.key, problems);
      if (value === undefined) return undefined;
      // sd-scripts: a missing or zero alpha means alpha = rank (scale 1).
      alpha = value === 0 ? rank : value;
    }
    const adapter: LoraAdapter = { down: h.down.tensor, up: h.up.tensor, alpha: alpha ?? rank, rank };
    if (h.magnitude) {
      const { key: mKey, tensor } = h.magnitude;
      const out = h.up.tensor.shape[0]!;
      const magnitude = mKey.endsWith(".dora_scale")
        ? magnitudeFromDoraScale(mKey, tensor, out, problems)
        : magnitudeFromPeft(mKey, tensor, out, problems);
      if (!magnitude) return undefined;
      adapter.magnitude = magnitude;
    }
    return adapter;
  }
}

function checkShapes(
  key: string,
  down: { tensor: Tensor; key: string },
  up: { tensor: Tensor; key: string },
  problems: string[],
): number | undefined {
  const d = down.tensor.shape;
  const u = up.tensor.shape;
  const fmt = (s: number[]) => `[${s.join(", ")}]`;
  const before = problems.length;
  for (const half of [down, up]) {
    if (!/^(float32|float16|bfloat16|float64)$/.test(half.tensor.dtype)) {
      problems.push(`"${half.key}": dtype ${half.tensor.dtype} is not a floating type`);
    }
  }
  if (d.length !== 2 && d.length !== 4)
    problems.push(`"${down.key}": shape ${fmt(d)} is not [rank, in] or [rank, in, kh, kw]`);
  if (u.length !== 2 && u.length !== 4)
    problems.push(`"${up.key}": shape ${fmt(u)} is not [out, rank] or [out, rank, 1, 1]`);
  if (problems.length > before) return undefined;
  if (d.length !== u.length) {
    problems.push(`module "${key}": "${down.key}" ${fmt(d)} and "${up.key}" ${fmt(u)} disagree on Linear vs Conv2d`);
  } else if (u.length === 4 && (u[2] !== 1 || u[3] !== 1)) {
    problems.push(`"${up.key}": shape ${fmt(u)}: a Conv2d LoRA's up must be [out, rank, 1, 1]`);
  } else if (d[0] !== u[1]) {
    problems.push(
      `module "${key}": rank mismatch: "${down.key}" is ${fmt(d)} (rank ${d[0]}) but "${up.key}" is ${fmt(u)} (rank ${u[1]})`,
    );
  } else if (d[0] === 0) {
    problems.push(`module "${key}": rank 0`);
  }
  return problems.length > before ? undefined : d[0];
}

async function readScalar(t: Tensor, key: string, problems: string[]): Promise<number | undefined> {
  if (t.numel !== 1) {
    problems.push(`"${key}": alpha must hold one number, but has shape [${t.shape.join(", ")}]`);
    return undefined;
  }
  const asDouble = t.dtype === "float64" ? t : await t.to({ dtype: "float64" });
  const value = (asDouble.toTypedArray() as Float64Array)[0]!;
  if (asDouble !== t) asDouble.dispose();
  if (!Number.isFinite(value) || value < 0) {
    problems.push(`"${key}": alpha ${value} is not a finite non-negative number`);
    return undefined;
  }
  return value;
}

// ---------------------------------------------------------------- kohya

const KOHYA_KEY = /^([^.]+)\.(lora_down\.weight|lora_up\.weight|alpha)$/;
const UNSUPPORTED_SUFFIX: [RegExp, string][] = [
  [/\.lora_mid\.weight$/, "LoCon/Tucker (lora_mid) is not supported"],
  [/\.(hada_t[12]|lokr_t[12])$/, "Tucker-decomposed LoHa/LoKr (use_tucker) is not supported"],
  [/\.(hada_|lokr_)/, "unknown LoHa/LoKr tensor"],
];
const DORA_KEY = /^([^.]+)\.dora_scale$/;

async function collectKohya(
  tensors: Map<string, Tensor>,
  metadata: Record<string, string>,
  into: { modules: ModuleCollector; lycoris: LycorisCollector },
  problems: string[],
  options: LoadLoraOptions,
): Promise<void> {
  const { modules, lycoris } = into;
  const factored = lycorisNames(tensors.keys());
  const sdxl =
    [...tensors.keys()].some((k) => k.startsWith("lora_te2_")) ||
    (metadata.ss_base_model_version ?? "").startsWith("sdxl");
  const resolver = kohyaResolver(options.baseModuleNames, sdxl ? SDXL_UNET_LAYOUT : SD_UNET_LAYOUT);
  const resolved = new Map<string, string | undefined>();
  for (const [fileKey, tensor] of tensors) {
    const ly = lycorisKey(fileKey);
    const dora = DORA_KEY.exec(fileKey);
    const m = ly || dora ? ([fileKey, (ly?.name ?? dora![1])!, "lycoris"] as const) : KOHYA_KEY.exec(fileKey);
    if (!m) {
      const known = UNSUPPORTED_SUFFIX.find(([re]) => re.test(fileKey));
      problems.push(
        `"${fileKey}": ${known ? known[1] : "unknown key (expected <name>.lora_down.weight, .lora_up.weight or .alpha)"}`,
      );
      continue;
    }
    const [, name, suffix] = m as unknown as [string, string, string];
    if (!resolved.has(name)) {
      const r = resolver.resolve(name);
      if ("error" in r) problems.push(r.error);
      resolved.set(name, "key" in r ? r.key : undefined);
    }
    const module = resolved.get(name);
    if (!module) continue;
    if (ly) {
      lycoris.add(module, name, ly.factor, tensor, problems);
      continue;
    }
    if (dora) {
      modules.add(module, "magnitude", tensor, fileKey, {
        down: `${name}.lora_down.weight`,
        up: `${name}.lora_up.weight`,
      });
      continue;
    }
    if (suffix === "alpha" && factored.has(name)) {
      const value = await readScalar(tensor, fileKey, problems);
      if (value !== undefined) lycoris.setAlpha(module, name, value);
      continue;
    }
    const part = suffix === "alpha" ? "alpha" : suffix.startsWith("lora_down") ? "down" : "up";
    modules.add(module, part, tensor, fileKey, {
      down: `${name}.lora_down.weight`,
      up: `${name}.lora_up.weight`,
    });
  }
  problems.push(...modules.duplicates);
}

// ---------------------------------------------------------------- diffusers / peft / peft adapter

interface ParsedKey {
  prefix: string; // "unet", "text_encoder", ... or "" when the key has none
  path: string; // module path inside the component
  part: "down" | "up";
  twin: Halves["twin"];
}

// Old diffusers attention-processor names (LoRAAttnProcessor): to_q_lora etc.
const OLD_UNET = { to_q: "to_q", to_k: "to_k", to_v: "to_v", to_out: "to_out.0" } as const;
const OLD_TEXT = { to_q: "q_proj", to_k: "k_proj", to_v: "v_proj", to_out: "out_proj" } as const;

function parseDiffusersKey(key: string, adapterNames: Set<string>): ParsedKey | undefined {
  const split = (full: string) => {
    const dot = full.indexOf(".");
    const head = dot < 0 ? full : full.slice(0, dot);
    return ["unet", "text_encoder", "text_encoder_2"].includes(head)
      ? { prefix: head, path: full.slice(dot + 1) }
      : { prefix: "", path: full };
  };
  let m = /^(.*)\.(lora|lora_linear_layer)\.(down|up)\.weight$/.exec(key);
  if (m) {
    const [, module, mid, part] = m as unknown as [string, string, string, "down" | "up"];
    const twin = { down: `${module}.${mid}.down.weight`, up: `${module}.${mid}.up.weight` };
    return { ...split(module), part, twin };
  }
  m = /^(.*?)(\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(key);
  if (m) {
    const [, parent, processor, which, part] = m as unknown as [
      string,
      string,
      string,
      keyof typeof OLD_UNET,
      "down" | "up",
    ];
    const { prefix, path } = split(parent);
    const leaf = (prefix.startsWith("text_encoder") || path.startsWith("text_model") ? OLD_TEXT : OLD_UNET)[which];
    const stem = `${parent}${processor ?? ""}.${which}_lora`;
    return { prefix, path: `${path}.${leaf}`, part, twin: { down: `${stem}.down.weight`, up: `${stem}.up.weight` } };
  }
  m = /^(.*)\.lora_([AB])(?:\.([^.]+))?\.weight$/.exec(key);
  if (m) {
    const [, module, ab, adapter] = m as unknown as [string, string, "A" | "B", string | undefined];
    if (adapter) adapterNames.add(adapter);
    const mid = adapter ? `.${adapter}` : "";
    const twin = { down: `${module}.lora_A${mid}.weight`, up: `${module}.lora_B${mid}.weight` };
    return { ...split(module), part: ab === "A" ? "down" : "up", twin };
  }
  return undefined;
}

function collectDiffusers(
  tensors: Map<string, Tensor>,
  format: LoraFormat,
  modules: ModuleCollector,
  problems: string[],
  warnings: string[],
  componentOption: LoraComponent | undefined,
  peftConfig: PeftLoraConfig | undefined,
): void {
  const adapterNames = new Set<string>();
  let unprefixed = 0;
  const adapterComponent = componentOption ?? componentOfModelClass(peftConfig?.baseModelClass);
  for (const [fileKey, tensor] of tensors) {
    let key = fileKey;
    if (format === "peft_adapter") {
      if (!key.startsWith("base_model.model.")) {
        problems.push(`"${fileKey}": a PEFT adapter key must start with base_model.model.`);
        continue;
      }
      key = key.slice("base_model.model.".length);
    }
    // DoRA: peft's magnitude ("<module>.lora_magnitude_vector.weight"; older peft: no ".weight").
    const magnitude = /^(.*)\.lora_magnitude_vector(?:\.weight)?$/.exec(key);
    const parsed = parseDiffusersKey(magnitude ? `${magnitude[1]}.lora_A.weight` : key, adapterNames);
    if (!parsed) {
      const hint = /dora_scale/.test(key)
        ? "dora_scale is a kohya key (PEFT keys hold DoRA as lora_magnitude_vector)"
        : /\.alpha$/.test(key)
          ? "per-module alpha tensors are not part of the diffusers/PEFT formats"
          : "unknown key";
      problems.push(`"${fileKey}": ${hint}`);
      continue;
    }
    let component = parsed.prefix as LoraComponent | "";
    if (format === "peft_adapter") {
      if (component) {
        problems.push(`"${fileKey}": unexpected component prefix inside a PEFT adapter`);
        continue;
      }
      component = adapterComponent ?? guessComponent(parsed.path);
    } else if (!component) {
      component = guessComponent(parsed.path);
      unprefixed++;
    }
    const stem = format === "peft_adapter" ? "base_model.model." : "";
    modules.add(`${component}.${parsed.path}`, magnitude ? "magnitude" : parsed.part, tensor, fileKey, {
      down: stem + parsed.twin.down,
      up: stem + parsed.twin.up,
    });
  }
  if (adapterNames.size > 1) problems.push(`keys of several PEFT adapters (${[...adapterNames].join(", ")}): keep one`);
  if (unprefixed) {
    warnings.push(
      `${unprefixed} keys have no unet./text_encoder. prefix; their component was inferred from the module path`,
    );
  }
  if (format === "peft_adapter" && !adapterComponent) {
    warnings.push("adapter_config.json does not name its base model class; component inferred from the module paths");
  }
  problems.push(...modules.duplicates);
}

const guessComponent = (path: string): LoraComponent => (path.startsWith("text_model.") ? "text_encoder" : "unet");

// ---------------------------------------------------------------- alpha

/** How a module's alpha is found when the file has no alpha tensor for it. */
function alphaRule(
  format: LoraFormat,
  metadata: Record<string, string>,
  peftConfig: PeftLoraConfig | undefined,
  file: string,
): AlphaRule {
  let configs: Map<LoraComponent | "*", PeftLoraConfig> | undefined;
  if (peftConfig) configs = new Map([["*", peftConfig]]);
  else if ((format === "peft" || format === "diffusers") && metadata.lora_adapter_metadata) {
    configs = parseAdapterMetadata(metadata.lora_adapter_metadata, file);
  }
  return (key, path, rank) => {
    if (!configs) return undefined; // kohya without .alpha, diffusers 0.27: alpha = rank
    const component = key.slice(0, key.indexOf(".")) as LoraComponent;
    const config = configs.get(component) ?? configs.get("*");
    if (!config) return undefined;
    const expected = configRank(config, path);
    if (expected !== rank) {
      throw new LoraFormatError(file, [
        `module "${key}": the adapter config gives rank ${expected} but the tensors have rank ${rank}`,
      ]);
    }
    return configAlpha(config, path, rank);
  };
}

// ---------------------------------------------------------------- base model check

function checkBaseModules(adapters: Map<string, unknown>, base: BaseModuleNames | undefined, problems: string[]): void {
  if (!base) return;
  const sets = new Map<string, Set<string>>();
  for (const key of adapters.keys()) {
    const component = key.slice(0, key.indexOf(".")) as LoraComponent;
    const names = base[component];
    if (!names) continue;
    let set = sets.get(component);
    if (!set) sets.set(component, (set = new Set([...names].map((n) => n.replace(/\.(weight|bias)$/, "")))));
    const path = key.slice(component.length + 1);
    if (!set.has(path)) problems.push(`module "${key}": the base model's ${component} has no module "${path}"`);
  }
}
