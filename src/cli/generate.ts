// `sdtune generate`: text to image from a diffusers folder or hub id. PNGs carry their
// parameters (AUTOMATIC1111 infotext); files are numbered like AUTOMATIC1111's
// (<5-digit index>-<seed>.png) and written atomically; Ctrl-C cancels cleanly.
import {
  loadPipeline,
  parseBlockWeights,
  promptBatches,
  readPromptSpecs,
  checkGenerateOptions,
  writeImages,
  type GenerateOptions,
  type GenerateResult,
  type ModelDType,
  type PromptSpec,
  type StableDiffusionPipeline,
  type WriteImagesResult,
} from "../index.js";
import { interruptSignal, parseCommandArgs, UsageError, type Command, parseLoraSpec } from "./command.js";
import { ProgressBar } from "./progress.js";

export const command: Command = {
  help: [
    "usage: sdtune generate --model MODEL --prompt TEXT [--prompt TEXT ...] [options]",
    "",
    "  --model ID|DIR|FILE       diffusers Stable Diffusion 1.x/2.x folder, hub id (org/name), or single-file .safetensors",
    "  --prompt TEXT             a prompt (repeatable)",
    "  --prompts-file FILE       one prompt per line (empty lines and lines starting with # are skipped),",
    "                            with kohya's per-prompt flags: --n NEGATIVE --w W --h H --s STEPS --d SEED",
    "                            --l GUIDANCE --ss SAMPLER",
    "  --negative-prompt TEXT    for every prompt (default none)",
    "  --width N, --height N     pixels, multiples of 8 (default: the model's native size)",
    "  --steps N                 inference steps (default 50)",
    "  --guidance-scale X        classifier-free guidance (default 7.5; <= 1 turns it off)",
    "  --sampler NAME            ddim, pndm, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras, ddpm,",
    '                            dpm_multistep, or as A1111 / ComfyUI / kohya name them ("DPM++ 2M Karras",',
    '                            "Euler a", euler_a); default: the model\'s scheduler',
    "  --schedule-type NAME      with --sampler: karras or normal (A1111's Schedule type, ComfyUI's scheduler)",
    "  --seed N                  image i uses seed N + i (default: random; printed per image)",
    "  --num-images N            images per prompt (default 1)",
    "  --batch-size N            images denoised together (default 1)",
    "  --clip-skip N             diffusers' clip_skip: 1 = penultimate layer (AUTOMATIC1111's 2)",
    "  --lora FILE[:SCALE]       apply a LoRA (kohya, diffusers or PEFT file) at SCALE (default 1);",
    "                            repeatable; named after the file in the PNG parameters;",
    "                            FILE:SCALE:lbw=BLOCKS sets per-block weights (AUTOMATIC1111's LoRA",
    "                            Block Weight: a preset such as OUTALL, or 17 / 26 values)",
    "  --out DIR                 output folder (default ./outputs); files <index>-<seed>.png",
    "  --grid                    also write a contact sheet of all images (grid-<index>.png)",
    "  --device auto|cpu|cuda[:N]  (default auto: cuda when a GPU is visible, else cpu, as train)",
    "  --dtype float32|float16|bfloat16   (default float32)",
    "  --variant NAME            weight variant, e.g. fp16 (components without it use plain weights)",
    "  --revision REV            hub branch, tag or commit",
    "  --offline                 use the Hugging Face cache only",
    "  --json                    print the results as JSON (files, seeds, parameters, timings)",
    "",
    "Ctrl-C cancels between steps; nothing is written for a cancelled run.",
  ].join("\n"),
  async run(argv) {
    const values = parseGenerateArgs(argv);
    const request = await generateRequest(values);
    const interrupt = interruptSignal();
    const { signal } = interrupt;
    let pipe: StableDiffusionPipeline | undefined;
    try {
      pipe = await loadWithLoras(values, request.loras, signal);
      const result = await generateAll(pipe, request.batches, signal);
      signal.throwIfAborted();
      const written = await writeImages(result.images, (values.out as string | undefined) ?? "outputs", {
        grid: values.grid === true,
      });
      printResult(result, written, values.json === true);
      return 0;
    } finally {
      pipe?.dispose();
      interrupt.dispose();
    }
  },
};

type Values = Record<string, unknown>;

function parseGenerateArgs(argv: string[]): Values {
  const string = { type: "string" } as const;
  const flag = { type: "boolean" } as const;
  const { values } = parseCommandArgs(
    argv,
    {
      model: string,
      prompt: { type: "string", multiple: true },
      "prompts-file": string,
      "negative-prompt": string,
      width: string,
      height: string,
      steps: string,
      "guidance-scale": string,
      sampler: string,
      "schedule-type": string,
      seed: string,
      "num-images": string,
      "batch-size": string,
      "clip-skip": string,
      lora: { type: "string", multiple: true },
      out: string,
      grid: flag,
      device: string,
      dtype: string,
      variant: string,
      revision: string,
      offline: flag,
      json: flag,
    },
    false,
  );
  if (typeof values.model !== "string") throw new UsageError("--model is required (a diffusers folder or hub id)");
  return values;
}

interface LoraArg {
  path: string;
  scale: number;
  blockWeights?: string;
}

/** Everything that needs no model, checked before anything loads or downloads. */
async function generateRequest(values: Values): Promise<{ loras: LoraArg[]; batches: GenerateOptions[] }> {
  const specs: PromptSpec[] = ((values.prompt as string[] | undefined) ?? []).map((prompt) => ({ prompt }));
  if (typeof values["prompts-file"] === "string") {
    try {
      specs.push(...(await readPromptSpecs(values["prompts-file"])));
    } catch (error) {
      throw new UsageError(`--prompts-file: ${(error as Error).message}`);
    }
  }
  if (specs.length === 0) throw new UsageError("give at least one --prompt (or --prompts-file)");
  const loras = ((values.lora as string[] | undefined) ?? []).map((spec) => {
    const { path, scale, blockWeights } = parseLoraSpec(spec);
    if (blockWeights !== undefined) {
      try {
        parseBlockWeights(blockWeights);
      } catch (error) {
        throw new UsageError(`--lora ${spec}: ${(error as Error).message}`);
      }
    }
    return { path, scale: scale ?? 1, ...(blockWeights !== undefined ? { blockWeights } : {}) };
  });
  const sampler = values.sampler as string | undefined;
  const scheduleType = values["schedule-type"] as string | undefined;
  const checked = {
    width: int(values.width, "--width"),
    height: int(values.height, "--height"),
    steps: int(values.steps, "--steps"),
    numImages: int(values["num-images"], "--num-images") ?? 1,
    batchSize: int(values["batch-size"], "--batch-size"),
    scheduler: sampler,
    scheduleType,
  };
  try {
    checkGenerateOptions(checked);
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/^generate: /, ""));
  }
  const options: GenerateOptions = {
    prompt: [],
    negativePrompt: values["negative-prompt"] as string | undefined,
    ...checked,
    guidanceScale: num(values["guidance-scale"], "--guidance-scale"),
    seed: int(values.seed, "--seed"),
    clipSkip: int(values["clip-skip"], "--clip-skip"),
    onWarning: (m) => console.error(`warning: ${m}`),
  };
  return { loras, batches: promptBatches(specs, options) };
}

async function loadWithLoras(values: Values, loras: LoraArg[], signal: AbortSignal): Promise<StableDiffusionPipeline> {
  let download: ProgressBar | undefined;
  const pipe = await loadPipeline(values.model as string, {
    device: (values.device as string | undefined) ?? "auto",
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
  try {
    for (const lora of loras) {
      const name = await pipe.loadLora(lora.path, { scale: lora.scale, blockWeights: lora.blockWeights, signal });
      const blocks = lora.blockWeights !== undefined ? `, block weights ${lora.blockWeights}` : "";
      console.error(`LoRA ${name} (${lora.path}) at scale ${lora.scale}${blocks}`);
    }
  } catch (error) {
    pipe.dispose();
    throw error;
  }
  return pipe;
}

/** Every batch in order (one per run of prompts with the same settings), as one result. */
async function generateAll(
  pipe: StableDiffusionPipeline,
  batches: GenerateOptions[],
  signal: AbortSignal,
): Promise<GenerateResult> {
  const results: GenerateResult[] = [];
  for (const options of batches) results.push(await generateWithProgress(pipe, options, signal));
  if (results.length === 1) return results[0]!;
  const timings = { ...results[0]!.timings };
  for (const r of results.slice(1)) {
    for (const k of Object.keys(timings) as (keyof typeof timings)[]) timings[k] += r.timings[k];
  }
  return {
    ...results[0]!,
    images: results.flatMap((r) => r.images),
    warnings: results.flatMap((r) => r.warnings),
    timings,
  };
}

async function generateWithProgress(
  pipe: StableDiffusionPipeline,
  options: GenerateOptions,
  signal: AbortSignal,
): Promise<GenerateResult> {
  const prompts = Array.isArray(options.prompt) ? options.prompt.length : 1;
  const total = prompts * (options.numImages ?? 1);
  let bar: ProgressBar | undefined;
  const result = await pipe.generate({
    ...options,
    signal,
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
  return result;
}

function printResult(result: GenerateResult, written: WriteImagesResult, json: boolean): void {
  if (json) {
    const { images, grid } = written;
    console.log(JSON.stringify({ images, grid, sampler: result.sampler, timings: result.timings }, null, 2));
    return;
  }
  for (const image of written.images) console.log(`${image.file}  seed ${image.seed}`);
  if (written.grid) console.log(`${written.grid}  grid of ${result.images.length}`);
  const t = result.timings;
  const n = result.images.length;
  console.error(
    `${n} image(s) in ${t.total.toFixed(2)} s (${(t.total / n).toFixed(2)} s/image; UNet ${t.unet.toFixed(2)} s)`,
  );
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
