// `sdtune generate`: text to image from a diffusers folder or hub id. PNGs carry their
// parameters (AUTOMATIC1111 infotext); files are numbered like AUTOMATIC1111's
// (<5-digit index>-<seed>.png) and written atomically; Ctrl-C cancels cleanly.
import { samplerNames } from "../sched/index.js";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";

import { addPngText } from "../io/png.js";
import { writeFileAtomic } from "../io/atomic.js";
import { makeGrid } from "../eval/grid.js";
import type { ModelDType } from "../models/options.js";
import type { SamplerName } from "../native/index.js";
import { loadPipeline, type StableDiffusionPipeline } from "../pipeline/index.js";
import { interruptSignal, parseCommandArgs, UsageError, type Command, parseLoraSpec } from "./command.js";
import { ProgressBar } from "./progress.js";

export const command: Command = {
  help: [
    "usage: sdtune generate --model MODEL --prompt TEXT [--prompt TEXT ...] [options]",
    "",
    "  --model ID|DIR|FILE       diffusers Stable Diffusion 1.x/2.x folder, hub id (org/name), or single-file .safetensors",
    "  --prompt TEXT             a prompt (repeatable)",
    "  --prompts-file FILE       one prompt per line (empty lines and lines starting with # are skipped)",
    "  --negative-prompt TEXT    for every prompt (default none)",
    "  --width N, --height N     pixels, multiples of 8 (default: the model's native size)",
    "  --steps N                 inference steps (default 50)",
    "  --guidance-scale X        classifier-free guidance (default 7.5; <= 1 turns it off)",
    "  --sampler NAME            ddim, pndm, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras, ddpm,",
    "                            dpm_multistep (default: the model's scheduler)",
    "  --seed N                  image i uses seed N + i (default: random; printed per image)",
    "  --num-images N            images per prompt (default 1)",
    "  --batch-size N            images denoised together (default 1)",
    "  --clip-skip N             diffusers' clip_skip: 1 = penultimate layer (AUTOMATIC1111's 2)",
    "  --lora FILE[:SCALE]       apply a LoRA (kohya, diffusers or PEFT file) at SCALE (default 1);",
    "                            repeatable; named after the file in the PNG parameters",
    "  --out DIR                 output folder (default ./outputs); files <index>-<seed>.png",
    "  --grid                    also write a contact sheet of all images (grid-<index>.png)",
    "  --device cpu|cuda[:N]     (default cpu)",
    "  --dtype float32|float16|bfloat16   (default float32)",
    "  --variant NAME            weight variant, e.g. fp16 (components without it use plain weights)",
    "  --revision REV            hub branch, tag or commit",
    "  --offline                 use the Hugging Face cache only",
    "  --json                    print the results as JSON (files, seeds, parameters, timings)",
    "",
    "Ctrl-C cancels between steps; nothing is written for a cancelled run.",
  ].join("\n"),
  async run(argv) {
    const { values } = parseCommandArgs(
      argv,
      {
        model: { type: "string" },
        prompt: { type: "string", multiple: true },
        "prompts-file": { type: "string" },
        "negative-prompt": { type: "string" },
        width: { type: "string" },
        height: { type: "string" },
        steps: { type: "string" },
        "guidance-scale": { type: "string" },
        sampler: { type: "string" },
        seed: { type: "string" },
        "num-images": { type: "string" },
        "batch-size": { type: "string" },
        "clip-skip": { type: "string" },
        lora: { type: "string", multiple: true },
        out: { type: "string" },
        grid: { type: "boolean" },
        device: { type: "string" },
        dtype: { type: "string" },
        variant: { type: "string" },
        revision: { type: "string" },
        offline: { type: "boolean" },
        json: { type: "boolean" },
      },
      false,
    );
    if (typeof values.model !== "string") throw new UsageError("--model is required (a diffusers folder or hub id)");
    const prompts = [...((values.prompt as string[] | undefined) ?? [])];
    if (typeof values["prompts-file"] === "string") prompts.push(...(await readPrompts(values["prompts-file"])));
    if (prompts.length === 0) throw new UsageError("give at least one --prompt (or --prompts-file)");
    const loras = ((values.lora as string[] | undefined) ?? []).map((spec) => {
      const { path, scale } = parseLoraSpec(spec);
      return { path, scale: scale ?? 1 };
    });

    // What needs no model is checked before anything loads or downloads.
    const numImages = int(values["num-images"], "--num-images") ?? 1;
    if (numImages < 1) throw new UsageError(`--num-images must be at least 1 (got ${numImages})`);
    for (const key of ["width", "height"] as const) {
      const v = int(values[key], `--${key}`);
      if (v !== undefined && (v < 8 || v % 8 !== 0)) {
        throw new UsageError(
          `${key} ${v} is not a multiple of 8; use ${Math.max(8, Math.floor(v / 8) * 8)} or ${Math.ceil(Math.max(v, 1) / 8) * 8}`,
        );
      }
    }
    const steps = int(values.steps, "--steps");
    if (steps !== undefined && steps < 1) throw new UsageError(`--steps must be at least 1 (got ${steps})`);
    if (typeof values.sampler === "string" && !(samplerNames() as readonly string[]).includes(values.sampler)) {
      throw new UsageError(`unknown sampler "${values.sampler}"; valid samplers: ${samplerNames().join(", ")}`);
    }

    const interrupt = interruptSignal();
    const { signal } = interrupt;
    let pipe: StableDiffusionPipeline | undefined;
    try {
      let download: ProgressBar | undefined;
      pipe = await loadPipeline(values.model, {
        device: values.device as string | undefined,
        dtype: values.dtype as ModelDType | undefined,
        variant: values.variant as string | undefined,
        revision: values.revision as string | undefined,
        offline: values.offline === true ? true : undefined,
        signal,
        onWarning: (m) => console.error(`warning: ${m}`),
        onProgress: (e) => {
          if (e.phase !== "download") return;
          download ??= new ProgressBar({ label: "download", total: e.total, unit: "B" });
          download.update(e.step);
        },
      });
      download?.done();
      for (const lora of loras) {
        const name = await pipe.loadLora(lora.path, { scale: lora.scale, signal });
        console.error(`LoRA ${name} (${lora.path}) at scale ${lora.scale}`);
      }

      const total = prompts.length * numImages;
      let bar: ProgressBar | undefined;
      const result = await pipe.generate({
        prompt: prompts,
        negativePrompt: values["negative-prompt"] as string | undefined,
        width: int(values.width, "--width"),
        height: int(values.height, "--height"),
        steps,
        guidanceScale: num(values["guidance-scale"], "--guidance-scale"),
        scheduler: values.sampler as SamplerName | undefined,
        seed: int(values.seed, "--seed"),
        numImages,
        batchSize: int(values["batch-size"], "--batch-size"),
        clipSkip: int(values["clip-skip"], "--clip-skip"),
        signal,
        onWarning: (m) => console.error(`warning: ${m}`),
        onProgress: (e) => {
          if (e.phase !== "denoise") return;
          bar ??= new ProgressBar({
            label: `generate ${total} image${total > 1 ? "s" : ""}`,
            total: e.total,
            unit: "step",
          });
          bar.update(e.step);
        },
      });
      bar?.done();
      signal.throwIfAborted();

      const out = resolve((values.out as string | undefined) ?? "outputs");
      let index = await nextIndex(out);
      const files: { file: string; seed: number; prompt: string; parameters: string }[] = [];
      for (const image of result.images) {
        const file = join(out, `${String(index++).padStart(5, "0")}-${image.seed}.png`);
        await writeFileAtomic(file, image.png!);
        files.push({ file, seed: image.seed, prompt: image.prompt, parameters: image.parameters });
        if (!values.json) console.log(`${file}  seed ${image.seed}`);
      }
      let grid: string | undefined;
      if (values.grid && result.images.length > 1) {
        const columns = Math.ceil(Math.sqrt(result.images.length));
        const sheet = await makeGrid(
          result.images.map((i) => i.png!),
          { columns },
        );
        grid = join(out, `grid-${String(index - 1).padStart(5, "0")}.png`);
        await writeFileAtomic(grid, addPngText(sheet, { parameters: result.images[0]!.parameters }));
        if (!values.json) console.log(`${grid}  grid of ${result.images.length}`);
      }
      if (values.json) {
        console.log(JSON.stringify({ images: files, grid, sampler: result.sampler, timings: result.timings }, null, 2));
      } else {
        const t = result.timings;
        console.error(
          `${result.images.length} image(s) in ${t.total.toFixed(2)} s (${(t.total / result.images.length).toFixed(2)} s/image; UNet ${t.unet.toFixed(2)} s)`,
        );
      }
      return 0;
    } finally {
      pipe?.dispose();
      interrupt.dispose();
    }
  },
};

async function readPrompts(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new UsageError(`--prompts-file ${file}: ${(error as Error).message}`);
  }
  const prompts = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  if (prompts.length === 0) throw new UsageError(`--prompts-file ${file} holds no prompts`);
  return prompts;
}

function int(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== "string" || value.trim() === "" || !Number.isSafeInteger(n)) {
    throw new UsageError(`${flag} expects an integer (got "${String(value)}")`);
  }
  return n;
}

function num(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== "string" || value.trim() === "" || !Number.isFinite(n)) {
    throw new UsageError(`${flag} expects a number (got "${String(value)}")`);
  }
  return n;
}

/** The index after the highest "<NNNNN>-..." file already in `dir` (0 for a new folder). */
async function nextIndex(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let next = 0;
  for (const name of names) {
    const m = /^(?:grid-)?(\d{5,})-?/.exec(name);
    if (m) next = Math.max(next, Number(m[1]) + 1);
  }
  return next;
}
