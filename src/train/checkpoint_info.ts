// What a training checkpoint is, for `sdtune lora inspect` pointed at one (a checkpoint
// folder or its training_state.safetensors): the stage and step it holds, how to resume
// from it, and which LoRA files the stage has written, rather than a list of trainer
// state keys that are not LoRA keys.
import { existsSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

import { inspectSafetensors } from "../io/safetensors.js";
import { listIntermediateLoras } from "./lora_saves.js";
import { STATE_FILE } from "./stage_loop.js";

export interface TrainingCheckpointInfo {
  /** The checkpoint folder. */
  dir: string;
  /** From its manifest; undefined when the manifest is missing or unreadable. */
  stage?: string;
  step?: number;
  /** The run folder (when the checkpoint lies in one), and its config. */
  runDir?: string;
  config?: string;
  /** The stage's LoRA files so far: the final ones and the intermediate `<stage>-step<N>` ones. */
  loras: string[];
  /** How to continue training from it. */
  resume: string;
}

/** Describes `path` when it is a training checkpoint (folder or state file); undefined otherwise. */
export async function describeTrainingCheckpoint(path: string): Promise<TrainingCheckpointInfo | undefined> {
  if (!existsSync(path)) return undefined;
  const dir = resolve(statSync(path).isDirectory() ? path : dirname(path));
  const state = join(dir, STATE_FILE);
  if (!existsSync(state) || (!statSync(path).isDirectory() && basename(path) !== STATE_FILE)) return undefined;
  if (!(await looksLikeTrainerState(state))) return undefined;
  const manifest = await readManifest(join(dir, "manifest.json"));
  const stageDir = dirname(dirname(dir));
  const inRun = basename(dirname(dir)) === "checkpoints" && existsSync(join(dirname(stageDir), "config.yaml"));
  const runDir = inRun ? dirname(stageDir) : undefined;
  const config = runDir ? join(runDir, "config.yaml") : undefined;
  const loras = manifest?.stage && inRun ? await stageLoras(stageDir, manifest.stage) : [];
  return {
    dir,
    ...manifest,
    ...(runDir ? { runDir, config } : {}),
    loras,
    resume: `sdtune train --config ${config ?? "<the run's config>"} --resume ${dir}`,
  };
}

/** A trainer state dict: every key is a parameter, optimizer, EMA or scaler entry. */
async function looksLikeTrainerState(file: string): Promise<boolean> {
  try {
    const header = await inspectSafetensors(file);
    return header.tensors.some((t) => /^(param|optim)\./.test(t.name));
  } catch {
    return false;
  }
}

async function readManifest(file: string): Promise<{ stage?: string; step?: number } | undefined> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as { step?: unknown; state?: { stage?: unknown } };
    return {
      ...(typeof parsed.state?.stage === "string" ? { stage: parsed.state.stage } : {}),
      ...(typeof parsed.step === "number" ? { step: parsed.step } : {}),
    };
  } catch {
    return undefined;
  }
}

async function stageLoras(stageDir: string, stage: string): Promise<string[]> {
  const final = [
    join(stageDir, "lora", `${stage}.safetensors`),
    ...["diffusers", "peft"].map((f) => join(stageDir, "lora", f, "pytorch_lora_weights.safetensors")),
  ].filter((f) => existsSync(f));
  return [...final, ...(await listIntermediateLoras(stageDir, stage)).map((s) => s.path)];
}

/** The human-readable account `sdtune lora inspect` prints. */
export function formatTrainingCheckpoint(info: TrainingCheckpointInfo, path: string): string {
  const what = info.stage
    ? `stage "${info.stage}" at step ${info.step ?? "?"}`
    : "a stage (its manifest is unreadable)";
  const lines = [
    `${path}: a training checkpoint (trainer state, not a LoRA) of ${what}${info.runDir ? ` of the run in ${info.runDir}` : ""}`,
    `  resume from it:  ${info.resume}`,
    "  (a finished run trains longer with --resume latest and a larger max_train_steps / num_train_epochs)",
  ];
  if (info.loras.length) lines.push("  LoRA files of this stage:", ...info.loras.map((f) => `    ${f}`));
  else {
    lines.push(
      "  this stage has no LoRA file yet: it writes one when it finishes (save_every_n_steps / save_every_n_epochs also write intermediate ones)",
    );
  }
  return lines.join("\n");
}
