// Where a LoRA path's weights are: the safetensors file a path names (a folder: the
// one it holds) and, for a PEFT adapter folder, its adapter_config.json. Pickled
// weights are refused with how to convert them.
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";

import { CONVERT_FILE, PICKLE, pickleFiles, pickleRefusal } from "../../io/pickle.js";

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
