// Finding a component's weight files in a diffusers / transformers folder:
// safetensors only (optionally a variant such as fp16, optionally sharded), with
// a clear refusal of pickled checkpoints.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";

export interface WeightFileOptions {
  /** e.g. "fp16": prefer diffusion_pytorch_model.fp16.safetensors. */
  variant?: string;
}

const PICKLE = /\.(bin|ckpt|pt|pth|pkl)$/;

/**
 * The safetensors files holding a component's weights, in load order.
 * Looks for `<stem>[.<variant>].safetensors`, then a sharded
 * `<stem>[.<variant>].safetensors.index.json`, for the usual stems
 * (diffusion_pytorch_model, model). Throws an Error naming the folder otherwise.
 */
export function resolveWeightFiles(dir: string, options: WeightFileOptions = {}): string[] {
  if (!existsSync(dir)) throw new Error(`${dir}: folder not found`);
  const entries = readdirSync(dir);
  const stems = ["diffusion_pytorch_model", "model"];
  const variantPart = options.variant ? `.${options.variant}` : "";
  for (const stem of stems) {
    const single = `${stem}${variantPart}.safetensors`;
    if (entries.includes(single)) return [join(dir, single)];
    const index = `${stem}${variantPart}.safetensors.index.json`;
    if (entries.includes(index)) return shardsFromIndex(join(dir, index));
  }
  const pickles = entries.filter((e) => PICKLE.test(e));
  if (options.variant) {
    const plain = stems.some(
      (s) => entries.includes(`${s}.safetensors`) || entries.includes(`${s}.safetensors.index.json`),
    );
    if (plain) {
      throw new Error(
        `${dir}: no "${options.variant}" variant weights (expected e.g. diffusion_pytorch_model.${options.variant}.safetensors); ` +
          "load without a variant, or convert the weights to that variant",
      );
    }
  }
  if (pickles.length) {
    throw new Error(
      `${dir}: only pickled weights found (${pickles.join(", ")}). sdtune loads safetensors only, ` +
        "because loading a pickle runs arbitrary code. Convert once with Python: " +
        "`from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained(path).save_pretrained(out, safe_serialization=True)` " +
        "(or `safetensors.torch.save_file(torch.load(f), f.replace('.bin', '.safetensors'))` for a single file).",
    );
  }
  throw new Error(`${dir}: no weights found (expected diffusion_pytorch_model.safetensors or model.safetensors)`);
}

function shardsFromIndex(indexPath: string): string[] {
  let index: { weight_map?: Record<string, string> };
  try {
    index = JSON.parse(readFileSync(indexPath, "utf8")) as typeof index;
  } catch (error) {
    throw new Error(`${indexPath}: not valid JSON (${(error as Error).message})`);
  }
  if (!index.weight_map || typeof index.weight_map !== "object") {
    throw new Error(`${indexPath}: missing "weight_map"`);
  }
  const dir = join(indexPath, "..");
  const shards = [...new Set(Object.values(index.weight_map))].sort();
  for (const shard of shards) {
    if (basename(shard) !== shard || PICKLE.test(shard)) {
      throw new Error(`${indexPath}: shard "${shard}" must be a safetensors file in the same folder`);
    }
    if (!existsSync(join(dir, shard))) throw new Error(`${indexPath}: shard ${shard} is missing`);
  }
  return shards.map((s) => join(dir, s));
}

/** Reads and parses a JSON file, with errors that name it. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(code === "ENOENT" ? `${path}: file not found` : `${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
  }
}
