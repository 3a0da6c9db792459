// `sdtune lora convert|inspect|merge`: LoRA files between kohya, diffusers and PEFT formats,
// and LoRAs merged into a full model folder.
import { existsSync, statSync } from "node:fs";
import { basename, extname } from "node:path";

import {
  baseModuleNamesFromModel,
  describeTrainingCheckpoint,
  formatTrainingCheckpoint,
  disposeLora,
  formatLoraSummary,
  loadLoraFile,
  saveLora,
  summarizeLora,
  type BaseModuleNames,
  type LoraSaveFormat,
  mergeLoraIntoModel,
  type ModelDType,
} from "../index.js";
import { interruptSignal, parseCommandArgs, parseLoraSpec, UsageError, type Command } from "./command.js";
import { extract, LORA_TOOLS_HELP, mergeIntoLora, resize } from "./lora_tools.js";
import { ProgressBar } from "./progress.js";

const FORMATS: LoraSaveFormat[] = ["kohya", "diffusers", "peft"];

export const command: Command = {
  help: [
    "usage: sdtune lora convert IN --to kohya|diffusers|peft --out OUT [--base MODEL_DIR]",
    "       sdtune lora inspect FILE [--json] [--base MODEL_DIR]",
    "       sdtune lora merge --model BASE --lora FILE[:SCALE] [--lora ...] --out DIR",
    "                         [--dtype float32|float16|bfloat16] [--variant NAME] [--force]",
    ...LORA_TOOLS_HELP,
    "",
    "IN / FILE: a LoRA .safetensors in kohya (sd-scripts, AUTOMATIC1111, ComfyUI), diffusers or PEFT",
    "keys, or a folder holding one (pytorch_lora_weights.safetensors, or a PEFT adapter with",
    "adapter_config.json). The format is detected.",
    "",
    "convert  writes OUT in the chosen format (a folder OUT, or a name without extension, gets",
    "         pytorch_lora_weights.safetensors for diffusers/peft, <IN name>.safetensors for kohya).",
    "         kohya files load in diffusers,",
    "         AUTOMATIC1111 and ComfyUI; diffusers/peft files carry no alpha, so alpha/rank is",
    "         folded into the up weights (and recorded, so converting back restores it).",
    "inspect  prints the format, ranks, alphas, targeted layers per block and the metadata;",
    "         on a training checkpoint, its stage and step, how to resume and the stage's LoRA files.",
    "merge    applies each LoRA at its scale (default 1) to the base model's UNet and text encoder,",
    "         fuses them into the weights and writes a complete diffusers folder DIR (the other",
    "         components are hard-linked or copied). BASE is a diffusers folder or a hub id.",
    "         --dtype sets the dtype of the merged weights (default: as in the base); --variant",
    "         reads and writes <name>.<variant>.safetensors weights; --force replaces a non-empty DIR.",
    "         --out NAME.safetensors writes one single-file checkpoint (AUTOMATIC1111 / ComfyUI) instead.",
    "",
    "--base MODEL_DIR  a diffusers model folder: kohya names are resolved against its module names",
    "                  (instead of the built-in SD vocabulary) and every target is checked to exist.",
  ].join("\n"),
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === "convert") return convert(rest);
    if (sub === "inspect") return inspect(rest);
    if (sub === "merge") return rest.some((a) => a.startsWith("--into-lora")) ? mergeIntoLora(rest) : merge(rest);
    if (sub === "extract") return extract(rest);
    if (sub === "resize") return resize(rest);
    throw new UsageError(
      sub ? `unknown subcommand "${sub}"` : "expected a subcommand: convert, inspect, merge, extract or resize",
    );
  },
};

async function baseNames(dir: unknown): Promise<BaseModuleNames | undefined> {
  return typeof dir === "string" ? baseModuleNamesFromModel(dir) : undefined;
}

async function convert(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    to: { type: "string" },
    out: { type: "string" },
    base: { type: "string" },
  });
  if (positionals.length !== 1) throw new UsageError("expected exactly one input LoRA");
  const format = values.to as LoraSaveFormat | undefined;
  if (!format || !FORMATS.includes(format)) throw new UsageError(`--to must be one of ${FORMATS.join(", ")}`);
  if (typeof values.out !== "string") throw new UsageError("--out is required");
  const input = positionals[0]!;
  const out = values.out;
  // A folder OUT (or a name without extension) gets <IN name>.safetensors for kohya (saveLora).
  const name = existsSync(input) && statSync(input).isDirectory() ? basename(input) : basename(input, extname(input));
  const interrupt = interruptSignal();
  try {
    const weights = await loadLoraFile(input, {
      baseModuleNames: await baseNames(values.base),
      signal: interrupt.signal,
    });
    try {
      for (const w of weights.warnings) console.error(`warning: ${w}`);
      const result = await saveLora(out, weights, { format, name, signal: interrupt.signal });
      const notes: string[] = [];
      if (result.folded) notes.push(`alpha/rank folded into up for ${result.folded} modules`);
      if (result.unfolded) notes.push(`recorded alpha restored for ${result.unfolded} modules`);
      console.log(
        `wrote ${result.path} (${format}, ${result.modules} modules, from ${weights.format})` +
          (notes.length ? `: ${notes.join("; ")}` : ""),
      );
      if (result.inexact) {
        console.error(
          `warning: ${result.inexact} up elements were not produced by folding the recorded alpha; ` +
            "they were unfolded to the nearest value",
        );
      }
    } finally {
      disposeLora(weights);
    }
  } finally {
    interrupt.dispose();
  }
  return 0;
}

async function inspect(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { json: { type: "boolean" }, base: { type: "string" } });
  if (positionals.length !== 1) throw new UsageError("expected exactly one LoRA file or folder");
  // A training checkpoint holds trainer state, not a LoRA: say what it is and where the LoRAs are.
  const checkpoint = await describeTrainingCheckpoint(positionals[0]!);
  if (checkpoint) {
    console.log(
      values.json ? JSON.stringify(checkpoint, null, 2) : formatTrainingCheckpoint(checkpoint, positionals[0]!),
    );
    return 0;
  }
  const weights = await loadLoraFile(positionals[0]!, { baseModuleNames: await baseNames(values.base) });
  try {
    const summary = summarizeLora(weights);
    if (values.json) {
      const adapters = [...weights.adapters].map(([key, a]) => ({
        key,
        rank: a.rank,
        alpha: a.alpha,
        ...(a.originalAlpha !== undefined ? { originalAlpha: a.originalAlpha } : {}),
        down: a.down.shape,
        up: a.up.shape,
        dtype: a.down.dtype,
      }));
      console.log(JSON.stringify({ file: positionals[0], ...summary, adapters }, null, 2));
    } else {
      console.log(formatLoraSummary(summary, positionals[0]!));
    }
  } finally {
    disposeLora(weights);
  }
  return 0;
}

/** "file.safetensors:0.8" -> {path, scale}; a suffix that is not a number stays part of the path. */

const DTYPES: ModelDType[] = ["float32", "float16", "bfloat16"];

async function merge(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    {
      model: { type: "string" },
      lora: { type: "string", multiple: true },
      out: { type: "string" },
      dtype: { type: "string" },
      variant: { type: "string" },
      force: { type: "boolean" },
    },
    false,
  );
  if (typeof values.model !== "string") throw new UsageError("--model is required");
  if (typeof values.out !== "string") throw new UsageError("--out is required");
  const specs = (values.lora as string[] | undefined) ?? [];
  if (!specs.length) throw new UsageError("give at least one --lora FILE[:SCALE]");
  const dtype = values.dtype as ModelDType | undefined;
  if (dtype !== undefined && !DTYPES.includes(dtype))
    throw new UsageError(`--dtype must be one of ${DTYPES.join(", ")}`);
  const interrupt = interruptSignal();
  let bar: ProgressBar | undefined;
  try {
    const result = await mergeLoraIntoModel({
      base: values.model,
      loras: specs.map(parseLoraSpec),
      out: values.out,
      dtype,
      variant: values.variant as string | undefined,
      force: values.force === true,
      signal: interrupt.signal,
      onProgress: (e) => {
        bar ??= new ProgressBar({ label: "merge", total: e.total, unit: "step" });
        bar.update(e.step, { at: String(e.what ?? "") });
      },
    });
    bar?.done();
    const layers = Object.entries(result.layers)
      .filter(([, n]) => n !== undefined)
      .map(([model, n]) => `${model} ${n} layers`)
      .join(", ");
    console.log(`wrote ${result.out} (${specs.length} LoRA${specs.length > 1 ? "s" : ""} merged: ${layers})`);
  } finally {
    interrupt.dispose();
  }
  return 0;
}

export { parseLoraSpec } from "./command.js";
