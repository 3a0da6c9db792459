// `sdtune convert`: single-file checkpoints (A1111 / ComfyUI .safetensors) <-> diffusers folders.
import { existsSync, readdirSync, statSync } from "node:fs";
import { resolve } from "node:path";

import {
  convertDiffusersToSingleFile,
  convertSingleFileToDiffusers,
  isSingleFilePath,
  resaveSingleFile,
  resolveModel,
  type PredictionType,
  type TextLayout,
} from "../index.js";
import { parseCommandArgs, UsageError, type Command } from "./command.js";

const DTYPES: Record<string, "float32" | "float16" | "bfloat16"> = {
  fp32: "float32",
  float32: "float32",
  fp16: "float16",
  float16: "float16",
  bf16: "bfloat16",
  bfloat16: "bfloat16",
};

export const command: Command = {
  help: [
    "usage: sdtune convert MODEL.safetensors --to diffusers OUT_DIR [--prediction-type epsilon|v_prediction]",
    "                      [--config DIR] [--ema] [--dtype fp32|fp16|bf16] [--force]",
    "       sdtune convert MODEL --to single-file OUT.safetensors [--dtype fp32|fp16|bf16]",
    "                      [--text-encoder-layout clip|openclip] [--no-ema] [--force]",
    "",
    "Converts Stable Diffusion 1.x / 2.x models between a single-file checkpoint (the original LDM",
    "layout AUTOMATIC1111, ComfyUI and civitai use) and a diffusers folder. MODEL is a single file,",
    "a diffusers folder or a hub id. .ckpt / .pt / .bin pickles are refused (loading one runs code).",
    "",
    "--to diffusers     the architecture is read off the weights; the prediction type from",
    "                   --prediction-type, else MODEL.yaml beside the file, else SD 1.x epsilon /",
    "                   SD 2.x v_prediction. --config DIR takes configs from a diffusers folder.",
    "                   --ema uses the file's EMA UNet weights (model_ema.*).",
    "--to single-file   written as diffusers' convert_diffusers_to_original_stable_diffusion.py",
    "                   writes it. The text encoder is open_clip-style (SD 2.x) when it uses gelu,",
    "                   CLIP-style (SD 1.x) for quick_gelu; --text-encoder-layout overrides.",
    "                   From a single file: re-saved in --dtype, --no-ema drops the EMA weights.",
    "--dtype            weights in this dtype (default: as stored).",
    "--force            replace OUT when it exists.",
  ].join("\n"),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, {
      to: { type: "string" },
      dtype: { type: "string" },
      "prediction-type": { type: "string" },
      config: { type: "string" },
      ema: { type: "boolean" },
      "no-ema": { type: "boolean" },
      "text-encoder-layout": { type: "string" },
      force: { type: "boolean" },
    });
    const [source, out, ...extra] = positionals;
    if (!source || !out || extra.length) throw new UsageError("give MODEL and OUT (sdtune convert MODEL --to ... OUT)");
    const to = values.to as string | undefined;
    if (to !== "diffusers" && to !== "single-file") throw new UsageError("--to must be diffusers or single-file");
    const dtype = values.dtype === undefined ? undefined : DTYPES[values.dtype as string];
    if (values.dtype !== undefined && !dtype)
      throw new UsageError(`--dtype "${String(values.dtype)}": use fp32, fp16 or bf16`);
    checkOut(out, values.force === true);
    if (resolve(out) === resolve(source)) throw new UsageError("OUT must differ from MODEL");

    const single = isSingleFilePath(source);
    if (to === "diffusers") {
      if (!single)
        throw new UsageError(`${source} is not a single-file checkpoint (.safetensors): it is diffusers already`);
      const plan = await convertSingleFileToDiffusers(source, out, {
        ...(dtype ? { dtype } : {}),
        ...predictionOption(values["prediction-type"]),
        ...(values.config ? { config: values.config as string } : {}),
        ...(values.ema ? { ema: true } : {}),
        onFile: (what) => console.log(what),
      });
      console.log(`${source} (${plan.info.family === "sd2" ? "SD 2.x" : "SD 1.x"}, ${plan.predictionType}) -> ${out}`);
      return 0;
    }
    if (!out.toLowerCase().endsWith(".safetensors")) throw new UsageError("OUT must end in .safetensors");
    if (single) {
      await resaveSingleFile(source, out, { ...(dtype ? { dtype } : {}), ema: values["no-ema"] !== true });
    } else {
      const layout = values["text-encoder-layout"] as string | undefined;
      if (layout !== undefined && layout !== "clip" && layout !== "openclip") {
        throw new UsageError("--text-encoder-layout must be clip or openclip");
      }
      const dir = await resolveModel(source);
      await convertDiffusersToSingleFile(dir, out, {
        ...(dtype ? { dtype } : {}),
        ...(layout ? { textEncoderLayout: layout as TextLayout } : {}),
      });
    }
    console.log(`${source} -> ${out}`);
    return 0;
  },
};

function predictionOption(value: unknown): { predictionType?: PredictionType } {
  if (value === undefined) return {};
  if (value !== "epsilon" && value !== "v_prediction") {
    throw new UsageError(`--prediction-type "${String(value)}": use epsilon or v_prediction`);
  }
  return { predictionType: value };
}

/** Refuses to replace an existing OUT (a non-empty folder or a file) without --force. */
function checkOut(out: string, force: boolean): void {
  if (force || !existsSync(out)) return;
  const empty = statSync(out).isDirectory() && readdirSync(out).length === 0;
  if (!empty) throw new UsageError(`${out} exists: pass --force to replace it`);
}
