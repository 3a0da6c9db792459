// Whole training runs on the tiny fixture model: outputs, exact resume after an
// interruption (text-to-image LoRA, DreamBooth LoRA with prior preservation, a
// full fine-tune and a two-stage run), and refusing to overwrite a run.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readPngText } from "../src/io/png.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { native } from "../src/native/index.js";
import { readMetrics } from "../src/train/metrics.js";
import { train, type TrainResult } from "../src/train/run.js";
import { expectSameTensors } from "./helpers/train_data.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let captioned: string;
let instance: string;
let classes: string;

beforeAll(async () => {
  dir = await tempDir("sdtune-train-run-");
  captioned = join(dir.path, "captioned");
  const rows: string[] = [];
  for (let i = 0; i < 6; i++) {
    await writeImage(join(captioned, `img${i}.png`), { width: 24 + 4 * i, height: 20, seed: i });
    rows.push(JSON.stringify({ file_name: `img${i}.png`, text: `a picture number ${i}` }));
  }
  await writeText(join(captioned, "metadata.jsonl"), `${rows.join("\n")}\n`);
  instance = join(dir.path, "instance");
  for (let i = 0; i < 3; i++) await writeImage(join(instance, `sks${i}.png`), { width: 20, height: 20, seed: 50 + i });
  classes = join(dir.path, "classes");
  for (let i = 0; i < 4; i++) await writeImage(join(classes, `dog${i}.png`), { width: 20, height: 20, seed: 90 + i });
});
afterAll(async () => dir.cleanup());

const base = () => ({ model: fixture("tiny-sd"), seed: 3, resolution: 16, checkpointing_steps: 2 });

function textToImage(out: string, extra: Record<string, unknown> = {}) {
  return {
    ...base(),
    output_dir: out,
    dataset: { path: captioned },
    max_train_steps: 6,
    learning_rate: 1e-3,
    ...extra,
  };
}

function dreambooth(out: string, extra: Record<string, unknown> = {}) {
  return {
    ...base(),
    output_dir: out,
    method: "dreambooth",
    instance_prompt: "a photo of sks dog",
    dataset: { path: instance },
    prior_preservation: { class_prompt: "a photo of a dog", class_data_dir: classes, num_class_images: 4 },
    train_text_encoder: "lora",
    max_train_steps: 5,
    learning_rate: 1e-3,
    ...extra,
  };
}

/** Runs `config`, stopping it (as Ctrl-C does) once `stopAt` optimizer steps are done, then resumes it. */
async function interruptedRun(config: Record<string, unknown>, stopAt: number, stage?: string): Promise<TrainResult> {
  const controller = new AbortController();
  const stopped = await train(config, {
    signal: controller.signal,
    onProgress: (e) => {
      if (e.phase === "train" && e.step === stopAt && (!stage || e.stage === stage)) controller.abort();
    },
  }).catch((e: Error) => e);
  expect(stopped).toBeInstanceOf(Error);
  expect((stopped as Error).name).toBe("AbortError");
  return train(config, { resume: "latest" });
}

async function metricsWithoutTimes(runDir: string): Promise<unknown[]> {
  return (await readMetrics(join(runDir, "metrics.jsonl"))).map(
    ({ step_time: _t, images_per_sec: _i, time: _w, ...rest }) => rest,
  );
}

describe("train()", () => {
  it("text-to-image LoRA: writes LoRA files, metrics, checkpoints and the resolved config; the loss falls", async () => {
    const out = join(dir.path, "t2i");
    const result = await train(
      textToImage(out, { max_train_steps: 30, save: { lora_formats: ["kohya", "diffusers"] } }),
    );
    const [stage] = result.stages;
    expect(existsSync(stage!.loraFiles.kohya!)).toBe(true);
    expect(existsSync(stage!.loraFiles.diffusers!)).toBe(true);
    const kohya = await readSafetensors(stage!.loraFiles.kohya!);
    expect([...kohya.tensors.keys()].some((k) => k.startsWith("lora_unet_"))).toBe(true);
    expect(kohya.metadata.ss_network_dim).toBe("4");
    const metrics = await readMetrics(join(out, "metrics.jsonl"));
    expect(metrics).toHaveLength(30);
    const mean = (xs: Record<string, unknown>[]) => xs.reduce((s, m) => s + (m.loss as number), 0) / xs.length;
    expect(mean(metrics.slice(20))).toBeLessThan(mean(metrics.slice(0, 10)));
    expect(readFileSync(join(out, "config.yaml"), "utf8")).toContain("learning_rate: 0.001");
    expect(existsSync(join(out, "train", "checkpoints", "checkpoint-30"))).toBe(true);
    const report = readFileSync(result.report, "utf8");
    expect(report).toContain("<svg");
    expect(report).toContain('href="train/lora/train.safetensors"');
    await expect(train(textToImage(out))).rejects.toThrow(/already holds a training run/);
  });

  it("text-to-image LoRA: an interrupted and resumed run ends bit for bit where the uninterrupted one does", async () => {
    const a = await train(textToImage(join(dir.path, "t2i-a")));
    const b = await interruptedRun(textToImage(join(dir.path, "t2i-b")), 3);
    await expectSameTensors(a.stages[0]!.loraFiles.kohya!, b.stages[0]!.loraFiles.kohya!);
    expect(await metricsWithoutTimes(b.outputDir)).toEqual(await metricsWithoutTimes(a.outputDir));
  });

  it("DreamBooth LoRA with prior preservation and a text-encoder LoRA resumes exactly", async () => {
    const a = await train(dreambooth(join(dir.path, "db-a")));
    const b = await interruptedRun(dreambooth(join(dir.path, "db-b")), 3);
    const file = a.stages[0]!.loraFiles.kohya!;
    expect([...(await readSafetensors(file)).tensors.keys()].some((k) => k.startsWith("lora_te_"))).toBe(true);
    await expectSameTensors(file, b.stages[0]!.loraFiles.kohya!);
    const metrics = await readMetrics(join(a.outputDir, "metrics.jsonl"));
    expect(metrics[0]!.prior_loss).toBeGreaterThan(0);
  });

  it("a full fine-tune resumes exactly and writes a loadable diffusers model", async () => {
    const config = (out: string) => textToImage(out, { train_unet: "full", max_train_steps: 4, learning_rate: 1e-4 });
    const a = await train(config(join(dir.path, "full-a")));
    const b = await interruptedRun(config(join(dir.path, "full-b")), 3);
    const file = join("unet", "diffusion_pytorch_model.safetensors");
    await expectSameTensors(join(a.stages[0]!.fullModel!, file), join(b.stages[0]!.fullModel!, file));
    expect(existsSync(join(a.stages[0]!.fullModel!, "model_index.json"))).toBe(true);
  });

  it("two stages: a concept LoRA, then a personal DreamBooth LoRA on top, interrupted in stage two", async () => {
    const config = (out: string) => ({
      ...base(),
      output_dir: out,
      max_train_steps: 4,
      learning_rate: 1e-3,
      stages: [
        { name: "concept", dataset: { path: captioned } },
        {
          name: "personal",
          method: "dreambooth",
          instance_prompt: "a photo of sks dog",
          dataset: { path: instance },
          prior_preservation: { class_prompt: "a photo of a dog", class_data_dir: classes, num_class_images: 4 },
        },
      ],
    });
    const a = await train(config(join(dir.path, "two-a")));
    const b = await interruptedRun(config(join(dir.path, "two-b")), 3, "personal");
    expect(a.stages.map((s) => s.name)).toEqual(["concept", "personal"]);
    for (const i of [0, 1]) await expectSameTensors(a.stages[i]!.loraFiles.kohya!, b.stages[i]!.loraFiles.kohya!);
    expect(await metricsWithoutTimes(b.outputDir)).toEqual(await metricsWithoutTimes(a.outputDir));
  });

  it("DreamBooth generates missing class images with the base model, and validation samples every N steps", async () => {
    const out = join(dir.path, "db-gen");
    const classDir = join(dir.path, "generated-classes");
    const result = await train(
      dreambooth(out, {
        train_text_encoder: "none",
        max_train_steps: 2,
        prior_preservation: {
          class_prompt: "a photo of a dog",
          class_data_dir: classDir,
          num_class_images: 3,
          sample_batch_size: 2,
          num_inference_steps: 2,
        },
        validation: { prompts: ["a photo of sks dog"], seeds: [1, 2], every_n_steps: 1, num_inference_steps: 2 },
      }),
    );
    const classImages = readdirSync(classDir)
      .filter((f) => f.endsWith(".png"))
      .sort();
    expect(classImages).toEqual(["class_00000.png", "class_00001.png", "class_00002.png"]);
    expect(readPngText(readFileSync(join(classDir, classImages[0]!))).parameters).toMatch(/^a photo of a dog\n/);
    for (const step of [1, 2]) {
      const samples = join(out, "train", "samples", `step-${step}`);
      expect(readdirSync(samples).sort()).toEqual(["grid.png", "prompt0_seed1.png", "prompt0_seed2.png"]);
    }
    expect(result.stages[0]!.steps).toBe(2);
    const report = readFileSync(result.report, "utf8");
    expect(report).toContain('src="train/samples/step-2/grid.png"');
    // The grid's rows are listed by their full prompt text.
    expect(report).toMatch(
      /<ol class="prompt-list" id="prompts-train"[^>]*><li value="0" data-prompt="0">a photo of sks dog<\/li><\/ol>/,
    );
  });

  it("cached latents train bit for bit like decoded pixels, also when a second run reads them back", async () => {
    const config = (out: string, cache: boolean) =>
      textToImage(out, {
        center_crop: true,
        max_train_steps: 3,
        cache_latents: cache,
        cache_dir: join(dir.path, "cache"),
      });
    const plain = await train(config(join(dir.path, "nocache"), false));
    const cached = await train(config(join(dir.path, "cached"), true));
    await expectSameTensors(plain.stages[0]!.loraFiles.kohya!, cached.stages[0]!.loraFiles.kohya!);
    const again = await train(config(join(dir.path, "cached-again"), true));
    await expectSameTensors(plain.stages[0]!.loraFiles.kohya!, again.stages[0]!.loraFiles.kohya!);
  });

  it("EMA: a full fine-tune with use_ema saves the averaged weights", async () => {
    const config = (out: string, ema: boolean) =>
      textToImage(out, { train_unet: "full", max_train_steps: 3, learning_rate: 1e-4, use_ema: ema, ema_decay: 0.5 });
    const plain = await train(config(join(dir.path, "ema-off"), false));
    const ema = await train(config(join(dir.path, "ema-on"), true));
    const file = join("unet", "diffusion_pytorch_model.safetensors");
    const a = (await readSafetensors(join(plain.stages[0]!.fullModel!, file))).tensors;
    const b = (await readSafetensors(join(ema.stages[0]!.fullModel!, file))).tensors;
    const base = (await readSafetensors(join(fixture("tiny-sd"), file))).tensors;
    const name = "conv_in.weight";
    // The EMA weights lie between the base and the trained weights (decay warms up from 0).
    const moved = native().ops.maxAbsDiff(a.get(name)!, base.get(name)!);
    const emaMoved = native().ops.maxAbsDiff(b.get(name)!, base.get(name)!);
    expect(emaMoved).toBeGreaterThan(0);
    expect(emaMoved).toBeLessThan(moved);
  });

  it("refuses options this build cannot honour, with a clear message", async () => {
    await expect(train(textToImage(join(dir.path, "8bit"), { optimizer: "adamw8bit" }))).rejects.toThrow(
      /adamw8bit needs the CUDA build/,
    );
  });

  it("a stage can end with an evaluation, linked from the training report", async () => {
    const out = join(dir.path, "with-eval");
    const result = await train(
      textToImage(out, {
        max_train_steps: 2,
        evaluate: {
          prompts: ["a picture number 1"],
          seeds: [0, 1],
          num_inference_steps: 2,
          clip_model: fixture("tiny-clip"),
        },
      }),
    );
    const evalJson = JSON.parse(readFileSync(join(out, "eval", "train", "eval.json"), "utf8")) as {
      format: string;
      mode: string;
      prompts: string[];
      variants: { name: string; images: number; clipScore: number }[];
      trainingReport: string | null;
    };
    // The base model and the stage's LoRA, one image per (prompt, seed), scored.
    expect(evalJson).toMatchObject({ format: "sdtune-eval/1", mode: "generate", prompts: ["a picture number 1"] });
    expect(evalJson.variants.map((v) => [v.name, v.images])).toEqual([
      ["base", 2],
      [expect.stringMatching(/^train/), 2],
    ]);
    for (const v of evalJson.variants) expect(Number.isFinite(v.clipScore), v.name).toBe(true);
    expect(evalJson.trainingReport).toBe("../../report.html");
    expect(readFileSync(result.report, "utf8")).toContain('href="eval/train/report.html"');
  });

  it("trains the text encoder in full alongside a UNet LoRA and writes both into the model", async () => {
    const result = await train(
      textToImage(join(dir.path, "te-full"), {
        train_text_encoder: "full",
        max_train_steps: 2,
        save: { lora_formats: ["kohya"], full_model: true },
      }),
    );
    const te = join("text_encoder", "model.safetensors");
    const trained = (await readSafetensors(join(result.stages[0]!.fullModel!, te))).tensors;
    const base = (await readSafetensors(join(fixture("tiny-sd"), te))).tensors;
    const name = "text_model.encoder.layers.0.mlp.fc1.weight";
    expect(native().ops.maxAbsDiff(trained.get(name)!, base.get(name)!)).toBeGreaterThan(0);
  });

  it("stops at once with advice when a float32 loss is not finite, keeping the last checkpoint", async () => {
    const out = join(dir.path, "nan");
    const error = await train(
      textToImage(out, { learning_rate: 1e30, max_train_steps: 40, checkpointing_steps: 1 }),
    ).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/has not been finite for 1 step \(step \d+\).*Lower learning_rate/s);
    // Only healthy states were saved: the newest checkpoint resumes from finite weights.
    const checkpoints = readdirSync(join(out, "train", "checkpoints"));
    expect(checkpoints.length).toBeGreaterThan(0);
    for (const c of checkpoints) {
      const manifest = JSON.parse(readFileSync(join(out, "train", "checkpoints", c, "manifest.json"), "utf8"));
      expect(manifest.state.consecutiveNonFinite).toBe(0);
    }
  });

  it("Ctrl-C in the middle of an accumulation cycle finishes the step and saves it", async () => {
    const out = join(dir.path, "accumulate");
    const controller = new AbortController();
    const error = await train(
      textToImage(out, { gradient_accumulation_steps: 3, max_train_steps: 6, checkpointing_steps: 100 }),
      {
        signal: controller.signal,
        // Fires while step 3's first micro-batch is being fetched.
        onProgress: (e) => e.phase === "train" && e.step === 2 && setImmediate(() => controller.abort()),
      },
    ).catch((e: Error) => e);
    expect((error as Error).name).toBe("AbortError");
    expect(readdirSync(join(out, "train", "checkpoints"))).toEqual(["checkpoint-3"]);
  });

  it("refuses to resume with changed training settings, names them, and keeps the saved config", async () => {
    const out = join(dir.path, "changed");
    const controller = new AbortController();
    await train(textToImage(out), {
      signal: controller.signal,
      onProgress: (e) => e.step === 2 && controller.abort(),
    }).catch(() => undefined);
    const before = readFileSync(join(out, "config.yaml"), "utf8");
    const refused = (await train(textToImage(out, { learning_rate: 0.5, lora: { rank: 8 } }), {
      resume: "latest",
    }).catch((e: Error) => e)) as Error;
    expect(refused.message).toMatch(/differs from the run being resumed in/);
    expect(refused.message).toContain("stages[0].learning_rate");
    expect(refused.message).toContain("stages[0].lora.rank");
    expect(readFileSync(join(out, "config.yaml"), "utf8")).toBe(before);
    // Settings that do not change the result may change.
    const done = await train(textToImage(out, { checkpointing_steps: 3 }), { resume: "latest" });
    expect(done.stages[0]!.steps).toBe(6);
  });

  it("one process trains in a run folder at a time", async () => {
    const out = join(dir.path, "locked");
    const first = train(textToImage(out, { max_train_steps: 3 }));
    await new Promise((r) => setTimeout(r, 50));
    await expect(train(textToImage(out, { max_train_steps: 3 }))).rejects.toThrow(/is being trained by process/);
    await first;
  });

  it("resuming from an older checkpoint sets the newer ones aside", async () => {
    const out = join(dir.path, "branch");
    const controller = new AbortController();
    await train(textToImage(out, { checkpointing_steps: 1 }), {
      signal: controller.signal,
      onProgress: (e) => e.step === 4 && controller.abort(),
    }).catch(() => undefined);
    const checkpoints = join(out, "train", "checkpoints");
    const again = new AbortController();
    await train(textToImage(out, { checkpointing_steps: 1 }), {
      resume: join(checkpoints, "checkpoint-2"),
      signal: again.signal,
      onProgress: (e) => e.step === 3 && again.abort(),
    }).catch(() => undefined);
    const names = readdirSync(checkpoints);
    expect(names.filter((n) => /^checkpoint-\d+$/.test(n)).sort()).toEqual(["checkpoint-2", "checkpoint-3"]);
    expect(names.some((n) => n.startsWith("checkpoint-4.abandoned-"))).toBe(true);
    const done = await train(textToImage(out, { checkpointing_steps: 1 }), { resume: "latest" });
    const a = await train(textToImage(join(dir.path, "branch-ref")));
    await expectSameTensors(a.stages[0]!.loraFiles.kohya!, done.stages[0]!.loraFiles.kohya!);
  });

  it("an evaluation interrupted after its stage finished runs on resume", async () => {
    const out = join(dir.path, "eval-resume");
    const config = (clip: string) =>
      textToImage(out, {
        max_train_steps: 2,
        evaluate: { prompts: ["a picture number 1"], seeds: [0], num_inference_steps: 2, clip_model: clip },
      });
    // A CLIP model that does not exist is found before training (nothing written)...
    await expect(train(config(join(dir.path, "no-such-clip")))).rejects.toThrow(/CLIP model folder .* does not exist/);
    expect(existsSync(out)).toBe(false);
    // ...and an evaluation stopped after its stage finished runs on resume.
    const controller = new AbortController();
    const stopped = await train(config(fixture("tiny-clip")), {
      signal: controller.signal,
      onProgress: (e) => e.phase === "evaluate" && controller.abort(),
    }).catch((e: Error) => e);
    expect((stopped as Error).name).toBe("AbortError");
    expect(existsSync(join(out, "train", "lora", "train.safetensors"))).toBe(true);
    expect(existsSync(join(out, "eval", "train", "eval.json"))).toBe(false);
    await train(config(fixture("tiny-clip")), { resume: "latest" });
    expect(existsSync(join(out, "eval", "train", "eval.json"))).toBe(true);
  });
});
