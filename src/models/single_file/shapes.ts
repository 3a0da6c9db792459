// Shapes of the tensors of a single-file checkpoint by name, for reading a model's config off
// its weights: a missing tensor is an error that names the file and the key.
import type { SafetensorsHeader, SafetensorsTensorInfo } from "../../native/index.js";

/** The shape of the tensor `key` (relative to a component prefix); throws naming the key when absent. */
export type ShapeOf = (key: string) => number[];

/** The tensors of `header` under `prefix`, by their name without it. */
export function tensorsUnder(header: SafetensorsHeader, prefix: string): Map<string, SafetensorsTensorInfo> {
  const out = new Map<string, SafetensorsTensorInfo>();
  for (const info of header.tensors) {
    if (info.name.startsWith(prefix)) out.set(info.name.slice(prefix.length), info);
  }
  return out;
}

export function shapeReader(
  tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
  prefix: string,
  file: string,
): ShapeOf {
  return (key) => {
    const info = tensors.get(key);
    if (!info) {
      throw new Error(
        `${file}: missing tensor "${prefix}${key}": the file is truncated, damaged or not a complete ` +
          "Stable Diffusion 1.x / 2.x checkpoint",
      );
    }
    return info.shape;
  };
}
