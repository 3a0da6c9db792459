// The one place that loads the addon, and the whole native surface typed in one file.
// Everything here mirrors native/bindings/*.cc; keep the two in step.
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// ---------------------------------------------------------------- tensors

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

// ---------------------------------------------------------------- safetensors

/** dtype names as the safetensors format writes them. */
export type SafetensorsDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** [begin, end) relative to the start of the data area. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  headerSize: number;
  fileSize: number;
  metadata: Record<string, string>;
  tensors: SafetensorsTensorInfo[];
}

export interface SafetensorsFile {
  readonly path: string;
  readonly header: SafetensorsHeader;
  /** A tensor over the mapped file; pages load when first touched. */
  get(name: string): Tensor;
  /** Drops this handle's share of the mapping; tensors already taken stay valid. */
  dispose(): void;
}

// ---------------------------------------------------------------- runtime

export interface RuntimeInfo {
  libtorchVersion: string;
  torchSource: string;
  threads: number;
  interopThreads: number;
  cores: number;
  blasLibraries: string[];
  parallelInfo: string;
  buildConfig: string;
  cuda: {
    built: boolean;
    available: boolean;
    devices: { index: number; name: string; capability: string; memoryBytes: number }[];
  };
}

// ---------------------------------------------------------------- LoRA files (native/bindings/lora_files.cc)

export interface LoraFilesOps {
  /** tensor * factor in the tensor's dtype, rounded as PyTorch rounds `tensor * python_float`. */
  fold(tensor: Tensor, factor: number): Promise<Tensor>;
  /**
   * fold, plus what makes it invertible: `residual` (int8, the tensor's shape) is the original's
   * bit pattern minus unfold(folded)'s, non-zero only where two floats fold to one value.
   */
  foldExact(tensor: Tensor, factor: number): Promise<{ folded: Tensor; residual: Tensor; nonzero: number }>;
  /**
   * The inverse of fold: x with fold(x, factor) == tensor for every element where such an x
   * exists (`inexact` counts those where none does); with foldExact's residual, the original.
   */
  unfold(tensor: Tensor, factor: number, residual?: Tensor): Promise<{ tensor: Tensor; inexact: number }>;
}

// ---------------------------------------------------------------- the addon

export interface NativeAddon {
  Tensor: abstract new () => Tensor;
  tensorFromTypedArray(data: AnyTypedArray, shape: number[], dtype: DType): Tensor;
  CancelToken: new () => CancelToken;
  safetensors: {
    inspect(path: string): Promise<SafetensorsHeader>;
    open(path: string): Promise<SafetensorsFile>;
    write(path: string, tensors: [string, Tensor][], metadata?: Record<string, string>): Promise<void>;
  };
  ops: {
    matmul(a: Tensor, b: Tensor): Promise<Tensor>;
    randn(shape: number[], options?: { seed?: number; dtype?: DType }): Tensor;
    maxAbsDiff(a: Tensor, b: Tensor): number;
  };
  loraFiles: LoraFilesOps;
  info(): RuntimeInfo;
  setNumThreads(threads: number): number;
  manualSeed(seed: number): void;
}

// ---------------------------------------------------------------- loading

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the addon is looked for, in order. */
export function addonCandidates(): string[] {
  const candidates: string[] = [];
  if (process.env.SDTUNE_ADDON) candidates.push(process.env.SDTUNE_ADDON);
  candidates.push(join(packageRoot, "build", "Release", "sdtune.node"));
  const prebuilds = join(packageRoot, "prebuilds", `${process.platform}-${process.arch}`);
  if (existsSync(prebuilds)) {
    for (const name of readdirSync(prebuilds).sort()) {
      if (name.endsWith(".node")) candidates.push(join(prebuilds, name));
    }
  }
  return candidates;
}

let loaded: { addon: NativeAddon; path: string } | undefined;

/** The addon, loaded on first use. Throws an Error that says how to build it. */
export function native(): NativeAddon {
  return load().addon;
}

/** The file the addon was loaded from. */
export function addonPath(): string {
  return load().path;
}

function load(): { addon: NativeAddon; path: string } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const candidates = addonCandidates();
  const path = candidates.find((candidate) => existsSync(candidate));
  if (!path) {
    throw new Error(
      `sdtune: the native addon is not built (looked in ${candidates.join(", ")}). ` +
        "Run `npm run bootstrap` in the sdtune folder: it installs libtorch and builds the addon.",
    );
  }
  try {
    loaded = { addon: require(path) as NativeAddon, path };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `sdtune: cannot load the native addon ${path}: ${message}. ` +
        "If libtorch changed since it was built, rebuild with `npm run build:native`.",
    );
  }
  return loaded;
}
