// Finite weights: nothing with a NaN or an infinity is ever saved, and a LoRA file that
// holds one is refused on load (it would only give black or noise images). The scan
// reads each float tensor's bits once, on the CPU (a CUDA tensor is copied first).
import type { Tensor } from "../native/index.js";

/** Float formats by the bits that say "Inf or NaN" (an all-ones exponent). */
const EXPONENT_MASKS = { float32: 0x7f800000, float16: 0x7c00, bfloat16: 0x7f80 } as const;

/** Whether every element of `t` is finite (non-float tensors always are). */
export function isFiniteTensor(t: Tensor): boolean {
  if (t.dtype === "float64") {
    const values = t.toTypedArray() as Float64Array;
    for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return false;
    return true;
  }
  if (t.dtype !== "float32" && t.dtype !== "float16" && t.dtype !== "bfloat16") return true;
  const mask = EXPONENT_MASKS[t.dtype];
  const array = t.toTypedArray() as Float32Array | Uint16Array;
  const bits =
    t.dtype === "float32" ? new Uint32Array(array.buffer, array.byteOffset, array.length) : (array as Uint16Array);
  for (let i = 0; i < bits.length; i++) if ((bits[i]! & mask) === mask) return false;
  return true;
}

/** Names of the tensors (at most `limit`) that hold a NaN or an infinity. */
export function nonFiniteTensors(entries: Iterable<[string, Tensor]>, limit = 5): string[] {
  const bad: string[] = [];
  for (const [name, t] of entries) {
    if (!isFiniteTensor(t)) bad.push(name);
    if (bad.length >= limit) break;
  }
  return bad;
}

/** Thrown instead of saving weights that are not finite. */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
  constructor(
    readonly what: string,
    readonly tensors: string[],
    advice: string,
  ) {
    super(`${what} hold NaN or infinite values (in ${tensors.map((t) => `"${t}"`).join(", ")}); ${advice}`);
  }
}

/** Throws a NonFiniteError naming `what` and the first bad tensors when any is not finite. */
export function assertFinite(entries: Iterable<[string, Tensor]>, what: string, advice = "nothing was written"): void {
  const bad = nonFiniteTensors(entries);
  if (bad.length) throw new NonFiniteError(what, bad, advice);
}
