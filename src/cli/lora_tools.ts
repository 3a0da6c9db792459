// `sdtune lora extract | resize | merge --into-lora`: LoRAs made from two models, shrunk,
// or merged into one LoRA (src/lora/tools/). Each writes one LoRA in the chosen format.
import { basename, dirname, extname, join } from "node:path";

import {
  disposeLora,
  extractLoraFromModels,
  loadLoraFile,
  mergeLoras,
  resizeLora,
  saveLora,
  type LoraSaveFormat,
  type LoraWeights,
} from "../index.js";
import { interruptSignal, parseCommandArgs, parseLoraSpec, UsageError } from "./command.js";
import { ProgressBar } from "./progress.js";

const FORMATS: LoraSaveFormat[] = ["kohya", "diffusers", "peft"];

export const LORA_TOOLS_HELP = [
  "       sdtune lora extract --base BASE --tuned TUNED --rank R [--conv-rank R2] [--energy E]",
  "                           [--clamp-quantile Q] [--min-diff D] [--out FILE] [--format F] [--json]",
  "       sdtune lora resize FILE (--rank R | --energy E) [--out FILE] [--format F] [--json]",
  "       sdtune lora merge A.safetensors[:SCALE] B.safetensors[:SCALE] ... --into-lora OUT",
  "                         [--rank R | --energy E] [--format F]",
  "",
  "extract  a LoRA approximating TUNED - BASE (diffusers folders, hub ids or single files) by a",
  "         truncated SVD per layer: UNet attention layers at rank R (ResNet and resampler convs",
  "         too with --conv-rank, kxk convs at R2) and the text encoder where it differs. Prints",
  "         each layer's retained energy (kept sigma^2 / total); unchanged layers are skipped",
  "         (||delta|| <= D * ||W||, default 1e-6). --energy keeps the fewest singular values",
  "         holding that share (at most R). --clamp-quantile 0.99 clamps as sd-scripts does.",
  "         Default --out: extracted_lora_r<R>.safetensors.",
  "resize   re-decomposes every layer of FILE to rank R (or the --energy share); alpha / rank is",
  "         kept. Default --out: <FILE name>_r<R>.safetensors beside FILE.",
  "merge --into-lora  one LoRA equal to the sum of the LoRAs at their scales: exact (the ranks",
  "         add up), or re-decomposed to --rank / --energy.",
  "--format kohya (default), diffusers or peft.",
];

function outputFormat(value: unknown): LoraSaveFormat {
  const format = (value ?? "kohya") as LoraSaveFormat;
  if (!FORMATS.includes(format)) throw new UsageError(`--format must be one of ${FORMATS.join(", ")}`);
  return format;
}

function numberArg(value: unknown, flag: string, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== "string" || value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n)))
    throw new UsageError(`${flag} expects ${integer ? "an integer" : "a number"} (got "${String(value)}")`);
  return n;
}

/** Runs `body` with Ctrl-C cancelling and a progress bar fed by its onProgress. */
async function withProgress<T>(
  label: string,
  body: (signal: AbortSignal, onProgress: (e: { step: number; total: number }) => void) => Promise<T>,
): Promise<T> {
  const interrupt = interruptSignal();
  let bar: ProgressBar | undefined;
  try {
    const result = await body(interrupt.signal, (e) => {
      bar ??= new ProgressBar({ label, total: e.total, unit: "layer" });
      bar.update(e.step);
    });
    bar?.done();
    return result;
  } finally {
    interrupt.dispose();
  }
}

async function save(out: string, weights: LoraWeights, format: LoraSaveFormat, name: string): Promise<string> {
  const result = await saveLora(out, weights, { format, name });
  return result.path;
}

/** The energy summary line and, with fewer than all layers at 1, the lowest ones. */
function energyReport(layers: { key: string; rank: number; energy: number }[]): string {
  if (!layers.length) return "";
  const sorted = [...layers].sort((a, b) => a.energy - b.energy);
  const mean = layers.reduce((s, l) => s + l.energy, 0) / layers.length;
  const lines = [`retained energy: mean ${mean.toFixed(6)}, lowest ${sorted[0]!.energy.toFixed(6)}`];
  for (const l of sorted.slice(0, 5)) lines.push(`  ${l.energy.toFixed(6)}  rank ${l.rank}  ${l.key}`);
  return lines.join("\n");
}

export async function extract(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    base: { type: "string" },
    tuned: { type: "string" },
    rank: { type: "string" },
    "conv-rank": { type: "string" },
    energy: { type: "string" },
    "clamp-quantile": { type: "string" },
    "min-diff": { type: "string" },
    variant: { type: "string" },
    out: { type: "string" },
    format: { type: "string" },
    json: { type: "boolean" },
  });
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (typeof values.base !== "string" || typeof values.tuned !== "string")
    throw new UsageError("--base and --tuned are required");
  const rank = numberArg(values.rank, "--rank", true);
  if (rank === undefined) throw new UsageError("--rank is required");
  const format = outputFormat(values.format);
  const out = typeof values.out === "string" ? values.out : `extracted_lora_r${rank}.safetensors`;
  const convRank = numberArg(values["conv-rank"], "--conv-rank", true);
  const energy = numberArg(values.energy, "--energy", false);
  const clampQuantile = numberArg(values["clamp-quantile"], "--clamp-quantile", false);
  const minDiff = numberArg(values["min-diff"], "--min-diff", false);
  const result = await withProgress("extract", (signal, onProgress) =>
    extractLoraFromModels({
      base: values.base as string,
      tuned: values.tuned as string,
      rank,
      ...(convRank !== undefined ? { convRank } : {}),
      ...(energy !== undefined ? { energy } : {}),
      ...(clampQuantile !== undefined ? { clampQuantile } : {}),
      ...(minDiff !== undefined ? { minDiff } : {}),
      ...(typeof values.variant === "string" ? { variant: values.variant } : {}),
      signal,
      onProgress,
    }),
  );
  try {
    const path = await save(out, result.weights, format, basename(out, extname(out)) || "extracted_lora");
    if (values.json) {
      console.log(JSON.stringify({ file: path, format, layers: result.layers, skipped: result.skipped }, null, 2));
    } else {
      console.log(
        `wrote ${path} (${format}, ${result.layers.length} layers; ${result.skipped.length} unchanged layers skipped)`,
      );
      console.log(energyReport(result.layers));
    }
  } finally {
    disposeLora(result.weights);
  }
  return 0;
}

export async function resize(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    rank: { type: "string" },
    energy: { type: "string" },
    "clamp-quantile": { type: "string" },
    out: { type: "string" },
    format: { type: "string" },
    json: { type: "boolean" },
  });
  if (positionals.length !== 1) throw new UsageError("expected exactly one LoRA file");
  const rank = numberArg(values.rank, "--rank", true);
  const energy = numberArg(values.energy, "--energy", false);
  const clampQuantile = numberArg(values["clamp-quantile"], "--clamp-quantile", false);
  if (rank === undefined && energy === undefined) throw new UsageError("give --rank and/or --energy");
  const format = outputFormat(values.format);
  const input = positionals[0]!;
  const stem = basename(input, extname(input));
  const suffix = rank !== undefined ? `_r${rank}` : `_e${energy}`;
  const out = typeof values.out === "string" ? values.out : join(dirname(input), `${stem}${suffix}.safetensors`);
  const weights = await loadLoraFile(input);
  try {
    const result = await withProgress("resize", (signal, onProgress) =>
      resizeLora(weights, {
        ...(rank !== undefined ? { rank } : {}),
        ...(energy !== undefined ? { energy } : {}),
        ...(clampQuantile !== undefined ? { clampQuantile } : {}),
        signal,
        onProgress,
      }),
    );
    try {
      for (const w of result.weights.warnings) console.error(`warning: ${w}`);
      const path = await save(out, result.weights, format, basename(out, extname(out)) || `${stem}${suffix}`);
      if (values.json) console.log(JSON.stringify({ file: path, format, layers: result.layers }, null, 2));
      else console.log(`wrote ${path} (${format}, ${result.layers.length} layers)\n${energyReport(result.layers)}`);
    } finally {
      disposeLora(result.weights);
    }
  } finally {
    disposeLora(weights);
  }
  return 0;
}

/** `lora merge A:0.7 B:0.3 --into-lora OUT`. */
export async function mergeIntoLora(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    "into-lora": { type: "string" },
    rank: { type: "string" },
    energy: { type: "string" },
    format: { type: "string" },
  });
  const out = values["into-lora"];
  if (typeof out !== "string") throw new UsageError("--into-lora OUT is required");
  if (!positionals.length) throw new UsageError("give the LoRA files to merge: A.safetensors[:SCALE] ...");
  const rank = numberArg(values.rank, "--rank", true);
  const energy = numberArg(values.energy, "--energy", false);
  const format = outputFormat(values.format);
  const specs = positionals.map(parseLoraSpec);
  const result = await withProgress("merge", (signal, onProgress) =>
    mergeLoras(specs, {
      ...(rank !== undefined ? { rank } : {}),
      ...(energy !== undefined ? { energy } : {}),
      signal,
      onProgress,
    }),
  );
  try {
    const path = await save(out, result.weights, format, basename(out, extname(out)) || "merged_lora");
    const ranks = new Set(result.layers.map((l) => l.rank));
    console.log(
      `wrote ${path} (${format}, ${specs.length} LoRAs merged into ${result.layers.length} layers, ` +
        `rank ${[...ranks].join("/")})`,
    );
    const decomposed = result.layers.filter(
      (l): l is { key: string; rank: number; energy: number } => l.energy !== undefined,
    );
    if (decomposed.length) console.log(energyReport(decomposed));
  } finally {
    disposeLora(result.weights);
  }
  return 0;
}
