// Native surface: images and evaluation.

/** PIL's convolution filters (Image.resize); PIL numbers 1..5 in preprocessor configs. */
export type ResampleFilter = "bicubic" | "bilinear" | "lanczos" | "box" | "hamming";

/** CLIPImageProcessor settings as native/image/clip_preprocess.h takes them. */
export interface NativeClipPreprocessOptions {
  doResize?: boolean;
  /** size {"shortest_edge": n}; or height + width for size {"height", "width"}. */
  shortestEdge?: number;
  height?: number;
  width?: number;
  /** PIL resample number (3 = BICUBIC). */
  resample?: number;
  doCenterCrop?: boolean;
  cropHeight?: number;
  cropWidth?: number;
  doRescale?: boolean;
  rescaleFactor?: number;
  doNormalize?: boolean;
  mean?: number[];
  std?: number[];
}
