// The pickle refusal, the one home for it: which file names are pickled checkpoints and
// how the refusal reads. Loading a pickle runs arbitrary code, so sdtune never fetches
// (src/hub) nor loads (src/models, src/lora) one; every refusal says how to convert.

/** Pickled checkpoint names (PyTorch .bin/.pt/.pth, LDM .ckpt, raw pickles). */
export const PICKLE = /\.(bin|ckpt|pt|pth|pkl|pickle)$/i;

/** The pickled files among `names`, sorted. */
export function pickleFiles(names: Iterable<string>): string[] {
  return [...names].filter((name) => PICKLE.test(name)).sort();
}

/** Python that converts a single pickled file next to itself. */
export const CONVERT_FILE =
  "`import torch, safetensors.torch; safetensors.torch.save_file(torch.load(f), f.rsplit('.', 1)[0] + '.safetensors')`";

/** Python that converts a single-file checkpoint (.ckpt: the weights sit under "state_dict"). */
export const CONVERT_CHECKPOINT =
  "`import torch, safetensors.torch; sd = torch.load(path, map_location='cpu'); sd = sd.get('state_dict', sd); " +
  "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, " +
  "path.rsplit('.', 1)[0] + '.safetensors')`, then use the .safetensors file";

/** Python that converts a whole diffusers model folder or hub id. */
export const CONVERT_MODEL =
  "`from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained(path).save_pretrained(out, safe_serialization=True)`";

/**
 * The refusal message: `found` names where and what ("<dir>: only pickled weights found (a.bin)"),
 * `convert` says what to do instead.
 */
export function pickleRefusal(found: string, convert: string): string {
  return `${found}. sdtune never downloads or loads pickled weights: loading a pickle runs arbitrary code. ${convert}`;
}
