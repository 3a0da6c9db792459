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

/** One JPEG for the data pipeline: resize the oriented image to resized*, crop, then mirror. */
export interface NativeJpegJob {
  resizedWidth: number;
  resizedHeight: number;
  left: number;
  top: number;
  width: number;
  height: number;
  flip: boolean;
  filter: ResampleFilter;
  /** Largest stored image (width x height) it decodes; larger ones are left to sharp's limit. */
  maxPixels: number;
}
