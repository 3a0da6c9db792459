// Loading any supported LoRA file (or PEFT folder) into LoraWeights. The format is
// detected from the keys and the folder; every key must be understood: anything
// that is not is listed in one error, never dropped. The readers live beside it:
// locate.ts (files and folders), detect.ts (format), kohya_keys.ts and
// diffusers_keys.ts (per-format keys), collector.ts (halves into adapters).
import { nonFiniteTensors } from "../../io/finite.js";
import { readSafetensors } from "../../io/safetensors.js";
import { readJsonFile } from "../../models/files.js";
import type { ProgressEvent } from "../../native/index.js";
import { ModuleCollector, type AlphaRule } from "./collector.js";
import { detectFormat } from "./detect.js";
import { collectDiffusers } from "./diffusers_keys.js";
import { applyFoldedRecord } from "./fold_record.js";
import { collectKohya } from "./kohya_keys.js";
import { locateLoraFile } from "./locate.js";
import { LycorisCollector } from "./lycoris.js";
import type { BaseModuleNames } from "./names.js";
import { configAlpha, configRank, parseAdapterMetadata, parsePeftConfig, type PeftLoraConfig } from "./peft_config.js";
import {
  LoraFormatError,
  type LoraAdapter,
  type LoraComponent,
  type LoraFormat,
  type LoraWeights,
  type LycorisAdapter,
} from "./types.js";

export { locateLoraFile } from "./locate.js";

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
      const into = { modules, lycoris: lycorisModules };
      await collectKohya(contents.tensors, contents.metadata, into, problems, options.baseModuleNames);
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

function readPeftConfig(path: string): PeftLoraConfig {
  const config = parsePeftConfig(readJsonFile(path), path);
  return config;
}

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
