// Paths into ../shared/fixtures and parity helpers for golden tests.
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

import { inspectSafetensors, readSafetensors } from "../../src/io/safetensors.js";
import type { Tensor } from "../../src/native/index.js";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, "..", "..");

/** ../shared/fixtures, or SDTUNE_FIXTURES when set. */
export const fixturesDir = process.env.SDTUNE_FIXTURES ?? resolve(repoRoot, "..", "shared", "fixtures");
export const fixture = (...parts: string[]): string => join(fixturesDir, ...parts);

/** A JSON file of the fixture set, parsed (e.g. fixtureJson("tiny-sd", "unet", "config.json")). */
export function fixtureJson<T = Record<string, unknown>>(...parts: string[]): T {
  return JSON.parse(readFileSync(fixture(...parts), "utf8")) as T;
}

/**
 * The seed of the CPU torch.Generator behind the golden loops' recorded noise draws. The
 * generator writes it only into golden/README.md ("CPU torch.Generator seeded N").
 */
export function goldenNoiseSeed(): number {
  const readme = readFileSync(fixture("golden", "README.md"), "utf8");
  const match = /torch\.Generator seeded (\d+)/.exec(readme);
  if (!match) throw new Error(`${fixture("golden", "README.md")}: no "torch.Generator seeded <seed>" line`);
  return Number(match[1]);
}

/**
 * A number golden/README.md records in the section of golden/<file>.safetensors (the reference
 * calls' hyperparameters live only there), e.g. goldenReadmeNumber("lora_train", /lora_alpha=([\d.e+-]+)/).
 */
export function goldenReadmeNumber(file: string, pattern: RegExp): number {
  const path = fixture("golden", "README.md");
  const readme = readFileSync(path, "utf8");
  const start = readme.indexOf(`## ${file}.safetensors`);
  const end = readme.indexOf("\n## ", start + 1);
  const match = start < 0 ? null : pattern.exec(readme.slice(start, end < 0 ? undefined : end));
  if (!match) throw new Error(`${path}: section ${file}.safetensors has no ${String(pattern)}`);
  return Number(match[1]);
}

/** The AdamW hyperparameters golden/README.md records for golden/<file>.safetensors. */
export function goldenAdamW(file: string): {
  lr: number;
  beta1: number;
  beta2: number;
  weightDecay: number;
  eps: number;
} {
  const num = "([\\d.e+-]+)";
  const n = (label: string) => goldenReadmeNumber(file, new RegExp(`AdamW\\([^\\n]*?${label}${num}`));
  return {
    lr: n("lr="),
    beta1: n("betas=\\("),
    beta2: n("betas=\\([\\d.]+,\\s*"),
    weightDecay: n("wd="),
    eps: n("eps="),
  };
}

/** golden/prompts.json: the tokenizer's special tokens and the prompt table. */
export interface GoldenPrompts {
  pad_token: string;
  pad_token_id: number;
  bos_token_id: number;
  eos_token_id: number;
  model_max_length: number;
  prompts: { index: number; prompt: string; tokens: string[]; ids_untruncated: number[] }[];
}
export const goldenPrompts = (): GoldenPrompts => fixtureJson<GoldenPrompts>("golden", "prompts.json");

/** golden/pipeline_cfg.json: the guided pipeline call behind golden/pipeline_cfg.safetensors. */
export interface GoldenPipelineCall {
  prompt: string;
  negative_prompt: string;
  guidance_scale: number;
  num_inference_steps: number;
  height: number;
  width: number;
  timesteps: number[];
  scheduler_config: Record<string, unknown> & { _class_name: string };
}
export const goldenPipelineCall = (): GoldenPipelineCall =>
  fixtureJson<GoldenPipelineCall>("golden", "pipeline_cfg.json");

/** diffusers' scheduler classes (a config's "_class_name") and the sdtune sampler each one is. */
export const SAMPLER_OF_CLASS: Readonly<Record<string, string>> = {
  DDPMScheduler: "ddpm",
  DDIMScheduler: "ddim",
  PNDMScheduler: "pndm",
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_ancestral",
  DPMSolverMultistepScheduler: "dpm_multistep",
};

/** One component of the reference LoRA in lora/. */
export interface LoraFacts {
  rank: number;
  alpha: number;
  /** Adapted modules (= kohya `.alpha` entries of the component). */
  modules: number;
}

/**
 * The reference LoRA that every file in lora/ describes: ranks and alphas as golden/lora.safetensors
 * stores them, module counts from the kohya file's keys.
 */
export async function loraFixture(): Promise<{ unet: LoraFacts; textEncoder: LoraFacts; total: number }> {
  const g = await golden("lora");
  const header = await inspectSafetensors(fixture("lora", "kohya", "lora.safetensors"));
  const count = (prefix: string): number =>
    header.tensors.filter((t) => t.name.startsWith(prefix) && t.name.endsWith(".alpha")).length;
  const unet = { rank: scalar(g, "unet_lora_rank"), alpha: scalar(g, "unet_lora_alpha"), modules: count("lora_unet_") };
  const textEncoder = {
    rank: scalar(g, "te_lora_rank"),
    alpha: scalar(g, "te_lora_alpha"),
    modules: count("lora_te_"),
  };
  return { unet, textEncoder, total: unet.modules + textEncoder.modules };
}

/** Every tensor of golden/<name>.safetensors. */
export async function golden(name: string): Promise<Map<string, Tensor>> {
  return (await readSafetensors(fixture("golden", `${name}.safetensors`))).tensors;
}

/** A 0-dim (or one-element) golden tensor as a number. */
export function scalar(map: Map<string, Tensor>, key: string): number {
  const t = get(map, key);
  if (t.numel !== 1) throw new Error(`golden tensor "${key}" has ${t.numel} elements, not one`);
  return Number((t.toTypedArray() as Float32Array | BigInt64Array)[0]);
}

export function get(map: Map<string, Tensor>, key: string): Tensor {
  const t = map.get(key);
  if (!t) throw new Error(`golden tensor "${key}" is missing`);
  return t;
}

/** Values of a tensor as float64 numbers (any dtype), copied. */
export async function values(t: Tensor): Promise<Float64Array> {
  const asFloat = t.dtype === "float64" ? t : await t.to({ dtype: "float64" });
  return Float64Array.from(asFloat.toTypedArray() as Float64Array);
}

/**
 * Asserts |actual - expected| <= atol + rtol * |expected| element-wise, with
 * the worst element named in the failure.
 */
export async function expectClose(
  actual: Tensor,
  expected: Tensor,
  tolerance: { atol: number; rtol: number },
  label = "tensor",
): Promise<void> {
  expect(actual.shape, `${label}: shape`).toEqual(expected.shape);
  const a = await values(actual);
  const e = await values(expected);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < e.length; i++) {
    const diff = Math.abs(a[i]! - e[i]!);
    const excess = diff - (tolerance.atol + tolerance.rtol * Math.abs(e[i]!));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(diff))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(
      `${label}: element ${worst} is ${a[worst]} but the reference is ${e[worst]} ` +
        `(|diff| ${Math.abs(a[worst]! - e[worst]!)} > atol ${tolerance.atol} + rtol ${tolerance.rtol}·|ref|)`,
    );
  }
}

/** Tolerances from the fixtures README. */
export const TOL = {
  forward: { atol: 1e-4, rtol: 1e-4 },
  gradient: { atol: 1e-4, rtol: 1e-3 },
  scheduler: { atol: 1e-6, rtol: 1e-5 },
} as const;

/** A fresh temporary folder, removed by the returned cleanup. */
export async function tempDir(prefix = "sdtune-test-"): Promise<{ path: string; cleanup(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}
