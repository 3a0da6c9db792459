// diffusers, PEFT and PEFT-adapter keys: old attention-processor names (to_q_lora),
// lora.down/up and lora_A/B (with an adapter name), DoRA's lora_magnitude_vector, and
// the component (unet / text_encoder) each module belongs to.
import type { Tensor } from "../../native/index.js";
import type { Halves, ModuleCollector } from "./collector.js";
import { componentOfModelClass, type PeftLoraConfig } from "./peft_config.js";
import type { LoraComponent, LoraFormat } from "./types.js";

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

export function collectDiffusers(
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
      problems.push(`"${fileKey}": ${unknownKeyHint(key)}`);
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
  warnings.push(...inferredComponents(unprefixed, format === "peft_adapter" && !adapterComponent));
  problems.push(...modules.duplicates);
}

/** Why a key that matched no diffusers/PEFT pattern is refused. */
function unknownKeyHint(key: string): string {
  return /dora_scale/.test(key)
    ? "dora_scale is a kohya key (PEFT keys hold DoRA as lora_magnitude_vector)"
    : /\.alpha$/.test(key)
      ? "per-module alpha tensors are not part of the diffusers/PEFT formats"
      : "unknown key";
}

/** The warnings for components that were guessed from module paths. */
function inferredComponents(unprefixed: number, unnamedAdapterBase: boolean): string[] {
  const out: string[] = [];
  if (unprefixed) {
    out.push(
      `${unprefixed} keys have no unet./text_encoder. prefix; their component was inferred from the module path`,
    );
  }
  if (unnamedAdapterBase) {
    out.push("adapter_config.json does not name its base model class; component inferred from the module paths");
  }
  return out;
}

const guessComponent = (path: string): LoraComponent => (path.startsWith("text_model.") ? "text_encoder" : "unet");
