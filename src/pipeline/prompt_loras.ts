// <lora:NAME:WEIGHT[:lbw=BLOCKS]> tags in generate() prompts (AUTOMATIC1111 and its LoRA Block
// Weight extension): for the call, exactly the tagged LoRAs are active at their weights, and a
// LoRA whose block weights differ from how it was loaded is re-applied from its file with the
// tag's. NAME is the adapter name of a LoRA already loaded (pipeline.loadLora: the file's name
// by default). Every prompt of one call must carry the same tags; the tags are cut from the text.
import { applyLoraFile, removeLora, setLoraScales, type LoraModels } from "../lora/adapters/apply.js";
import { parseLoraTags, type LoraTag } from "../lora/tools/prompt_tags.js";
import type { GenerateOptions } from "./options.js";

/** Where a loaded LoRA came from, so prompt tags can re-apply it with other block weights. */
export interface LoraSource {
  path: string;
  blockWeights?: string | number[];
}

export interface PromptLoraHost {
  models: LoraModels;
  /** Active adapters, name -> scale (the pipeline's `loras`). */
  loras: Record<string, number>;
  sources: Record<string, LoraSource>;
}

/** `options` with the tags cut, the adapters the call uses, and restore() for the active set before it. */
export async function applyPromptLoras(
  host: PromptLoraHost,
  options: GenerateOptions,
): Promise<{ options: GenerateOptions; loras?: Record<string, number>; restore(): Promise<void> }> {
  const prompts = Array.isArray(options.prompt) ? options.prompt : [options.prompt];
  const parsed = prompts.map((p) => parseLoraTags(typeof p === "string" ? p : String(p)));
  const key = (tags: LoraTag[]) => JSON.stringify(tags);
  if (parsed.every((p) => p.tags.length === 0)) return { options, restore: async () => {} };
  if (parsed.some((p) => key(p.tags) !== key(parsed[0]!.tags))) {
    throw new Error(
      "generate: every prompt of one call must carry the same <lora:...> tags; generate the others in separate calls",
    );
  }
  const tags = parsed[0]!.tags;
  const unknown = tags.filter((t) => !host.sources[t.name]);
  if (unknown.length) {
    const loaded = Object.keys(host.sources);
    throw new Error(
      `generate: the prompt names LoRA ${unknown.map((t) => `"${t.name}"`).join(", ")}, which is not loaded ` +
        `(loaded: ${loaded.length ? loaded.map((n) => `"${n}"`).join(", ") : "none"}); load it first with loadLora(path, { name })`,
    );
  }
  for (const tag of tags) await reapply(host, tag);
  const before = Object.entries(host.loras);
  const loras = Object.fromEntries(tags.map((t) => [t.name, t.scale]));
  await setLoraScales(host.models, Object.entries(loras));
  const stripped = parsed.map((p) => p.prompt);
  return {
    options: { ...options, prompt: Array.isArray(options.prompt) ? stripped : stripped[0]! },
    loras,
    restore: () => setLoraScales(host.models, before),
  };
}

/** Re-applies a loaded LoRA from its file when the tag asks for other block weights than it has. */
async function reapply(host: PromptLoraHost, tag: LoraTag): Promise<void> {
  const source = host.sources[tag.name]!;
  const current = source.blockWeights === undefined ? undefined : String(source.blockWeights);
  if (current === tag.blockWeights) return;
  await removeLora(host.models, tag.name);
  await applyLoraFile(host.models, source.path, {
    name: tag.name,
    scale: tag.scale,
    ...(tag.blockWeights !== undefined ? { blockWeights: tag.blockWeights } : {}),
  });
  source.blockWeights = tag.blockWeights;
}
