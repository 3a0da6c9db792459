// The native training step: full fine-tuning semantics and exact resume.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import { VAE } from "../src/models/vae.js";
import { native, type Tensor } from "../src/native/index.js";
import { ClipTokenizer } from "../src/text/clip_tokenizer.js";
import { createTrainableLora } from "../src/lora/index.js";
import { Trainer, type TrainerSpec } from "../src/train/trainer.js";
import { fixture, fixtureJson, goldenPipelineCall, goldenPrompts, tempDir } from "./helpers/fixtures.js";

const SD = fixture("tiny-sd");
// Sizes from the fixture set: the golden image size, the VAE's channels and factor, the UNet's context width.
const { width: W, height: H } = goldenPipelineCall();
const VAE_CONFIG = fixtureJson<{ in_channels: number; latent_channels: number; block_out_channels: number[] }>(
  "tiny-sd",
  "vae",
  "config.json",
);
const FACTOR = 2 ** (VAE_CONFIG.block_out_channels.length - 1);
const LATENTS = [VAE_CONFIG.latent_channels, H / FACTOR, W / FACTOR];
const CONTEXT = fixtureJson<{ cross_attention_dim: number }>("tiny-sd", "unet", "config.json").cross_attention_dim;
const schedulerConfig = JSON.parse(readFileSync(join(SD, "scheduler", "scheduler_config.json"), "utf8")) as Record<
  string,
  unknown
>;

async function models(): Promise<{ unet: UNet; textEncoder: TextEncoder; vae: VAE }> {
  return {
    unet: await UNet.load(join(SD, "unet")),
    textEncoder: await TextEncoder.load(join(SD, "text_encoder")),
    vae: await VAE.load(join(SD, "vae")),
  };
}

async function batches(count: number): Promise<{ pixels: Tensor; inputIds: Tensor }[]> {
  const tokenizer = await ClipTokenizer.fromPretrained(join(SD, "tokenizer"));
  const out = [];
  for (let i = 0; i < count; i++) {
    const pixels = native().ops.randn([2, VAE_CONFIG.in_channels, H, W], { seed: 100 + i });
    out.push({ pixels, inputIds: tokenizer.encode([`a photo number ${i}`, "a photo of sks dog"]) });
  }
  return out;
}

function spec(m: Awaited<ReturnType<typeof models>>): TrainerSpec {
  return {
    ...m,
    groups: [{ name: "unet", full: true }],
    noiseScheduleConfig: schedulerConfig,
    snrGamma: 5,
    noiseOffset: 0.05,
    gradientAccumulationSteps: 2,
    maxGradNorm: 1,
    seed: 7,
  };
}

async function params(unet: UNet): Promise<Map<string, Float32Array>> {
  const dir = await tempDir();
  try {
    const trainer = await Trainer.create({
      unet,
      groups: [{ name: "unet", full: true }],
      noiseScheduleConfig: schedulerConfig,
    });
    const state = await trainer.stateDict();
    trainer.dispose();
    return new Map(
      state
        .filter(([k]) => k.startsWith("param."))
        .map(([k, t]) => [k, Float32Array.from(t.toTypedArray() as Float32Array)]),
    );
  } finally {
    await dir.cleanup();
  }
}

describe("Trainer", () => {
  it("trains the full UNet: losses are finite, parameters move, optimizer steps follow accumulation", async () => {
    const m = await models();
    const before = await params(m.unet);
    const trainer = await Trainer.create(spec(m));
    const data = await batches(4);
    const results = [];
    for (const b of data) results.push(await trainer.step(b, { unet: 1e-3 }));
    expect(results.map((r) => r.optimizerStepped)).toEqual([false, true, false, true]);
    expect(results.map((r) => r.optimizerStep)).toEqual([0, 1, 1, 2]);
    for (const r of results) expect(Number.isFinite(r.loss)).toBe(true);
    expect(results[1]!.gradNorm).toBeGreaterThan(0);
    const after = await params(m.unet);
    let moved = 0;
    for (const [k, v] of before) if (v.some((x, i) => x !== after.get(k)![i])) moved++;
    expect(moved).toBe(before.size);
  });

  it("a run saved and resumed from its state continues bit for bit", async () => {
    const data = await batches(6);
    // The run left alone.
    const a = await models();
    const ta = await Trainer.create(spec(a));
    for (const b of data) await ta.step(b, { unet: 1e-3 });
    const final = await ta.stateDict();

    // The interrupted run: 2 optimizer steps, state written to disk, a new process's worth of objects.
    const dir = await tempDir();
    try {
      const b1 = await models();
      const tb = await Trainer.create(spec(b1));
      for (const b of data.slice(0, 4)) await tb.step(b, { unet: 1e-3 });
      await writeSafetensors(join(dir.path, "state.safetensors"), await tb.stateDict());
      tb.dispose();
      const b2 = await models();
      const tc = await Trainer.create(spec(b2));
      const saved = await readSafetensors(join(dir.path, "state.safetensors"));
      await tc.loadStateDict([...saved.tensors]);
      expect(tc.optimizerStep).toBe(2);
      for (const b of data.slice(4)) await tc.step(b, { unet: 1e-3 });
      const resumed = new Map(await tc.stateDict());
      expect(resumed.size).toBe(final.length);
      for (const [name, t] of final) {
        const r = resumed.get(name)!;
        expect(native().ops.maxAbsDiff(t, r), name).toBe(0);
      }
    } finally {
      await dir.cleanup();
    }
  });

  it("prior preservation splits the batch and weights the class half", async () => {
    const m = await models();
    const trainer = await Trainer.create({
      ...spec(m),
      snrGamma: undefined,
      gradientAccumulationSteps: 1,
      priorLossWeight: 0.5,
    });
    const [b] = await batches(1);
    const r = await trainer.step({ ...b!, priorRows: 1 }, { unet: 0 });
    expect(r.loss).toBeCloseTo(r.instanceLoss + 0.5 * r.priorLoss, 6);
    await expect(trainer.step({ ...b!, priorRows: 2 }, { unet: 0 })).rejects.toThrow(/priorRows/);
  });

  it("cached latents use the given VAE scaling factor, and say so when it is missing", async () => {
    const m = await models();
    const mean = native().ops.randn([2, ...LATENTS], { seed: 1 });
    const std = native().ops.randn([2, ...LATENTS], { seed: 2 });
    const [b] = await batches(1);
    const noVae = { ...spec(m), vae: undefined, gradientAccumulationSteps: 1 };
    const without = await Trainer.create(noVae);
    await expect(
      without.step({ latentMean: mean, latentStd: std, inputIds: b!.inputIds }, { unet: 0 }),
    ).rejects.toThrow(/vaeScalingFactor/);
    const withFactor = await Trainer.create({ ...noVae, vaeScalingFactor: m.vae.scalingFactor });
    const r = await withFactor.step({ latentMean: mean, latentStd: std, inputIds: b!.inputIds }, { unet: 0 });
    expect(Number.isFinite(r.loss)).toBe(true);
  });

  it("leaves the models in eval mode after a step: LoRA dropout is off for anyone using them next", async () => {
    const m = await models();
    const lora = await createTrainableLora(m.unet, {
      targets: ["to_q", "to_k", "to_v"],
      rank: 4,
      dropout: 0.5,
      init: "random",
      seed: 1,
    });
    const trainer = await Trainer.create({
      ...spec(m),
      groups: [{ name: "unet", params: lora.parameters }],
      gradientAccumulationSteps: 1,
    });
    const [b] = await batches(1);
    await trainer.step(b!, { unet: 1e-3 });
    const x = native().ops.randn([1, ...LATENTS], { seed: 3 });
    const ehs = native().ops.randn([1, goldenPrompts().model_max_length, CONTEXT], { seed: 4 });
    const first = await m.unet.forward(x, 500, ehs);
    const second = await m.unet.forward(x, 500, ehs);
    expect(native().ops.maxAbsDiff(first, second)).toBe(0);
  });

  it("rejects bad options with the field named", async () => {
    const m = await models();
    await expect(Trainer.create({ ...spec(m), gradientAccumulationSteps: 0 })).rejects.toThrow(
      /gradientAccumulationSteps/,
    );
    await expect(Trainer.create({ ...spec(m), groups: [] })).rejects.toThrow(/nothing to train/);
    await expect(Trainer.create({ ...spec(m), predictionType: "sample" as never })).rejects.toThrow(/predictionType/);
  });
});
