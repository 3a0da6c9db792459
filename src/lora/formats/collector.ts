// Collecting a module's LoRA halves (down, up, alpha, DoRA magnitude) from file keys,
// then checking them into a LoraAdapter: shapes, dtypes, rank and alpha.
import type { Tensor } from "../../native/index.js";
import { magnitudeFromDoraScale, magnitudeFromPeft } from "./lycoris.js";
import type { LoraAdapter } from "./types.js";

export interface Halves {
  down?: { tensor: Tensor; key: string };
  /** DoRA's dora_scale. */
  magnitude?: { tensor: Tensor; key: string };
  up?: { tensor: Tensor; key: string };
  alpha?: { tensor: Tensor; key: string };
  /** The key the missing half should have, for error messages. */
  twin: { down: string; up: string };
}

/** How a module's alpha is found when the file has no alpha tensor for it. */
export type AlphaRule = (key: string, path: string, rank: number) => number | undefined;

export class ModuleCollector {
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

export async function readScalar(t: Tensor, key: string, problems: string[]): Promise<number | undefined> {
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
