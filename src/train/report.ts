// The run's report.html: loss and learning-rate curves (vega, rendered to SVG),
// each stage's outputs, its latest validation grid and a link to its evaluation.
// Self-contained apart from images beside it; rewritten after every stage, and during one
// after each validation and checkpoint (then it says which step the stage is at).
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join, relative } from "node:path";

import { trainingCharts } from "../eval/charts.js";
import { evalReportHref, runEvalDir } from "../eval/hooks.js";
import { escapeHtml, promptListHtml } from "../eval/report.js";
import { readRunCurves } from "../eval/runs.js";
import { writeFileAtomic } from "../io/atomic.js";
import type { TrainConfig } from "../config/train.js";
import { COMPARISON_GRID, listIntermediateLoras } from "./lora_saves.js";
import type { StageRecord } from "./outputs.js";
import { stageDir } from "./stage.js";

export async function writeTrainingReport(
  runDir: string,
  config: TrainConfig,
  records: StageRecord[],
  /** Written during training: the stage in progress and its step. */
  live?: { stage: string; step: number; total: number },
): Promise<string> {
  const path = join(runDir, "report.html");
  const rel = (p: string): string => relative(runDir, p).split("\\").join("/");
  const charts = existsSync(join(runDir, "metrics.jsonl")) ? await trainingCharts(await readRunCurves([runDir])) : {};
  const sections: string[] = [];
  for (const stage of config.stages) {
    const record = records.find((r) => r.name === stage.name);
    const parts = [`<h2>Stage “${escapeHtml(stage.name)}”</h2>`];
    parts.push(
      `<p>${escapeHtml(stage.method)} · UNet ${escapeHtml(stage.train_unet)} · text encoder ${escapeHtml(stage.train_text_encoder)} · ` +
        `${record ? `${record.steps} steps, last loss ${Number.isFinite(record.lastLoss) ? record.lastLoss.toFixed(5) : "n/a"}` : live?.stage === stage.name ? `training: step ${live.step} of ${live.total}` : "not finished"}</p>`,
    );
    if (record) {
      const items = Object.entries(record.loraFiles).map(
        ([format, file]) =>
          `<li>LoRA (${escapeHtml(format)}): <a href="${escapeHtml(rel(file))}">${escapeHtml(rel(file))}</a></li>`,
      );
      if (record.fullModel) items.push(`<li>model: <code>${escapeHtml(rel(record.fullModel))}</code></li>`);
      parts.push(`<ul>${items.join("")}</ul>`);
    }
    parts.push(...(await intermediateLoras(stageDir(runDir, stage.name), stage.name, rel)));
    const grid = await latestValidationGrid(stageDir(runDir, stage.name));
    if (grid) {
      parts.push(
        `<figure><img src="${escapeHtml(rel(grid.file))}" alt="validation samples"><figcaption>validation samples at step ${grid.step}</figcaption></figure>`,
      );
    }
    const prompts = stage.validation?.prompts ?? [];
    if (prompts.length) {
      parts.push(`<p>Validation prompts (grid rows):</p>${promptListHtml(prompts, `prompts-${stage.name}`)}`);
    }
    const href = evalReportHref(path, runEvalDir(runDir, stage.name));
    if (href) parts.push(`<p><a href="${escapeHtml(href)}">Evaluation report</a></p>`);
    sections.push(`<section>${parts.join("\n")}</section>`);
  }
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sdtune training report</title>
${live ? '<meta http-equiv="refresh" content="60">' : ""}
<link rel="icon" href="data:,">
<style>body{font:14px system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}img{max-width:100%;image-rendering:pixelated}
figure{margin:1em 0}section{border-top:1px solid #ddd;margin-top:1.5em}code{background:#f4f4f4;padding:0 .2em}</style></head>
<body><h1>Training report</h1>
<p>model <code>${escapeHtml(config.model)}</code> · output <code>${escapeHtml(runDir)}</code> · seed ${config.seed}</p>
${charts.loss ? `<div class="chart">${charts.loss}</div>` : ""}
${charts.lr ? `<div class="chart">${charts.lr}</div>` : ""}
${sections.join("\n")}
</body></html>
`;
  await writeFileAtomic(path, html);
  return path;
}

/** The intermediate LoRAs (save_every_n_steps / epochs) and their comparison grid. */
async function intermediateLoras(dir: string, stage: string, rel: (p: string) => string): Promise<string[]> {
  const saved = await listIntermediateLoras(dir, stage);
  if (saved.length === 0) return [];
  const links = saved.map(
    (s) => `<li>step ${s.step}: <a href="${escapeHtml(rel(s.path))}">${escapeHtml(rel(s.path))}</a></li>`,
  );
  const parts = [`<p>Intermediate LoRAs:</p><ul>${links.join("")}</ul>`];
  const grid = join(dir, COMPARISON_GRID);
  if (existsSync(grid)) {
    parts.push(
      `<figure><img src="${escapeHtml(rel(grid))}" alt="intermediate LoRAs compared"><figcaption>` +
        "each intermediate LoRA (rows) on the same prompts and seeds (columns), to pick the best one</figcaption></figure>",
    );
  }
  return parts;
}

async function latestValidationGrid(dir: string): Promise<{ file: string; step: number } | undefined> {
  const samples = join(dir, "samples");
  if (!existsSync(samples)) return undefined;
  const steps = (await readdir(samples))
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  for (const step of steps) {
    const file = join(samples, `step-${step}`, "grid.png");
    if (existsSync(file)) return { file, step };
  }
  return undefined;
}
