// loadPipeline + generate on the tiny fixture pipeline: golden parity with diffusers'
// StableDiffusionPipeline (golden/pipeline_cfg), seeds, PNG parameters, bad input,
// cancellation, hub ids through the loopback hub, variants, layouts, saving.
import { chmod, cp, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { addPngText, readPngText } from "../src/io/png.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { resolveWeightFiles } from "../src/models/files.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { native, type Tensor } from "../src/native/index.js";
import { generateImages } from "../src/pipeline/generate.js";
import { loadPipeline, savePipeline, StableDiffusionPipeline } from "../src/pipeline/index.js";
import { createGenerator } from "../src/sched/index.js";
import { tensorFrom } from "../src/tensor.js";
import {
  expectClose,
  fixture,
  fixtureJson,
  get,
  golden,
  goldenPipelineCall,
  SAMPLER_OF_CLASS,
  tempDir,
  values,
} from "./helpers/fixtures.js";
import { startHubServer } from "./helpers/hub_server.js";

const SD = fixture("tiny-sd");
/** The fixtures README's tolerance for multi-step loops. */
const LOOP = { atol: 1e-4, rtol: 1e-3 };

let pipe: StableDiffusionPipeline;
let tmp: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  pipe = await loadPipeline(SD);
  tmp = await tempDir("sdtune-pipeline-");
});
afterAll(async () => {
  pipe.dispose();
  await tmp.cleanup();
});

/** A tensor the native loop captured (generateImages' debug option). */
function cap(captured: Record<string, Tensor> | undefined, key: string): Tensor {
  const t = captured?.[key];
  if (!t) throw new Error(`captured tensor "${key}" is missing`);
  return t;
}

/** Copies a (read-only) fixture folder into a writable one. */
async function copyFixture(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true });
  const walk = async (path: string): Promise<void> => {
    const info = await stat(path);
    await chmod(path, info.mode | 0o200);
    if (info.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(to);
}

// Sizes from the fixture set: the golden call's image size and the models' configs.
const CALL = goldenPipelineCall();
const [W, H] = [CALL.width, CALL.height];
const VAE_CONFIG = fixtureJson<{ latent_channels: number; block_out_channels: number[] }>(
  "tiny-sd",
  "vae",
  "config.json",
);
const LATENT_C = VAE_CONFIG.latent_channels;
const FACTOR = 2 ** (VAE_CONFIG.block_out_channels.length - 1);
/** One image's latents: [1, channels, H / factor, W / factor]. */
const LATENT_SHAPE = [1, LATENT_C, H / FACTOR, W / FACTOR];
const LATENT_SIZE = LATENT_SHAPE.reduce((a, b) => a * b, 1);
const TE_CONFIG = fixtureJson<{ num_hidden_layers: number; hidden_size: number }>(
  "tiny-sd",
  "text_encoder",
  "config.json",
);

/** A quick generation on the tiny model (the golden size, few steps). */
const quick = { prompt: "a tiny red robot", width: W, height: H, steps: 3, scheduler: "ddim" } as const;

describe("golden parity with diffusers StableDiffusionPipeline (pipeline_cfg)", () => {
  it("matches every step of the CFG loop, the decoded image and the output", async () => {
    const cfg = goldenPipelineCall();
    const g = await golden("pipeline_cfg");
    const result = await generateImages(
      pipe.context(),
      {
        prompt: cfg.prompt,
        negativePrompt: cfg.negative_prompt,
        guidanceScale: cfg.guidance_scale,
        steps: cfg.num_inference_steps,
        width: cfg.width,
        height: cfg.height,
        // e.g. DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler: SAMPLER_OF_CLASS[String(cfg.scheduler_config._class_name)] as "ddim",
        latents: get(g, "latents_init"),
        outputType: "tensor",
        returnLatents: true,
      },
      { capture: true },
    );
    const c = result.captured!;
    // Tokens: row 0 negative prompt, row 1 prompt (the row order of the batched UNet call).
    const ids = pipe.tokenizer.encodeIds([cfg.negative_prompt, cfg.prompt]).ids.flat();
    expect(ids).toEqual([...(get(g, "input_ids_negative_then_prompt").toTypedArray() as BigInt64Array)].map(Number));
    await expectClose(cap(c, "prompt_embeds"), get(g, "prompt_embeds"), LOOP, "prompt_embeds");
    await expectClose(cap(c, "negative_prompt_embeds"), get(g, "negative_prompt_embeds"), LOOP, "negative embeds");
    expect([...(await values(cap(c, "timesteps")))]).toEqual(cfg.timesteps);
    await expectClose(cap(c, "unet_input"), get(g, "unet_input"), LOOP, "unet_input");
    await expectClose(cap(c, "noise_pred_raw"), get(g, "noise_pred_raw"), LOOP, "noise_pred_raw");
    await expectClose(cap(c, "noise_pred_guided"), get(g, "noise_pred_guided"), LOOP, "noise_pred_guided");
    const perStep = get(g, "latents_per_step");
    await expectClose(cap(c, "latents_per_step").reshape(perStep.shape), perStep, LOOP, "latents_per_step");
    await expectClose(result.latents!, get(g, "final_latents"), LOOP, "final_latents");
    await expectClose(cap(c, "decoded"), get(g, "decoded"), LOOP, "decoded");
    await expectClose(result.tensor!, get(g, "image_np"), LOOP, "image_np");
    expect(result.images.map((i) => [i.width, i.height])).toEqual([[cfg.width, cfg.height]]);
  });

  it("resolves the golden sampler from the pipeline's scheduler config as diffusers' from_config does", async () => {
    const cfg = goldenPipelineCall();
    const { createScheduler } = await import("../src/sched/index.js");
    const name = SAMPLER_OF_CLASS[String(cfg.scheduler_config._class_name)] as "ddim";
    const scheduler = createScheduler(name, pipe.schedulerConfig);
    for (const [key, value] of Object.entries(cfg.scheduler_config)) {
      if (!key.startsWith("_") && key in scheduler.config) expect(scheduler.config[key], key).toEqual(value);
    }
    scheduler.dispose();
  });
});

describe("seeds", () => {
  it("draws each image's initial latents from its own CPU generator (randn_tensor), seed + i", async () => {
    const r = await generateImages(
      pipe.context(),
      { ...quick, seed: 1234, numImages: 2, batchSize: 2 },
      { capture: true },
    );
    expect(r.images.map((i) => i.seed)).toEqual([1234, 1235]);
    const input = cap(r.captured!, "unet_input"); // [steps, 2 * 2, C, h, w]: negative rows, then prompt rows
    const first = await values(input);
    const per = LATENT_SIZE;
    for (const [row, seed] of [
      [0, 1234],
      [1, 1235],
    ] as const) {
      const expected = await values(createGenerator(seed).randn(LATENT_SHAPE)); // DDIM: init_noise_sigma = 1
      expect(first.slice(row * per, (row + 1) * per)).toEqual(expected);
      expect(first.slice((row + 2) * per, (row + 3) * per)).toEqual(expected);
    }
  });

  it("gives identical PNG bytes for the same seed, and an image depends only on its seed", async () => {
    const a = await pipe.generate({ ...quick, seed: 42, numImages: 2 });
    const b = await pipe.generate({ ...quick, seed: 42, numImages: 2 });
    expect(a.images[0]!.png!.equals(b.images[0]!.png!)).toBe(true);
    expect(a.images[1]!.png!.equals(b.images[1]!.png!)).toBe(true);
    expect(a.images[0]!.png!.equals(a.images[1]!.png!)).toBe(false);
    const alone = await pipe.generate({ ...quick, seed: 43 });
    expect(alone.images[0]!.png!.equals(a.images[1]!.png!)).toBe(true);
    const listed = await pipe.generate({ ...quick, seed: [43, 42], numImages: 2 });
    expect(listed.images[0]!.png!.equals(a.images[1]!.png!)).toBe(true);
  });

  it("reports random seeds that reproduce the images", async () => {
    const r = await pipe.generate({ ...quick, numImages: 2 });
    const [s0, s1] = r.images.map((i) => i.seed);
    expect(Number.isSafeInteger(s0) && s1 === s0! + 1).toBe(true);
    const again = await pipe.generate({ ...quick, seed: s0 });
    expect(again.images[0]!.png!.equals(r.images[0]!.png!)).toBe(true);
  });

  it("keeps per-image noise in ancestral steps whatever the batch size", async () => {
    const opts = { ...quick, scheduler: "euler_ancestral", seed: 9, numImages: 3, outputType: "tensor" } as const;
    const one = await pipe.generate({ ...opts, batchSize: 1 });
    const three = await pipe.generate({ ...opts, batchSize: 3 });
    await expectClose(three.tensor!, one.tensor!, { atol: 1e-5, rtol: 1e-4 }, "batch 3 vs batch 1");
  });
});

describe("outputs", () => {
  it("writes the generation parameters into each PNG (AUTOMATIC1111 infotext)", async () => {
    const r = await pipe.generate({ ...quick, negativePrompt: "blurry", seed: 5, guidanceScale: 6, clipSkip: 1 });
    const image = r.images[0]!;
    const text = readPngText(image.png!).parameters!;
    expect(text).toBe(image.parameters);
    expect(text.split("\n")).toEqual([
      "a tiny red robot",
      "Negative prompt: blurry",
      expect.stringMatching(
        new RegExp(
          `^Steps: 3, Sampler: DDIM, CFG scale: 6, Seed: 5, Size: ${W}x${H}, Model hash: [0-9a-f]{10}, Model: tiny-sd, Clip skip: 2, Version: sdtune `,
        ),
      ),
    ]);
    // Re-tagging replaces the chunk (sdtune eval writes its own parameters over these).
    const retagged = addPngText(image.png!, { parameters: "edited" });
    expect(readPngText(retagged).parameters).toBe("edited");
    expect(retagged.toString("latin1").split("tEXtparameters").length).toBe(2);
    const meta = await (await import("sharp")).default(image.png!).metadata();
    expect([meta.width, meta.height, meta.channels]).toEqual([W, H, 3]);
  });

  it("returns latents only, or float pixels that match the PNG", async () => {
    const latent = await pipe.generate({ ...quick, seed: 3, outputType: "latent" });
    expect(latent.latents!.shape).toEqual(LATENT_SHAPE);
    expect(latent.images[0]!.png).toBeUndefined();
    const floats = await pipe.generate({ ...quick, seed: 3, outputType: "tensor", returnLatents: true });
    expect(native().ops.maxAbsDiff(floats.latents!, latent.latents!)).toBe(0);
    const png = await pipe.generate({ ...quick, seed: 3 });
    const sharp = (await import("sharp")).default;
    const pixels = await sharp(png.images[0]!.png!).raw().toBuffer();
    // numpy_to_pil: (x * 255).round() in float32, half to even
    const roundHalfEven = (x: number): number => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x));
    const expected = Array.from(await values(floats.tensor!), (v) => roundHalfEven(Math.fround(v * 255)));
    expect([...pixels]).toEqual(expected);
  });

  it("turns CFG off at guidanceScale <= 1 (one UNet row per image) and rescales guidance", async () => {
    const off = await generateImages(pipe.context(), { ...quick, seed: 1, guidanceScale: 1 }, { capture: true });
    expect(cap(off.captured!, "noise_pred_raw").shape).toEqual([3, ...LATENT_SHAPE]);
    expect(off.images[0]!.parameters).not.toMatch(/Negative prompt/);
    // guidance_rescale = 1: the guided prediction takes the text-conditioned one's std.
    const r = await generateImages(pipe.context(), { ...quick, seed: 1, guidanceRescale: 1 }, { capture: true });
    const n = LATENT_SIZE;
    const raw = await values(cap(r.captured!, "noise_pred_raw")); // [3, 2, n]
    const guided = await values(cap(r.captured!, "noise_pred_guided")); // [3, 1, n]
    const std = (a: Float64Array): number => {
      const mean = a.reduce((s, v) => s + v, 0) / a.length;
      return Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / (a.length - 1));
    };
    for (let step = 0; step < 3; step++) {
      const cond = raw.slice((step * 2 + 1) * n, (step * 2 + 2) * n);
      expect(std(guided.slice(step * n, (step + 1) * n))).toBeCloseTo(std(cond), 5);
    }
  });

  it("reports progress per step and per decoded image, and timings", async () => {
    const events: string[] = [];
    const r = await pipe.generate({
      ...quick,
      numImages: 2,
      seed: 1,
      onProgress: (e) => events.push(`${e.phase} ${e.step}/${e.total}`),
    });
    for (let i = 0; i < 100 && events.length < 8; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(events).toEqual([...[1, 2, 3, 4, 5, 6].map((s) => `denoise ${s}/6`), "decode 1/2", "decode 2/2"]);
    expect(r.timings.unet).toBeGreaterThan(0);
    expect(r.timings.denoise).toBeGreaterThanOrEqual(r.timings.unet);
    expect(r.timings.total).toBeGreaterThanOrEqual(r.timings.denoise + r.timings.decode);
  });
});

describe("LoRA adapters", () => {
  const kohya = fixture("lora", "kohya", "lora.safetensors");

  it("generates with a LoRA, writes it into the parameters, and returns to the base model", async () => {
    const base = await pipe.generate({ ...quick, seed: 21 });
    const name = await pipe.loadLora(kohya, { scale: 0.5 });
    expect(name).toBe("lora");
    const withLora = await pipe.generate({ ...quick, seed: 21 });
    expect(withLora.images[0]!.parameters.split("\n")[0]).toBe("a tiny red robot <lora:lora:0.5>");
    expect(withLora.images[0]!.parameters).toMatch(/Lora scales: "lora: 0.5"/);
    const diff = native().ops.maxAbsDiff(
      (await pipe.generate({ ...quick, seed: 21, outputType: "latent" })).latents!,
      (await generateImages({ ...pipe.context(), loras: {} }, { ...quick, seed: 21, outputType: "latent" })).latents!,
    );
    expect(diff).toBe(0); // same models: the adapters are inside them
    await pipe.setAdapters([]);
    expect(pipe.loras).toEqual({});
    const off = await pipe.generate({ ...quick, seed: 21 });
    expect(off.images[0]!.png!.equals(base.images[0]!.png!)).toBe(true);
    await pipe.setAdapters(["lora"], [0.5]);
    const again = await pipe.generate({ ...quick, seed: 21 });
    expect(again.images[0]!.png!.equals(withLora.images[0]!.png!)).toBe(true);
    expect(again.images[0]!.png!.equals(base.images[0]!.png!)).toBe(false);
    await pipe.unloadLora("lora");
    expect((await pipe.generate({ ...quick, seed: 21 })).images[0]!.png!.equals(base.images[0]!.png!)).toBe(true);
  });
});

describe("bad input", () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["width", { width: 20 }, /generate: width 20 is not a multiple of 8; use 16 or 24/],
    ["height", { height: 4 }, /generate: height 4 is not a multiple of 8; use 8$/],
    ["steps", { steps: 0 }, /generate: steps must be an integer >= 1 \(got 0\)/],
    [
      "sampler",
      { scheduler: "lms" },
      /unknown sampler "lms"; valid samplers: ddpm, ddim, pndm, euler, euler_ancestral/,
    ],
    ["empty prompt list", { prompt: [] }, /the prompt list is empty/],
    ["numImages", { numImages: 0 }, /numImages must be an integer >= 1 \(got 0\)/],
    ["negatives", { prompt: ["a", "b"], negativePrompt: ["x"] }, /1 negative prompts for 2 prompts/],
    ["seed list", { seed: [1, 2] }, /2 seeds for 1 image\(s\)/],
    ["negative seed", { seed: -1 }, /seed must be a non-negative safe integer/],
    ["guidance", { guidanceScale: Number.NaN }, /guidanceScale must be a finite number/],
    [
      "clip skip",
      { clipSkip: TE_CONFIG.num_hidden_layers + 1 },
      new RegExp(`clipSkip ${TE_CONFIG.num_hidden_layers + 1} must be in \\[0, ${TE_CONFIG.num_hidden_layers}\\]`),
    ],
    ["output type", { outputType: "jpeg" }, /outputType "jpeg"/],
    [
      "sampler option",
      { schedulerOptions: { eta: 0.5 }, scheduler: "euler" },
      /scheduler option "eta" does not apply to the euler sampler/,
    ],
  ];
  for (const [name, extra, message] of cases) {
    it(`refuses a bad ${name}`, async () => {
      await expect(pipe.generate({ ...quick, ...extra } as never)).rejects.toThrow(message);
    });
  }

  it("refuses latents of the wrong shape, naming the expected one", async () => {
    const [, c, h, w] = LATENT_SHAPE as [number, number, number, number];
    const latents = tensorFrom(new Float32Array(c * h * (w + 1)), [1, c, h, w + 1]);
    await expect(pipe.generate({ ...quick, latents })).rejects.toThrow(
      `latents must be [1, ${c}, ${h}, ${w}] (images, channels, height / ${FACTOR}, width / ${FACTOR}) ` +
        `for 1 image(s) of ${W}x${H}; got [1, ${c}, ${h}, ${w + 1}]`,
    );
  });

  it("warns with the truncated text of a prompt longer than the tokenizer's length", async () => {
    const warnings: string[] = [];
    const max = pipe.tokenizer.maxLength;
    // max + 4 content tokens (one per word) + BOS + EOS; max - 2 fit, the last 6 are dropped.
    const long = `${"cat ".repeat(max + 3)}dog`;
    const r = await pipe.generate({ ...quick, prompt: long, steps: 1, onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([
      `prompt 0 is longer than ${max} tokens (${max + 6}); CLIP drops the rest: "cat cat cat cat cat dog"`,
    ]);
    expect(r.warnings).toEqual(warnings);
  });
});

describe("cancellation", () => {
  it("stops mid-loop with an AbortError and keeps working afterwards", async () => {
    const controller = new AbortController();
    const steps: number[] = [];
    const run = pipe.generate({
      ...quick,
      steps: 200,
      signal: controller.signal,
      onProgress: (e) => {
        steps.push(e.step);
        if (e.step >= 2) controller.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ name: "AbortError" });
    expect(steps.length).toBeGreaterThan(0);
    expect(Math.max(...steps)).toBeLessThan(200);
    const pre = new AbortController();
    pre.abort();
    await expect(pipe.generate({ ...quick, signal: pre.signal })).rejects.toMatchObject({ name: "AbortError" });
    const after = await pipe.generate({ ...quick, seed: 42 });
    expect(after.images[0]!.png!.length).toBeGreaterThan(0);
  });
});

describe("loading", () => {
  it("loads a hub id through the loopback hub and generates what the local folder does", async () => {
    const server = await startHubServer({ repos: [{ id: "tiny/sd", dir: SD }] });
    try {
      const events: string[] = [];
      const hubPipe = await loadPipeline("tiny/sd", {
        endpoint: server.endpoint,
        cacheDir: join(tmp.path, "hub"),
        token: false,
        onProgress: (e) => events.push(e.phase),
      });
      expect(hubPipe.name).toBe("tiny/sd");
      expect(events).toContain("download");
      expect(events.filter((p) => p === "load")).toHaveLength(5);
      const fromHub = await hubPipe.generate({ ...quick, seed: 8, outputType: "tensor" });
      const local = await pipe.generate({ ...quick, seed: 8, outputType: "tensor" });
      expect(native().ops.maxAbsDiff(fromHub.tensor!, local.tensor!)).toBe(0);
      expect(fromHub.images[0]!.parameters).toMatch(/Model: tiny\/sd/);
      hubPipe.dispose();
      hubPipe.dispose(); // idempotent
      expect(hubPipe.unet.disposed && hubPipe.vae.disposed && hubPipe.textEncoder.disposed).toBe(true);
      await expect(hubPipe.generate(quick)).rejects.toThrow(/after dispose/);
    } finally {
      await server.close();
    }
  });

  it("falls back per component to plain weights when a variant is missing, and reads variant shard indexes", async () => {
    const dir = join(tmp.path, "variants");
    await copyFixture(SD, dir);
    // unet: an fp16 file; vae: fp16 shards under diffusers' index name; text_encoder: plain only.
    const unet = await readSafetensors(join(SD, "unet", "diffusion_pytorch_model.safetensors"));
    const half = new Map<string, Tensor>();
    for (const [name, t] of unet.tensors) half.set(name, await t.to({ dtype: "float16" }));
    await writeSafetensors(join(dir, "unet", "diffusion_pytorch_model.fp16.safetensors"), half);
    const vae = await readSafetensors(join(SD, "vae", "diffusion_pytorch_model.safetensors"));
    const names = [...vae.tensors.keys()];
    const shards = [names.slice(0, 10), names.slice(10)];
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      const file = `diffusion_pytorch_model.fp16-0000${i + 1}-of-00002.safetensors`;
      const part = new Map<string, Tensor>();
      for (const name of shard) {
        part.set(name, await vae.tensors.get(name)!.to({ dtype: "float16" }));
        weightMap[name] = file;
      }
      await writeSafetensors(join(dir, "vae", file), part);
    }
    await writeFile(
      join(dir, "vae", "diffusion_pytorch_model.safetensors.index.fp16.json"),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    await rm(join(dir, "vae", "diffusion_pytorch_model.safetensors"));
    expect(resolveWeightFiles(join(dir, "vae"), { variant: "fp16" })).toHaveLength(2);

    const warnings: string[] = [];
    const p = await loadPipeline(dir, { variant: "fp16", onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([
      expect.stringMatching(/text_encoder: no "fp16" variant weights .*using model\.safetensors instead/),
    ]);
    const r = await p.generate({ ...quick, seed: 8, outputType: "tensor" });
    const ref = await pipe.generate({ ...quick, seed: 8, outputType: "tensor" });
    await expectClose(r.tensor!, ref.tensor!, { atol: 0.05, rtol: 0 }, "fp16 weights"); // rounded weights
    p.dispose();
    // The older index name (<stem>.<variant>.safetensors.index.json) still resolves.
    await cp(join(dir, "vae", "diffusion_pytorch_model.safetensors.index.fp16.json"), join(dir, "vae", "old.json"));
    await rm(join(dir, "vae", "diffusion_pytorch_model.safetensors.index.fp16.json"));
    await cp(join(dir, "vae", "old.json"), join(dir, "vae", "diffusion_pytorch_model.fp16.safetensors.index.json"));
    expect(resolveWeightFiles(join(dir, "vae"), { variant: "fp16" })).toHaveLength(2);
  });

  it("refuses layouts it cannot run, saying what they are", async () => {
    const base = JSON.parse(await readFile(join(SD, "model_index.json"), "utf8")) as Record<string, unknown>;
    const layouts: [string, Record<string, unknown>, RegExp][] = [
      [
        "sdxl",
        {
          ...base,
          _class_name: "StableDiffusionXLPipeline",
          text_encoder_2: ["transformers", "CLIPTextModelWithProjection"],
        },
        /StableDiffusionXLPipeline is a Stable Diffusion XL pipeline \(text_encoder_2\); SDXL is not supported/,
      ],
      ["no unet", { ...base, unet: [null, null] }, /has no "unet" component, so it is not a StableDiffusionPipeline/],
      [
        "t5",
        { ...base, text_encoder: ["transformers", "T5EncoderModel"] },
        /"text_encoder" is \["transformers","T5EncoderModel"\], but sdtune needs \["transformers", "CLIPTextModel"\]/,
      ],
      [
        "upscaler",
        { ...base, _class_name: "StableDiffusionUpscalePipeline", low_res_scheduler: ["diffusers", "DDPMScheduler"] },
        /StableDiffusionUpscalePipeline has components a StableDiffusionPipeline does not \(low_res_scheduler\)/,
      ],
    ];
    for (const [name, index, message] of layouts) {
      const dir = join(tmp.path, `layout-${name}`);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "model_index.json"), JSON.stringify(index));
      await expect(loadPipeline(dir), name).rejects.toThrow(message);
    }
    // An inpainting UNet (9 input channels) is refused before any weights load.
    const inpaint = join(tmp.path, "inpaint");
    await copyFixture(SD, inpaint);
    const unetConfig = JSON.parse(await readFile(join(SD, "unet", "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(inpaint, "unet", "config.json"), JSON.stringify({ ...unetConfig, in_channels: 9 }));
    await expect(loadPipeline(inpaint)).rejects.toThrow(
      new RegExp(`in_channels 9 .* do not match the VAE's latent_channels ${LATENT_C}`),
    );
  });

  it("saves a pipeline (and a random-init text encoder) as diffusers folders that load back", async () => {
    const dir = join(tmp.path, "saved");
    await savePipeline(dir, pipe);
    const again = await loadPipeline(dir);
    const a = await again.generate({ ...quick, seed: 11, outputType: "tensor" });
    const b = await pipe.generate({ ...quick, seed: 11, outputType: "tensor" });
    expect(native().ops.maxAbsDiff(a.tensor!, b.tensor!)).toBe(0);
    again.dispose();
    const random = await TextEncoder.fromConfig({ ...pipe.textEncoder.config }, { seed: 3 });
    expect(random.path).toBeUndefined();
    const out = await random.forward(pipe.tokenizer.encode(["x"]));
    expect(out.lastHiddenState.shape).toEqual([1, pipe.tokenizer.maxLength, TE_CONFIG.hidden_size]);
    random.dispose();
  });
});
