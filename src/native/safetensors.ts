// Native surface: safetensors.
import type { Tensor } from "./tensor.js";

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
