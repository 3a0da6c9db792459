// Native surface: tensors.

export type DType =
  "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";

/** The typed array that carries each dtype (float16/bfloat16 as raw bits). */
export interface TypedArrayOf {
  float32: Float32Array;
  float64: Float64Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int64: BigInt64Array;
  int32: Int32Array;
  int16: Int16Array;
  int8: Int8Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}
export type AnyTypedArray = TypedArrayOf[DType];

/** A handle on one native tensor. Memory is freed by dispose() (idempotent) or by GC. */
export interface Tensor {
  readonly dtype: DType;
  readonly shape: number[];
  /** "cpu", "cuda:0", ... */
  readonly device: string;
  readonly numel: number;
  readonly disposed: boolean;
  /**
   * A typed array over the tensor's memory (zero-copy for contiguous CPU tensors,
   * otherwise over a contiguous CPU copy). It is a view: later in-place changes show.
   */
  toTypedArray(): AnyTypedArray;
  /** A copy with another dtype and/or device. */
  to(options: { dtype?: DType; device?: string }): Promise<Tensor>;
  clone(): Tensor;
  reshape(shape: number[]): Tensor;
  dispose(): void;
}

export interface CancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}

export interface ProgressEvent {
  phase: string;
  step: number;
  total: number;
  [value: string]: number | string;
}
