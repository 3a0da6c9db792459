// kohya sd-scripts metadata: the ss_* training entries as sd-scripts formats them
// (Python str() of each value), and the sshs_* hashes AUTOMATIC1111's
// additional-networks extension reads instead of hashing the file itself.
import { createHash } from "node:crypto";

import type { DType, Tensor } from "../../native/index.js";

// ---------------------------------------------------------------- Python formatting

/** Python's repr/str of a float: shortest round-trip digits, "1.0", "1e-05", "1e+16". */
export function pyFloat(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mantissa, exponent] = x.toExponential().split("e") as [string, string];
  const exp = Number(exponent);
  const digits = mantissa.replace("-", "").replace(".", "");
  const sign = x < 0 ? "-" : "";
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const whole = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  return `${sign}${whole}.${digits.slice(exp + 1) || "0"}`;
}

/** Python's json.dumps defaults: ", " and ": " separators, non-ASCII escaped as \uXXXX. */
export function pyJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : pyFloat(value);
  if (typeof value === "string") {
    return JSON.stringify(value).replace(
      /[\u007f-\uffff]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
    );
  }
  if (Array.isArray(value)) return `[${value.map(pyJson).join(", ")}]`;
  return `{${Object.entries(value as object)
    .map(([k, v]) => `${pyJson(k)}: ${pyJson(v)}`)
    .join(", ")}}`;
}

// ---------------------------------------------------------------- ss_* training metadata

/** What a trainer knows about a run; every field is optional and only given fields are written. */
export interface KohyaTrainingInfo {
  sessionId?: number;
  /** Unix time in seconds (time.time()). */
  trainingStartedAt?: number;
  trainingFinishedAt?: number;
  outputName?: string;
  learningRate?: number;
  textEncoderLr?: number | null;
  unetLr?: number | null;
  numTrainImages?: number;
  numRegImages?: number;
  numBatchesPerEpoch?: number;
  numEpochs?: number;
  epoch?: number;
  steps?: number;
  maxTrainSteps?: number;
  batchSizePerDevice?: number;
  totalBatchSize?: number;
  gradientAccumulationSteps?: number;
  gradientCheckpointing?: boolean;
  lrScheduler?: string;
  lrWarmupSteps?: number;
  /** e.g. "torch.optim.adamw.AdamW(weight_decay=0.01)". */
  optimizer?: string;
  maxGradNorm?: number;
  mixedPrecision?: "no" | "fp16" | "bf16";
  seed?: number | null;
  clipSkip?: number | null;
  /** [width, height], written "(512, 512)". */
  resolution?: [number, number];
  v2?: boolean;
  vParameterization?: boolean;
  /** Defaults to sd-scripts' name from v2 / vParameterization: "sd_v1", "sd_v2", "sd_v2_v". */
  baseModelVersion?: string;
  sdModelName?: string;
  noiseOffset?: number | null;
  minSnrGamma?: number | null;
  priorLossWeight?: number;
  cacheLatents?: boolean;
  enableBucket?: boolean;
  minBucketReso?: number;
  maxBucketReso?: number;
  shuffleCaption?: boolean;
  flipAug?: boolean;
  keepTokens?: number;
  /** {folder: {n_repeats, img_count}} */
  datasetDirs?: Record<string, { n_repeats: number; img_count: number }>;
  regDatasetDirs?: Record<string, { n_repeats: number; img_count: number }>;
  /** {folder: {tag: count}} */
  tagFrequency?: Record<string, Record<string, number>>;
  trainingComment?: string | null;
}

/** sd-scripts' model version string (model_util.get_model_version_str_for_sd1_sd2). */
export function kohyaModelVersion(v2: boolean, vParameterization: boolean): string {
  return `sd_${v2 ? "v2" : "v1"}${vParameterization ? "_v" : ""}`;
}

/** ss_* entries formatted as sd-scripts' train_network.py writes them. */
export function kohyaTrainingMetadata(info: KohyaTrainingInfo): Record<string, string> {
  const out: Record<string, string> = {};
  const put = (key: string, value: unknown, kind: "int" | "float" | "bool" | "str" | "json"): void => {
    if (value === undefined) return;
    if (value === null) out[key] = "None";
    else if (kind === "int") out[key] = String(Math.trunc(value as number));
    else if (kind === "float") out[key] = pyFloat(value as number);
    else if (kind === "bool") out[key] = value ? "True" : "False";
    else if (kind === "json") out[key] = pyJson(value);
    else out[key] = String(value);
  };
  put("ss_session_id", info.sessionId, "int");
  put("ss_training_started_at", info.trainingStartedAt, "float");
  put("ss_output_name", info.outputName, "str");
  put("ss_learning_rate", info.learningRate, "float");
  put("ss_text_encoder_lr", info.textEncoderLr, "float");
  put("ss_unet_lr", info.unetLr, "float");
  put("ss_num_train_images", info.numTrainImages, "int");
  put("ss_num_reg_images", info.numRegImages, "int");
  put("ss_num_batches_per_epoch", info.numBatchesPerEpoch, "int");
  put("ss_num_epochs", info.numEpochs, "int");
  put("ss_gradient_checkpointing", info.gradientCheckpointing, "bool");
  put("ss_gradient_accumulation_steps", info.gradientAccumulationSteps, "int");
  put("ss_max_train_steps", info.maxTrainSteps, "int");
  put("ss_lr_warmup_steps", info.lrWarmupSteps, "int");
  put("ss_lr_scheduler", info.lrScheduler, "str");
  put("ss_mixed_precision", info.mixedPrecision, "str");
  put("ss_v2", info.v2, "bool");
  const version =
    info.baseModelVersion ??
    (info.v2 !== undefined || info.vParameterization !== undefined
      ? kohyaModelVersion(info.v2 ?? false, info.vParameterization ?? false)
      : undefined);
  put("ss_base_model_version", version, "str");
  put("ss_clip_skip", info.clipSkip, "int");
  put("ss_cache_latents", info.cacheLatents, "bool");
  put("ss_seed", info.seed, "int");
  put("ss_noise_offset", info.noiseOffset, "float");
  put("ss_training_comment", info.trainingComment, "str");
  put("ss_optimizer", info.optimizer, "str");
  put("ss_max_grad_norm", info.maxGradNorm, "float");
  put("ss_prior_loss_weight", info.priorLossWeight, "float");
  put("ss_min_snr_gamma", info.minSnrGamma, "float");
  put("ss_batch_size_per_device", info.batchSizePerDevice, "int");
  put("ss_total_batch_size", info.totalBatchSize, "int");
  if (info.resolution) out.ss_resolution = `(${info.resolution[0]}, ${info.resolution[1]})`;
  put("ss_flip_aug", info.flipAug, "bool");
  put("ss_shuffle_caption", info.shuffleCaption, "bool");
  put("ss_enable_bucket", info.enableBucket, "bool");
  put("ss_min_bucket_reso", info.minBucketReso, "int");
  put("ss_max_bucket_reso", info.maxBucketReso, "int");
  put("ss_keep_tokens", info.keepTokens, "int");
  put("ss_dataset_dirs", info.datasetDirs, "json");
  put("ss_reg_dataset_dirs", info.regDatasetDirs, "json");
  put("ss_tag_frequency", info.tagFrequency, "json");
  put("ss_sd_model_name", info.sdModelName, "str");
  put("ss_training_finished_at", info.trainingFinishedAt, "float");
  put("ss_steps", info.steps, "int");
  put("ss_epoch", info.epoch, "int");
  return out;
}

// ---------------------------------------------------------------- sshs_* hashes

const ST_DTYPE: Record<DType, string> = {
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
  float64: "F64",
  int64: "I64",
  int32: "I32",
  int16: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};
// The order of the safetensors Rust crate's Dtype enum: its writer sorts tensors by
// it (descending), then by name, and the hashes below hash data in that order.
const RUST_DTYPE_RANK: Record<string, number> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  I16: 5,
  U16: 6,
  F16: 7,
  BF16: 8,
  I32: 9,
  U32: 10,
  F32: 11,
  F64: 12,
  I64: 13,
  U64: 14,
};

const LEGACY_OFFSET = 0x100000;
const LEGACY_LENGTH = 0x10000;

/**
 * sd-scripts' precalculate_safetensors_hashes: it serializes the state dict with only
 * the ss_* metadata (safetensors.torch.save) and hashes that buffer:
 * - sshs_model_hash: sha256 of everything after the header, i.e. the tensor data in
 *   the writer's order (independent of the metadata);
 * - sshs_legacy_hash: the first 8 hex digits of sha256 of bytes [1 MiB, 1 MiB + 64 KiB)
 *   of that buffer (sha256("") for files under 1 MiB). The header length comes from
 *   the JSON the Rust writer produces, whose length does not depend on key order; only
 *   when the header itself reaches past 1 MiB do its bytes enter the hash, and then
 *   the Rust writer's (random) metadata order cannot be reproduced: sorted keys are used.
 */
export function kohyaHashes(
  tensors: Iterable<[string, Tensor]>,
  metadata: Record<string, string>,
): { sshs_model_hash: string; sshs_legacy_hash: string } {
  const items = [...tensors].map(([name, t]) => {
    const data = t.toTypedArray();
    return {
      name,
      dtype: ST_DTYPE[t.dtype],
      shape: t.shape,
      bytes: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
    };
  });
  items.sort(
    (a, b) =>
      RUST_DTYPE_RANK[b.dtype]! - RUST_DTYPE_RANK[a.dtype]! || Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)),
  );
  const ss = Object.fromEntries(
    Object.entries(metadata)
      .filter(([k]) => k.startsWith("ss_"))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  let offset = 0;
  const parts = [`"__metadata__":${JSON.stringify(ss)}`];
  for (const item of items) {
    const end = offset + item.bytes.length;
    parts.push(
      `${JSON.stringify(item.name)}:{"dtype":"${item.dtype}","shape":[${item.shape.join(",")}],"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }
  let header = Buffer.from(`{${parts.join(",")}}`, "utf8");
  header = Buffer.concat([header, Buffer.alloc((8 - (header.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));

  const model = createHash("sha256");
  for (const item of items) model.update(item.bytes);

  // Bytes [LEGACY_OFFSET, LEGACY_OFFSET + LEGACY_LENGTH) of prefix + header + data.
  const legacy = createHash("sha256");
  const window = (start: number, piece: Buffer): void => {
    const from = Math.max(LEGACY_OFFSET, start);
    const to = Math.min(LEGACY_OFFSET + LEGACY_LENGTH, start + piece.length);
    if (to > from) legacy.update(piece.subarray(from - start, to - start));
  };
  window(0, prefix);
  window(8, header);
  let at = 8 + header.length;
  for (const item of items) {
    if (at >= LEGACY_OFFSET + LEGACY_LENGTH) break;
    window(at, item.bytes);
    at += item.bytes.length;
  }
  return { sshs_model_hash: model.digest("hex"), sshs_legacy_hash: legacy.digest("hex").slice(0, 8) };
}
