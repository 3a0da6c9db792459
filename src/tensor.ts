// Tensors from TypeScript: creation from typed arrays (zero-copy) and small helpers.
import { native, type AnyTypedArray, type CancelToken, type DType, type Tensor } from "./native/index.js";

export type { DType, Tensor } from "./native/index.js";

const dtypeOfArray = new Map<Function, DType>([
  [Float32Array, "float32"],
  [Float64Array, "float64"],
  [BigInt64Array, "int64"],
  [Int32Array, "int32"],
  [Int16Array, "int16"],
  [Int8Array, "int8"],
  [Uint8Array, "uint8"],
]);

/**
 * A tensor over `data` without copying. The typed array must not be written to
 * (or transferred) while the tensor lives. Uint16Array needs dtype "float16" or
 * "bfloat16" (raw bits); Uint8Array may be "uint8" or "bool".
 */
export function tensorFrom(data: AnyTypedArray, shape: readonly number[], dtype?: DType): Tensor {
  const resolved = dtype ?? dtypeOfArray.get(data.constructor);
  if (!resolved) {
    throw new TypeError(
      `tensorFrom: cannot infer a dtype from ${data.constructor.name}; pass one (Uint16Array holds float16 or bfloat16 bits)`,
    );
  }
  const count = shape.reduce((a, b) => a * b, 1);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new RangeError(`tensorFrom: shape [${shape.join(", ")}] must hold non-negative integers`);
  }
  if (count !== data.length) {
    throw new RangeError(
      `tensorFrom: shape [${shape.join(", ")}] holds ${count} elements but the array has ${data.length}`,
    );
  }
  return native().tensorFromTypedArray(data, [...shape], resolved);
}

/** Disposes every tensor given (undefined entries are skipped). */
export function disposeAll(...tensors: (Tensor | undefined | Iterable<Tensor>)[]): void {
  for (const t of tensors) {
    if (!t) continue;
    if (Symbol.iterator in t) for (const x of t as Iterable<Tensor>) x.dispose();
    else (t as Tensor).dispose();
  }
}

const tokens = new WeakMap<AbortSignal, CancelToken>();

/**
 * A native cancel token that follows an AbortSignal; undefined when there is no signal.
 * One token per signal (a token is only a flag that abort sets), so a long-lived signal
 * passed to many operations holds one abort listener, not one per call.
 */
export function cancelTokenFor(signal: AbortSignal | undefined): CancelToken | undefined {
  if (!signal) return undefined;
  let token = tokens.get(signal);
  if (token) return token;
  const created = new (native().CancelToken)();
  if (signal.aborted) created.cancel();
  else signal.addEventListener("abort", () => created.cancel(), { once: true });
  tokens.set(signal, (token = created));
  return token;
}
