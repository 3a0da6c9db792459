// Everything a run needs, checked before anything is written to its output_dir: the
// config's cross-stage rules, the device and precision, the model folder (configs,
// weights, tokenizer, scheduler), every stage's dataset and the evaluation's CLIP
// models. A start that fails here leaves the output folder exactly as it was.
import { existsSync } from "node:fs";
import { join } from "node:path";

import type { TrainConfig } from "../config/train.js";
import { openDataset } from "../data/index.js";
import { resolveClipModel } from "../eval/clip_score.js";
import { resolveModel } from "../hub/index.js";
import { parseClipTextEncoderConfig } from "../models/clip_config.js";
import { parseUNetConfig, parseVAEConfig } from "../models/config.js";
import { readJsonFile, resolveWeightFiles } from "../models/files.js";
import { readSchedulerConfig } from "../sched/index.js";
import { ClipTokenizer } from "../text/clip_tokenizer.js";
import { datasetSummary, type DatasetSummary } from "./dataset_report.js";
import { checkTrainingMemory } from "./memory_check.js";
import { runPath } from "./paths.js";
import { choosePlacement, type Placement } from "./precision.js";
import { datasetSpecFor } from "./stage.js";

export interface PreflightOptions {
  signal?: AbortSignal;
  onProgress?: (event: { phase: "download"; [key: string]: unknown }) => void;
}

/** What preflight found, for the run to use rather than look up again. */
export interface Checked {
  placement: Placement;
  /** The model's local folder (downloaded into the hub cache when a hub id). */
  modelDir: string;
  /** evaluate.clip_model (as written) -> its local folder. */
  clipModels: Map<string, string>;
  /** Stage name -> its dataset report. */
  datasets: Map<string, DatasetSummary>;
}

export async function preflight(config: TrainConfig, runDir: string, options: PreflightOptions): Promise<Checked> {
  checkStages(config);
  const placement = choosePlacement(config.device, config.mixed_precision);
  const modelDir = await resolveModel(config.model, {
    revision: config.revision,
    variant: config.variant,
    signal: options.signal,
    onProgress: (e) => options.onProgress?.({ ...e, phase: "download" }),
  });
  await checkModelFolder(modelDir, config.variant);
  checkTrainingMemory(config, modelDir, placement);
  const clipModels = new Map<string, string>();
  for (const stage of config.stages) {
    const id = stage.evaluate?.clip_model;
    if (id && !clipModels.has(id)) clipModels.set(id, await resolveClipModel(id, { signal: options.signal }));
  }
  const datasets = new Map<string, DatasetSummary>();
  for (const stage of config.stages) {
    const classDir = stage.prior_preservation
      ? (stage.prior_preservation.class_data_dir ?? runPath(runDir, "class_images", stage.name))
      : undefined;
    const dataset = await openDataset(datasetSpecFor(stage, classDir), { signal: options.signal });
    datasets.set(stage.name, datasetSummary(dataset, stage));
  }
  return { placement, modelDir, clipModels, datasets };
}

/** Checks that need the whole config: refused before anything runs, with the stage named. */
function checkStages(config: TrainConfig): void {
  for (const [i, stage] of config.stages.entries()) {
    if (stage.init_lora && !existsSync(stage.init_lora)) {
      throw new Error(`stages[${i}] ("${stage.name}"): init_lora ${stage.init_lora}: no such file or folder`);
    }
    if (stage.optimizer === "adamw8bit") {
      throw new Error(
        `stages[${i}] ("${stage.name}"): optimizer adamw8bit needs the CUDA build (its block-wise 8-bit state is a GPU kernel); use optimizer: adamw`,
      );
    }
    if (
      stage.cache_text_embeddings &&
      i > 0 &&
      config.stages.slice(0, i).some((s) => s.train_text_encoder !== "none")
    ) {
      throw new Error(
        `stages[${i}] ("${stage.name}"): cache_text_embeddings cannot be used after a stage that trained the text encoder ` +
          "(the cache keys on the text encoder's files, which that stage changed); turn it off for this stage",
      );
    }
  }
}

/** The model folder's parts, configs (with their size bounds), weight files, tokenizer and scheduler. */
async function checkModelFolder(dir: string, variant: string | undefined): Promise<void> {
  for (const part of ["unet", "text_encoder", "tokenizer", "scheduler"]) {
    if (!existsSync(join(dir, part))) throw new Error(`${dir}: missing ${part}/ (not a Stable Diffusion model folder)`);
  }
  const config = (part: string): { raw: unknown; path: string } => {
    const path = join(dir, part, "config.json");
    return { raw: readJsonFile(path), path };
  };
  const unet = config("unet");
  parseUNetConfig(unet.raw, unet.path);
  const text = config("text_encoder");
  parseClipTextEncoderConfig(text.raw, text.path);
  if (existsSync(join(dir, "vae"))) {
    const vae = config("vae");
    parseVAEConfig(vae.raw, vae.path);
    resolveWeightFiles(join(dir, "vae"), { variant, onWarning: () => undefined });
  }
  for (const part of ["unet", "text_encoder"])
    resolveWeightFiles(join(dir, part), { variant, onWarning: () => undefined });
  await ClipTokenizer.fromPretrained(join(dir, "tokenizer"));
  readSchedulerConfig(dir);
}
