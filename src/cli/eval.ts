// `sdtune eval`: CLIP score (torchmetrics semantics), CLIP-T and CLIP-I for image folders
// or for images generated with a base model and LoRAs; writes eval.json, grids and report.html.
import { existsSync } from "node:fs";
import { basename, dirname, extname, resolve } from "node:path";

import {
  applyOverrides,
  evaluate,
  formatStat,
  loadEvalConfigFile,
  type EvaluateOutput,
  type ProgressEvent,
} from "../index.js";
import { interruptSignal, parseCommandArgs, UsageError, type Command, parseLoraSpec } from "./command.js";
import { ProgressBar } from "./progress.js";

const help = [
  "usage: sdtune eval --images DIR[=NAME] [--images DIR2 ...] --out DIR [options] [key=value ...]",
  "       sdtune eval --model M [--lora FILE[:SCALE] ...] --prompt P [--prompt P2 ...] --out DIR [options]",
  "       sdtune eval --config eval.yaml [key=value ...]",
  "",
  "Scores images with CLIP as torchmetrics' CLIPScore does (max(mean 100·cos, 0)), plus CLIP-T and,",
  "with --instance, DreamBooth's CLIP-I; writes eval.json, grids/ and report.html into --out.",
  "",
  "score existing images (each folder is one variant):",
  "  --images DIR[=NAME]   images with prompts from metadata.jsonl (file_name + prompt|text|caption,",
  "                        optional seed), <name>.txt sidecars or PNG parameters; repeatable",
  "  --prompts-file FILE   prompts for images that carry none (one per line or a JSON list), name order;",
  "                        kohya's per-prompt flags (--n, --w, --d, ...) are parsed off ( --prompts: same)",
  "generate first, then score (images go to DIR/images/<variant>/; a rerun keeps those already made):",
  "  --model M             base model folder or hub id; a 'base' variant is generated unless --no-base",
  "  --lora FILE[:SCALE]   one variant per --lora (scale default 1); A:0.8+B:0.5 applies both together",
  "  --prompt P            repeatable;  --negative-prompt P",
  "  --seeds 0,1,2         the same seeds for every variant;  --steps 25",
  "  --sampler NAME        ddim, pndm, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras, ddpm, or as",
  "                        A1111 / ComfyUI / kohya name them (default: the model's scheduler)",
  "  --guidance-scale 7.5  --width W --height H (default: the model's size)  --no-base",
  "common:",
  "  --out DIR             output folder (required unless the config has output_dir)",
  "  --instance DIR        real subject images: adds CLIP-I",
  "  --clip ID|DIR         CLIP model (default openai/clip-vit-large-patch14)",
  "  --runs DIR            training run folders whose metrics.jsonl loss curves go in the report; repeatable",
  "  --title T  --batch-size 32  --grid-cell 256",
  "  --device cpu|cuda     where CLIP and generation run",
  "  --dtype float32|float16|bfloat16   CLIP's and the pipeline's dtype (default float32)",
  "  --config FILE         YAML/JSON eval config; flags and key=value overrides apply on top",
  "  --json                print the summary as JSON",
].join("\n");

export const command: Command = {
  help,
  async run(argv) {
    const { values, positionals } = parseEvalArgs(argv);
    const file = values.config as string | undefined;
    const config = buildConfig(values, positionals, file ? await loadEvalConfigFile(file) : {});
    const json = Boolean(values.json);
    const interrupt = interruptSignal();
    try {
      const output = await evaluate(config, {
        signal: interrupt.signal,
        onProgress: json ? undefined : progressBars(),
      });
      if (json) printJson(output);
      else printTable(output);
      return 0;
    } finally {
      interrupt.dispose();
    }
  },
};

function parseEvalArgs(argv: string[]): { values: Record<string, unknown>; positionals: string[] } {
  const string = { type: "string" } as const;
  const strings = { type: "string", multiple: true } as const;
  const flag = { type: "boolean" } as const;
  return parseCommandArgs(argv, {
    config: string,
    images: strings,
    prompts: string,
    "prompts-file": string,
    model: string,
    lora: strings,
    prompt: strings,
    "negative-prompt": string,
    seeds: string,
    sampler: string,
    steps: string,
    "guidance-scale": string,
    width: string,
    height: string,
    "no-base": flag,
    out: string,
    instance: string,
    clip: string,
    runs: strings,
    title: string,
    "batch-size": string,
    device: string,
    dtype: string,
    "grid-cell": string,
    json: flag,
  });
}

/** One bar per phase and variant. */
function progressBars(): (event: ProgressEvent) => void {
  const bars = new Map<string, ProgressBar>();
  return (event) => {
    const key = `${event.phase}${event.variant ? ` ${event.variant}` : ""}`;
    let bar = bars.get(key);
    if (!bar) {
      bar = new ProgressBar({ label: key, total: event.total, unit: event.phase === "generate" ? "img" : "it" });
      bars.set(key, bar);
    }
    bar.update(event.step);
    if (event.step >= event.total) bar.done();
  };
}

function printJson({ result, files }: EvaluateOutput): void {
  const variants = result.variants.map((v) => ({
    name: v.name,
    images: v.images,
    clipScore: v.summary.clipScore,
    clipT: v.summary.clipT,
    clipI: v.summary.clipI,
  }));
  console.log(JSON.stringify({ report: files.report, evalJson: files.evalJson, variants }, null, 2));
}

function printTable({ result, files }: EvaluateOutput): void {
  const rows = result.variants.map((v) => [
    v.name,
    String(v.images),
    formatStat(v.summary.clipScore, 2),
    formatStat(v.summary.clipT, 4),
    v.summary.clipI ? formatStat(v.summary.clipI, 4) : "–",
  ]);
  const head = ["variant", "images", "CLIP score", "CLIP-T", "CLIP-I"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [head, ...rows]) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join("  "));
  console.log(`\nreport: ${files.report}\nnumbers: ${files.evalJson}`);
  const truncated = result.variants.flatMap((v) => v.truncatedPrompts);
  if (truncated.length) {
    console.error(
      `note: ${new Set(truncated).size} prompt(s) were longer than the CLIP text model and were cut (see eval.json)`,
    );
  }
}

const GENERIC_LORA_NAMES = new Set(["pytorch_lora_weights", "adapter_model", "lora", "model"]);

const number = (value: unknown, name: string): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${String(value)}"`);
  return n;
};

/** One --lora value as a variant: FILE[:SCALE] (or FILE@SCALE), or several joined with "+" applied together. */
function loraVariant(spec: string): { name: string; loras: { path: string; scale: number; name: string }[] } {
  const parts = existsSync(spec) ? [spec] : spec.split("+").filter((p) => p !== "");
  if (parts.length === 0) throw new UsageError(`--lora "${spec}" names no file`);
  const loras = parts.map((part) => {
    const parsed = existsSync(part) ? { path: part } : parseLoraSpec(part);
    const path = parsed.path;
    const scale = parsed.scale ?? 1;
    const stem = basename(path, extname(path));
    // diffusers/peft files share generic names; their folder names the LoRA.
    const name = GENERIC_LORA_NAMES.has(stem) ? basename(dirname(resolve(path))) : stem || path;
    return { path, scale, name };
  });
  return { name: loras.map((l) => l.name).join("+"), loras };
}

/** Variants from --lora values; the same LoRA at several scales gets "@scale" names. */
function loraVariants(specs: string[]): ReturnType<typeof loraVariant>[] {
  const variants = specs.map(loraVariant);
  const count = new Map<string, number>();
  for (const v of variants) count.set(v.name, (count.get(v.name) ?? 0) + 1);
  for (const v of variants) {
    if (count.get(v.name)! > 1) v.name = v.loras.map((l) => `${l.name}@${l.scale}`).join("+");
  }
  return variants;
}

/** Flags and key=value overrides on top of the config file (flags win). */
export function buildConfig(
  values: Record<string, unknown>,
  positionals: string[],
  fileConfig: Record<string, unknown>,
): Record<string, unknown> {
  const overrides = positionals.filter((p) => p.includes("="));
  const stray = positionals.filter((p) => !p.includes("="));
  if (stray.length)
    throw new UsageError(`unexpected argument "${stray[0]}" (use --images DIR, or key=value overrides)`);
  const c: Record<string, unknown> = { ...fileConfig };
  const set = (key: string, value: unknown): void => {
    if (value !== undefined) c[key] = value;
  };
  set("output_dir", values.out);
  set("title", values.title);
  set("clip_model", values.clip);
  set("clip_dtype", values.dtype);
  set("device", values.device);
  set("batch_size", number(values["batch-size"], "batch-size"));
  set("grid_cell", number(values["grid-cell"], "grid-cell"));
  set("instance_images", values.instance);
  set("prompts_file", values["prompts-file"] ?? values.prompts);
  if (values.runs) c.runs = values.runs;
  if (values.images) {
    c.images = (values.images as string[]).map((spec) => {
      const eq = spec.lastIndexOf("=");
      return eq > 0 ? { path: spec.slice(0, eq), name: spec.slice(eq + 1) } : { path: spec };
    });
  }
  const wantsGenerate = values.model !== undefined || values.prompt !== undefined || values.lora !== undefined;
  if (wantsGenerate) {
    const g: Record<string, unknown> = { ...((c.generate as Record<string, unknown> | undefined) ?? {}) };
    const gset = (key: string, value: unknown): void => {
      if (value !== undefined) g[key] = value;
    };
    gset("model", values.model);
    gset("prompts", values.prompt);
    gset("negative_prompt", values["negative-prompt"]);
    gset("sampler", values.sampler);
    gset("steps", number(values.steps, "steps"));
    gset("guidance_scale", number(values["guidance-scale"], "guidance-scale"));
    gset("width", number(values.width, "width"));
    gset("height", number(values.height, "height"));
    if (values["no-base"]) g.include_base = false;
    if (values.seeds !== undefined) {
      g.seeds = String(values.seeds)
        .split(",")
        .map((s) => {
          const n = Number(s.trim());
          if (!Number.isInteger(n) || n < 0) throw new UsageError(`--seeds must be non-negative integers, got "${s}"`);
          return n;
        });
    }
    gset("dtype", values.dtype);
    if (values.lora) g.variants = loraVariants(values.lora as string[]);
    c.generate = g;
  }
  return applyOverrides(c, overrides);
}
