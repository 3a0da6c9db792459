// Tensor plumbing for conversions: zero-copy row slices of mapped tensors (a third of a fused
// q/k/v), concatenation on dim 0, and dtype casts, one tensor at a time.
import type { DType, Tensor } from "../../native/index.js";
import { tensorFrom } from "../../tensor.js";

export type FloatDType = "float32" | "float16" | "bfloat16";
const FLOATS: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];

/** Rows [third*n/3, (third+1)*n/3) of `t` as a view over its memory (no copy for CPU tensors). */
export function thirdOf(t: Tensor, third: number, where: string): Tensor {
  const rows = t.shape[0]!;
  if (rows % 3 !== 0)
    throw new Error(`${where}: a fused q/k/v tensor needs a multiple of 3 rows (got [${t.shape.join(", ")}])`);
  const data = t.toTypedArray();
  const per = data.length / rows;
  const start = (third * rows) / 3;
  const part = data.subarray(start * per, (start + rows / 3) * per);
  return tensorFrom(part, [rows / 3, ...t.shape.slice(1)], t.dtype);
}

/** The tensors stacked on dim 0 (one new tensor; they must share dtype and trailing dims). */
export function concatRows(parts: Tensor[], where: string): Tensor {
  const first = parts[0]!;
  const tail = first.shape.slice(1).join(",");
  if (parts.some((p) => p.dtype !== first.dtype || p.shape.slice(1).join(",") !== tail)) {
    throw new Error(`${where}: the q, k and v tensors differ in dtype or shape`);
  }
  const arrays = parts.map((p) => p.toTypedArray());
  const total = arrays.reduce((n, a) => n + a.length, 0);
  const out = new (arrays[0]!.constructor as new (n: number) => (typeof arrays)[0])(total);
  let offset = 0;
  for (const a of arrays) {
    (out as unknown as { set(a: ArrayLike<unknown>, o: number): void }).set(a as ArrayLike<unknown>, offset);
    offset += a.length;
  }
  const rows = parts.reduce((n, p) => n + p.shape[0]!, 0);
  return tensorFrom(out, [rows, ...first.shape.slice(1)], first.dtype);
}

/** `t` in `dtype` when both are floating point and differ; else `t` itself. */
export async function castFloat(t: Tensor, dtype: FloatDType | undefined): Promise<Tensor> {
  if (!dtype || t.dtype === dtype || !FLOATS.includes(t.dtype)) return t;
  return t.to({ dtype });
}
