// `sdtune lora convert|inspect`: LoRA files between kohya, diffusers and PEFT formats.
import { existsSync, statSync } from "node:fs";
import { basename, extname, join } from "node:path";

import {
  baseModuleNamesFromModel,
  disposeLora,
  formatLoraSummary,
  loadLoraFile,
  saveLora,
  summarizeLora,
  type BaseModuleNames,
  type LoraSaveFormat,
} from "../lora/index.js";
import { interruptSignal, parseCommandArgs, UsageError, type Command } from "./command.js";

const FORMATS: LoraSaveFormat[] = ["kohya", "diffusers", "peft"];

export const command: Command = {
  help: [
    "usage: sdtune lora convert IN --to kohya|diffusers|peft --out OUT [--base MODEL_DIR]",
    "       sdtune lora inspect FILE [--json] [--base MODEL_DIR]",
    "",
    "IN / FILE: a LoRA .safetensors in kohya (sd-scripts, AUTOMATIC1111, ComfyUI), diffusers or PEFT",
    "keys, or a folder holding one (pytorch_lora_weights.safetensors, or a PEFT adapter with",
    "adapter_config.json). The format is detected.",
    "",
    "convert  writes OUT in the chosen format (a folder OUT gets pytorch_lora_weights.safetensors for",
    "         diffusers/peft, <IN name>.safetensors for kohya). kohya files load in diffusers,",
    "         AUTOMATIC1111 and ComfyUI; diffusers/peft files carry no alpha, so alpha/rank is",
    "         folded into the up weights (and recorded, so converting back restores it).",
    "inspect  prints the format, ranks, alphas, targeted layers per block and the metadata.",
    "",
    "--base MODEL_DIR  a diffusers model folder: kohya names are resolved against its module names",
    "                  (instead of the built-in SD vocabulary) and every target is checked to exist.",
  ].join("\n"),
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === "convert") return convert(rest);
    if (sub === "inspect") return inspect(rest);
    throw new UsageError(sub ? `unknown subcommand "${sub}"` : "expected a subcommand: convert or inspect");
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
  let out = values.out;
  if (format === "kohya" && (out.endsWith("/") || (existsSync(out) && statSync(out).isDirectory()))) {
    const stem = statSync(input).isDirectory() ? basename(input) : basename(input, extname(input));
    out = join(out, `${stem}.safetensors`);
  }
  const interrupt = interruptSignal();
  try {
    const weights = await loadLoraFile(input, {
      baseModuleNames: await baseNames(values.base),
      signal: interrupt.signal,
    });
    try {
      for (const w of weights.warnings) console.error(`warning: ${w}`);
      const result = await saveLora(out, weights, { format, signal: interrupt.signal });
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
