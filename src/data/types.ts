// The shapes shared by the dataset readers, the image pipeline and the batch stream.
import type { ProgressEvent } from "../native/index.js";

export type DatasetType = "imagefolder" | "parquet" | "captions" | "dreambooth";

/**
 * What to read. Plain data (a config file can hold it); behaviour such as
 * progress and cancellation goes in OpenOptions.
 */
export interface DatasetSpec {
  /** Reader to use; "auto" (default) picks one from the folder's contents. */
  type?: DatasetType | "auto";
  /** A local folder (or a parquet file), or a Hugging Face dataset id (fetched through the hub cache). */
  path: string;
  /** A hub dataset's branch, tag or commit (default "main"). */
  revision?: string;
  /** imagefolder / parquet: the split to read (default "train"). */
  split?: string;
  /** imagefolder / parquet: the caption column (default "text"). */
  captionColumn?: string;
  /** parquet: the image column (default: the column the HF features call Image, else "image"). */
  imageColumn?: string;
  /** captions / dreambooth: the caption sidecar extension (default ".txt"). */
  captionExt?: string;
  /** captions: what to do with an image that has no caption file (default "empty": train it uncaptioned). */
  missingCaption?: "empty" | "skip";
  /** dreambooth: the prompt for every instance image, e.g. "a photo of sks dog". */
  instancePrompt?: string;
  /** The rare identifier that must appear in the instance prompt or the captions, e.g. "sks". */
  instanceToken?: string;
  /** What a missing instance token does (default "warn"; "error" refuses the dataset). */
  tokenCheck?: "warn" | "error" | "off";
  /** dreambooth: folder of class (prior-preservation) images. */
  classDir?: string;
  /** dreambooth: the prompt for every class image, e.g. "a photo of a dog". */
  classPrompt?: string;
  /** dreambooth: how many class images prior preservation wants (sets classImagesNeeded). */
  numClassImages?: number;
  /** How often each image appears per epoch (default 1); multiplies an image's own repeats (kohya folder, column), except in dreambooth folders, where it replaces them. */
  repeats?: number;
  /** Captions that are not valid UTF-8: decode with U+FFFD replacements (default) or skip the item. */
  invalidUtf8?: "replace" | "skip";
  /** Images with more pixels than this are refused (decompression bombs). Default 178956970, PIL's limit. */
  maxPixels?: number;
  /** "header" (default) reads sizes only; "decode" also decodes every image once to find truncated files. */
  verify?: "header" | "decode";
  /** parquet: encoded image bytes kept in memory before spilling to spillDir (default 1 GiB). */
  maxInMemoryBytes?: number;
  /** parquet: where images beyond maxInMemoryBytes go, named by content hash (default: a temp folder). */
  spillDir?: string;
}

export interface OpenOptions {
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
  /** Files read and probed at once (default 8). */
  concurrency?: number;
}

/** Where an image's encoded bytes are. */
export type ImageSource = { kind: "file"; path: string } | { kind: "bytes"; data: Uint8Array };

export type ItemRole = "train" | "instance" | "class";

/** One usable image of a dataset. */
export interface DataItem {
  /**
   * sha256 (hex) of the encoded image bytes: a stable content key. Latent and
   * text-embedding caches key on it (plus bucket, crop and flip), and duplicate
   * detection uses it.
   */
  readonly key: string;
  /** The image's name in reports: a path relative to the dataset root, or "shard.parquet#row". */
  readonly name: string;
  readonly source: ImageSource;
  readonly caption: string;
  /** Size as displayed, after EXIF orientation. */
  readonly width: number;
  readonly height: number;
  /** Decoder that reads it: jpeg, png, webp, tiff, gif, heif... */
  readonly format: string;
  /** Encoded size in bytes. */
  readonly byteLength: number;
  readonly role: ItemRole;
  /** Times the item appears per epoch (kohya "N_name" folders, DreamBooth repeats). */
  readonly repeats: number;
}

export type IssueCode =
  | "empty-file"
  | "not-an-image"
  | "unsupported-format"
  | "unreadable"
  | "decode-failed"
  | "too-many-pixels"
  | "missing-file"
  | "no-metadata-row"
  | "unsafe-path"
  | "bad-metadata-row"
  | "invalid-utf8"
  | "missing-caption"
  | "instance-token"
  | "zero-repeats";

/** Something wrong with one input. skipped: the item is not used; otherwise a warning. */
export interface DatasetIssue {
  file: string;
  code: IssueCode;
  reason: string;
  skipped: boolean;
}

export interface Dataset {
  readonly type: DatasetType;
  /** The resolved local folder (or parquet file). */
  readonly root: string;
  /** The split read (imagefolder, parquet). */
  readonly split?: string;
  /** Splits found (imagefolder, parquet). */
  readonly splits: string[];
  /** Usable items in a stable order. */
  readonly items: readonly DataItem[];
  /**
   * Skipped items and warnings. The batch stream appends images that fail to
   * decode later, so a run's report stays in one place.
   */
  readonly report: DatasetIssue[];
  /** dreambooth: class images still to generate before prior preservation can run (0 otherwise). */
  readonly classImagesNeeded: number;
  readonly spec: DatasetSpec;
}

/** An empty or unusable dataset: says what was searched; report lists what was skipped. */
export class DatasetError extends Error {
  override name = "DatasetError";
  constructor(
    message: string,
    readonly report: DatasetIssue[] = [],
  ) {
    super(message);
  }
}

/** Defaults in one place. */
export const DATA_DEFAULTS = {
  split: "train",
  captionColumn: "text",
  captionExt: ".txt",
  maxPixels: 178_956_970,
  maxInMemoryBytes: 1 << 30,
  concurrency: 8,
} as const;
