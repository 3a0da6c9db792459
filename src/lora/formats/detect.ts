// Which LoRA format a file's keys are in (kohya, diffusers, PEFT), with a clear
// refusal for keys of formats sdtune does not read.
import { LoraFormatError, type LoraFormat } from "./types.js";

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

export function detectFormat(file: string, keys: string[]): LoraFormat {
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
