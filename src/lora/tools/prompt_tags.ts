// AUTOMATIC1111's LoRA prompt tags: <lora:NAME>, <lora:NAME:WEIGHT>, and the LoRA Block Weight
// extension's <lora:NAME:WEIGHT:lbw=BLOCKS> (or <lora:NAME:WEIGHT:PRESET>): BLOCKS is a preset
// name or 17 / 26 values (block_weights.ts). The tags are cut from the prompt text.
import { parseBlockWeights } from "./block_weights.js";

export interface LoraTag {
  name: string;
  scale: number;
  /** As written after lbw= (or the bare third field), checked by parseBlockWeights. */
  blockWeights?: string;
}

const TAG = /<lora:([^:>]+)(?::([^:>]*))?(?::([^>]*))?>/g;

/** The prompt without its <lora:...> tags, and the tags in order. */
export function parseLoraTags(prompt: string): { prompt: string; tags: LoraTag[] } {
  const tags: LoraTag[] = [];
  const text = prompt.replace(TAG, (whole, name: string, weight?: string, rest?: string) => {
    const scale = weight === undefined || weight.trim() === "" ? 1 : Number(weight);
    if (!Number.isFinite(scale)) throw new RangeError(`prompt tag ${whole}: the weight "${weight}" is not a number`);
    const tag: LoraTag = { name: name.trim(), scale };
    if (rest !== undefined && rest.trim() !== "") {
      // Extra fields are ":"-separated in the extension; lbw= (or a bare preset) is the one read here.
      const fields = rest.split(":").map((f) => f.trim());
      const lbw = fields.find((f) => f.startsWith("lbw=") || f.startsWith("LBW="));
      const spec = lbw ? lbw.slice(4) : fields.length === 1 && !fields[0]!.includes("=") ? fields[0]! : undefined;
      if (spec === undefined) throw new RangeError(`prompt tag ${whole}: expected lbw=BLOCKS after the weight`);
      try {
        parseBlockWeights(spec);
      } catch (error) {
        throw new RangeError(`prompt tag ${whole}: ${(error as Error).message}`);
      }
      tag.blockWeights = spec;
    }
    tags.push(tag);
    return "";
  });
  return { prompt: text.replace(/\s{2,}/g, " ").trim(), tags };
}
