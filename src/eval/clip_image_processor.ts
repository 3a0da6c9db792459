// transformers' CLIPImageProcessor: preprocessor_config.json -> the native preprocessing
// (PIL-exact bicubic resize, center crop, rescale, normalize; native/image/), with images
// decoded by sharp to 8-bit RGB first, as PIL's Image.convert("RGB") would give them.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import sharp from "sharp";

import { native, type NativeClipPreprocessOptions, type Tensor } from "../native/index.js";
import { tensorFrom } from "../tensor.js";

/** An image to score: a file path, encoded bytes, or already-decoded packed RGB. */
export type ImageInput = string | Uint8Array | DecodedImage;

/** Packed 8-bit RGB, row-major (height x width x 3). */
export interface DecodedImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Pixel limit for decoding (PIL's default decompression-bomb limit). */
const MAX_PIXELS = 178_956_970;

/**
 * Decodes any image sharp reads into packed 8-bit RGB, as PIL's Image.open(...).convert("RGB")
 * sees it: alpha is dropped without compositing (a transparent pixel keeps its colour),
 * greyscale becomes three equal channels, palettes expand to their colours, and an embedded
 * ICC profile is ignored (PIL does not colour-manage; sharp would convert to sRGB by default).
 * EXIF orientation is applied (diffusers' DreamBooth exif_transposes instance images too).
 */
export async function decodeRgb(input: string | Uint8Array, what = "image"): Promise<DecodedImage> {
  const source = typeof input === "string" ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  try {
    const { data, info } = await sharp(source, { failOn: "error", limitInputPixels: MAX_PIXELS, autoOrient: true })
      .keepIccProfile()
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels instead of 3`);
    return {
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: info.width,
      height: info.height,
    };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const name = typeof input === "string" ? input : what;
    throw new Error(`cannot decode ${name}: ${message}`);
  }
}

/** The fields of preprocessor_config.json that CLIPImageProcessor uses, resolved to plain values. */
export interface ClipImageProcessorConfig {
  doResize: boolean;
  /** size {"shortest_edge": n}; otherwise resizeHeight x resizeWidth. */
  shortestEdge?: number;
  resizeHeight?: number;
  resizeWidth?: number;
  /** PIL number: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING. */
  resample: number;
  doCenterCrop: boolean;
  cropHeight: number;
  cropWidth: number;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
}

/** CLIPImageProcessor's defaults (OpenAI CLIP). */
export const CLIP_PROCESSOR_DEFAULTS: ClipImageProcessorConfig = {
  doResize: true,
  shortestEdge: 224,
  resample: 3,
  doCenterCrop: true,
  cropHeight: 224,
  cropWidth: 224,
  doRescale: true,
  rescaleFactor: 1 / 255,
  doNormalize: true,
  imageMean: [0.48145466, 0.4578275, 0.40821073],
  imageStd: [0.26862954, 0.26130258, 0.27577711],
};

export class ClipImageProcessor {
  constructor(readonly config: ClipImageProcessorConfig = CLIP_PROCESSOR_DEFAULTS) {}

  /** Reads `dir`/preprocessor_config.json; a folder without one gets CLIP's defaults. */
  static async fromPretrained(dir: string): Promise<ClipImageProcessor> {
    const path = join(dir, "preprocessor_config.json");
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new ClipImageProcessor();
      throw error;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
    }
    return new ClipImageProcessor(parsePreprocessorConfig(raw, path));
  }

  /** CLIPImageProcessor(images)["pixel_values"]: float32 [n, 3, cropHeight, cropWidth]. */
  async preprocess(images: readonly ImageInput[]): Promise<Tensor> {
    if (images.length === 0) throw new RangeError("ClipImageProcessor.preprocess: no images");
    const decoded = await Promise.all(
      images.map((image, i) => (isDecoded(image) ? image : decodeRgb(image, `images[${i}]`))),
    );
    const tensors = decoded.map((d, i) => {
      if (d.data.length !== d.width * d.height * 3) {
        throw new RangeError(
          `images[${i}]: ${d.data.length} bytes do not hold ${d.width}x${d.height} RGB pixels (${d.width * d.height * 3})`,
        );
      }
      return tensorFrom(d.data, [d.height, d.width, 3], "uint8");
    });
    try {
      return await native().image.clipPreprocess(tensors, this.nativeOptions());
    } finally {
      for (const t of tensors) t.dispose();
    }
  }

  private nativeOptions(): NativeClipPreprocessOptions {
    const c = this.config;
    const o: NativeClipPreprocessOptions = {
      doResize: c.doResize,
      resample: c.resample,
      doCenterCrop: c.doCenterCrop,
      cropHeight: c.cropHeight,
      cropWidth: c.cropWidth,
      doRescale: c.doRescale,
      rescaleFactor: c.rescaleFactor,
      doNormalize: c.doNormalize,
      mean: [...c.imageMean],
      std: [...c.imageStd],
    };
    if (c.shortestEdge !== undefined) o.shortestEdge = c.shortestEdge;
    else {
      o.height = c.resizeHeight!;
      o.width = c.resizeWidth!;
    }
    return o;
  }
}

function isDecoded(image: ImageInput): image is DecodedImage {
  return typeof image === "object" && !(image instanceof Uint8Array);
}

/**
 * preprocessor_config.json -> settings, with transformers' get_size_dict rules: an int
 * `size` means shortest edge, an int `crop_size` a square; missing keys take CLIP's defaults.
 */
export function parsePreprocessorConfig(raw: unknown, path = "preprocessor_config.json"): ClipImageProcessorConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new Error(`${path}: expected a JSON object`);
  const o = raw as Record<string, unknown>;
  const d = CLIP_PROCESSOR_DEFAULTS;
  const fail = (key: string, want: string): never => {
    throw new Error(`${path}: "${key}" must be ${want}, got ${JSON.stringify(o[key])}`);
  };
  const bool = (key: string, fallback: boolean): boolean =>
    o[key] === undefined ? fallback : typeof o[key] === "boolean" ? o[key] : fail(key, "true or false");
  const positiveInt = (value: unknown, key: string): number =>
    typeof value === "number" && Number.isInteger(value) && value > 0 ? value : fail(key, "a positive integer");
  const triple = (key: string, fallback: [number, number, number]): [number, number, number] => {
    const v = o[key];
    if (v === undefined) return fallback;
    if (typeof v === "number") return [v, v, v];
    if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      return v as [number, number, number];
    }
    return fail(key, "a number or a list of 3 numbers");
  };

  const config: ClipImageProcessorConfig = {
    ...d,
    doResize: bool("do_resize", d.doResize),
    doCenterCrop: bool("do_center_crop", d.doCenterCrop),
    doRescale: bool("do_rescale", d.doRescale),
    doNormalize: bool("do_normalize", d.doNormalize),
    imageMean: triple("image_mean", d.imageMean),
    imageStd: triple("image_std", d.imageStd),
  };
  const resample = o.resample ?? d.resample;
  if (!(typeof resample === "number" && Number.isInteger(resample) && resample >= 1 && resample <= 5)) {
    fail("resample", "a PIL convolution filter number (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)");
  }
  config.resample = resample as number;
  if (o.rescale_factor !== undefined) {
    config.rescaleFactor =
      typeof o.rescale_factor === "number" && o.rescale_factor > 0 ? o.rescale_factor : fail("rescale_factor", "> 0");
  }
  const size = o.size;
  if (typeof size === "number") config.shortestEdge = positiveInt(size, "size");
  else if (typeof size === "object" && size !== null) {
    const s = size as Record<string, unknown>;
    if (s.shortest_edge !== undefined) config.shortestEdge = positiveInt(s.shortest_edge, "size.shortest_edge");
    else if (s.height !== undefined && s.width !== undefined) {
      delete config.shortestEdge;
      config.resizeHeight = positiveInt(s.height, "size.height");
      config.resizeWidth = positiveInt(s.width, "size.width");
    } else fail("size", '{"shortest_edge": n} or {"height": h, "width": w}');
  } else if (size !== undefined) fail("size", "an integer or an object");
  const crop = o.crop_size;
  if (typeof crop === "number") config.cropHeight = config.cropWidth = positiveInt(crop, "crop_size");
  else if (typeof crop === "object" && crop !== null) {
    const c = crop as Record<string, unknown>;
    config.cropHeight = positiveInt(c.height, "crop_size.height");
    config.cropWidth = positiveInt(c.width, "crop_size.width");
  } else if (crop !== undefined) fail("crop_size", "an integer or {height, width}");
  if (config.doNormalize && config.imageStd.some((v) => v === 0)) fail("image_std", "non-zero");
  return config;
}
