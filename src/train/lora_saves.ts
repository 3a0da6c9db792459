// Intermediate LoRAs (save_every_n_steps / save_every_n_epochs): the stage's LoRA as it
// was after step N, written like the final one as `<stage>-step<N>` (outputs.ts), plus
// samples of the validation prompts (or, without validation, the evaluate prompts) with
// the same seeds at each of those steps and at the end, and one comparison grid of them
// (rows: steps; columns: prompt × seed) that the report shows, to pick the best LoRA.
// They are outputs: checkpoint pruning never touches them.
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

import type { StageConfig } from "../config/train.js";
import { writeFileAtomic } from "../io/atomic.js";
import { makeGrid } from "../pipeline/grid.js";
import { validationSamples, type SampleSpec } from "./images.js";
import { writeLoraFiles } from "./outputs.js";
import type { StageLoop } from "./stage_loop.js";
import { savesIntermediate } from "./stage_plan.js";

/** The comparison grid's file inside the stage folder. */
export const COMPARISON_GRID = "lora_comparison.png";

/** After optimizer step `step`: the intermediate LoRA if one is due, and its samples and grid. */
export async function afterSaveStep(loop: StageLoop, step: number): Promise<void> {
  const { stage, onProgress } = loop.ctx;
  const { plan, models } = loop;
  const last = step === plan.totalSteps;
  if (!savesIntermediate(stage) || !models.loraName || !(plan.isSaveStep(step) || last)) return;
  if (plan.isSaveStep(step)) {
    onProgress?.({ phase: "save", stage: stage.name, step, total: plan.totalSteps });
    const snapshot = { models, dataset: loop.dataset, steps: step, totalSteps: plan.totalSteps };
    await writeLoraFiles(snapshot, loop.ctx, loop.dir, `${stage.name}-step${step}`);
  }
  const spec = comparisonSpec(stage);
  if (!spec) return;
  // The loop drew validation samples at this step already when validation was due.
  const validated = stage.validation && (step % stage.validation.every_n_steps === 0 || last);
  if (!validated) {
    onProgress?.({ phase: "validation", stage: stage.name, step, total: plan.totalSteps });
    await validationSamples(models, stage, loop.dir, step, { resolution: loop.resolution, spec });
  }
  // Rows: every intermediate LoRA on disk (also one kept from before a run was extended), and this step.
  const saved = new Set((await listIntermediateLoras(loop.dir, stage.name)).map((l) => l.step));
  const steps = await sampledSteps(loop.dir, (s) => s === step || (s < step && saved.has(s)));
  await writeComparisonGrid(loop.dir, spec, steps, last ? step : undefined);
}

/** The prompts intermediate LoRAs are compared on: validation's, else evaluate's. */
export function comparisonSpec(stage: StageConfig): SampleSpec | undefined {
  if (stage.validation) return stage.validation;
  const e = stage.evaluate;
  if (!e) return undefined;
  const { prompts, negative_prompt, seeds, num_inference_steps, guidance_scale, sampler, width, height } = e;
  return { prompts, negative_prompt, seeds, num_inference_steps, guidance_scale, sampler, width, height };
}

/** Steps with a samples/step-N folder that `keep` accepts, ascending. */
async function sampledSteps(dir: string, keep: (step: number) => boolean): Promise<number[]> {
  const samples = join(dir, "samples");
  if (!existsSync(samples)) return [];
  return (await readdir(samples))
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .filter(keep)
    .sort((a, b) => a - b);
}

/** Rows: each step's samples (a step missing any image is left out); columns: prompt × seed. */
async function writeComparisonGrid(dir: string, spec: SampleSpec, steps: number[], final?: number): Promise<void> {
  const cells = spec.prompts.flatMap((prompt, p) => spec.seeds.map((seed) => ({ prompt, p, seed })));
  const images: Buffer[] = [];
  const rows: string[] = [];
  for (const step of steps) {
    const files = cells.map((c) => join(dir, "samples", `step-${step}`, `prompt${c.p}_seed${c.seed}.png`));
    if (!files.every((f) => existsSync(f))) continue;
    for (const f of files) images.push(await readFile(f));
    rows.push(step === final ? `final (step ${step})` : `step ${step}`);
  }
  if (rows.length === 0) return;
  const columns = cells.map((c) => `${c.prompt} (seed ${c.seed})`);
  const grid = await makeGrid(images, { columns: cells.length, rowLabels: rows, columnLabels: columns });
  await writeFileAtomic(join(dir, COMPARISON_GRID), grid);
  // What the grid shows, for tools (and tests) that read rows and columns without decoding it.
  await writeFileAtomic(
    join(dir, COMPARISON_GRID.replace(/\.png$/, ".json")),
    JSON.stringify({ rows, columns }, null, 2),
  );
}

/** The intermediate LoRAs in a stage folder: step -> kohya file or format folders. */
export async function listIntermediateLoras(dir: string, stage: string): Promise<{ step: number; path: string }[]> {
  const folder = join(dir, "lora");
  if (!existsSync(folder)) return [];
  const name = new RegExp(`^${stage.replace(/[.]/g, "\\.")}-step(\\d+)(\\.safetensors)?$`);
  const found = new Map<number, string>();
  for (const entry of (await readdir(folder)).sort()) {
    const m = name.exec(entry);
    // The kohya file (one file A1111 / ComfyUI load) is listed over the folder of the other formats.
    if (m && (!found.has(Number(m[1])) || m[2])) found.set(Number(m[1]), join(folder, entry));
  }
  return [...found].map(([step, path]) => ({ step, path })).sort((a, b) => a.step - b.step);
}
