// One training benchmark case, run in its own process by benchmarks/train.ts so that the
// RSS high-water mark (VmHWM) belongs to this case alone. It times the real training step
// (src/train/trainer.ts) on random inputs of the case's shape and prints one JSON line.
import { join } from "node:path";

import { createTrainableLora } from "../src/lora/adapters/apply.js";
import { parseVAEConfig, type VAEConfig } from "../src/models/config.js";
import { readJsonFile } from "../src/models/files.js";
import { UNet } from "../src/models/unet.js";
import { VAE } from "../src/models/vae.js";
import { native, type Tensor } from "../src/native/index.js";
import { readSchedulerConfig } from "../src/sched/config.js";
import { tensorFrom } from "../src/tensor.js";
import { Trainer, type ParamGroupSpec, type TrainBatch } from "../src/train/trainer.js";
import { caseMain, mb, median, peakRssBytes, time } from "./_util.js";

/** A model folder (weights loaded) or a config object (random init). */
export type ModelSource = { dir: string } | { config: Record<string, unknown> };

export interface TrainCase {
  unet: ModelSource;
  vae: ModelSource;
  /** A folder with scheduler/scheduler_config.json: the DDPM training schedule. */
  schedulerDir: string;
  training: "lora" | "full";
  /** LoRA rank and target module names (training "lora"). */
  lora: { rank: number; targets: string[] };
  checkpointing: boolean;
  /** cached: batches of latent mean/std (the VAE never runs); pixels: pixels through the VAE each step. */
  latents: "cached" | "pixels";
  batch: number;
  /** Image size in pixels; latents are this over the VAE's scale factor. */
  height: number;
  width: number;
  textLength: number;
  warmup: number;
  steps: number;
  lr: number;
}

function vaeConfigOf(source: ModelSource): VAEConfig {
  return "dir" in source
    ? parseVAEConfig(readJsonFile(join(source.dir, "config.json")), join(source.dir, "config.json"))
    : parseVAEConfig(source.config, "benchmark VAE config");
}

/** Uniform values in [lo, hi) from a seeded LCG: realistic ranges for pixels and posterior std. */
function uniform(shape: number[], lo: number, hi: number, seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let s = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = lo + ((hi - lo) * s) / 2 ** 32;
  }
  return tensorFrom(data, shape, "float32");
}

async function runCase(c: TrainCase): Promise<Record<string, unknown>> {
  const rssStart = process.memoryUsage().rss;
  const unet = "dir" in c.unet ? await UNet.load(c.unet.dir) : await UNet.fromConfig(c.unet.config, { seed: 0 });
  const vaeConfig = vaeConfigOf(c.vae);
  // Cached latents: no VAE in memory at all, as a cached training run works.
  const vae =
    c.latents === "pixels"
      ? "dir" in c.vae
        ? await VAE.load(c.vae.dir)
        : await VAE.fromConfig(c.vae.config, { seed: 0 })
      : undefined;
  const tensors: Tensor[] = [];
  let trainer: Trainer | undefined;
  try {
    const factor = 2 ** (vaeConfig.block_out_channels.length - 1); // the VAE's spatial downsampling
    if (c.height % factor || c.width % factor) {
      throw new RangeError(`image ${c.height}x${c.width} is not a multiple of the VAE's scale factor ${factor}`);
    }
    const latentShape = [c.batch, vaeConfig.latent_channels, c.height / factor, c.width / factor];
    const cross = unet.config.cross_attention_dim;
    const crossDim = Array.isArray(cross) ? cross[0]! : cross;
    const keep = <T extends Tensor>(t: T): T => (tensors.push(t), t);

    // Text: precomputed embeddings [B, L, D] (as TextEmbeddingCache stores them): no text encoder runs.
    const batch: TrainBatch = {
      encoderHiddenStates: keep(native().ops.randn([c.batch, c.textLength, crossDim], { seed: 2 })),
    };
    if (c.latents === "pixels") {
      batch.pixels = keep(uniform([c.batch, 3, c.height, c.width], -1, 1, 3)); // [B, 3, H, W] in [-1, 1]
    } else {
      batch.latentMean = keep(native().ops.randn(latentShape, { seed: 4 })); // [B, 4, h, w] posterior mean
      batch.latentStd = keep(uniform(latentShape, 0.01, 0.2, 5)); // [B, 4, h, w] posterior std > 0
    }
    const rssLoaded = process.memoryUsage().rss;
    const peakAfterLoad = peakRssBytes();

    unet.setGradientCheckpointing(c.checkpointing);
    let groups: ParamGroupSpec[];
    let trainable: number;
    if (c.training === "lora") {
      const lora = await createTrainableLora(unet, { targets: c.lora.targets, rank: c.lora.rank, seed: 0 });
      groups = [{ name: "unet", params: lora.parameters }];
      trainable = lora.parameters.reduce((n, [, p]) => n + p.numel, 0);
    } else {
      groups = [{ name: "unet", full: true }];
      trainable = unet.parameterInfo().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    }
    const { _source: _ignored, ...noiseScheduleConfig } = readSchedulerConfig(c.schedulerDir);
    // Clipped to norm 1.0 as diffusers' training scripts do: the clip is part of the step timed.
    trainer = await Trainer.create({ unet, vae, groups, noiseScheduleConfig, maxGradNorm: 1.0, seed: 0 });

    const lrs = { default: c.lr };
    let last = 0;
    const phases: Record<string, number[]> = { forward: [], backward: [], clip: [], optimizer: [] };
    const step = async (): Promise<void> => {
      const r = await trainer!.step(batch, lrs);
      if (!Number.isFinite(r.loss)) throw new Error(`training step ${r.microStep}: loss is ${r.loss}`);
      last = r.loss;
      for (const [name, ms] of Object.entries(r.phaseMs)) phases[name]?.push(ms);
    };
    const peaks: number[] = []; // the high-water mark after each step, warm-up included
    for (let i = 0; i < c.warmup; i++) {
      await step();
      peaks.push(mb(peakRssBytes() - rssLoaded));
    }
    const peakAfterWarmup = peakRssBytes();
    for (const list of Object.values(phases)) list.length = 0; // phases of the timed steps only
    const ms: number[] = [];
    for (let i = 0; i < c.steps; i++) {
      ms.push(...(await time(step, 1, 0)));
      peaks.push(mb(peakRssBytes() - rssLoaded));
    }
    const peak = peakRssBytes();
    const medianMs = median(ms);
    return {
      unetParameters: unet.parameterInfo().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0),
      trainableParameters: trainable,
      // Computed, not measured: float32 gradients + AdamW exp_avg + exp_avg_sq of the trainable parameters.
      gradientsAndMomentsMB: mb(trainable * 4 * 3),
      latentShape,
      stepsPerSecond: Math.round((1000 / medianMs) * 1000) / 1000,
      medianStepMs: Math.round(medianMs * 10) / 10,
      minStepMs: Math.round(Math.min(...ms) * 10) / 10,
      stepsMs: ms.map((x) => Math.round(x * 10) / 10),
      phaseMedianMs: Object.fromEntries(
        Object.entries(phases).map(([name, list]) => [name, Math.round(median(list) * 10) / 10]),
      ),
      lastLoss: last,
      rssBeforeLoadMB: mb(rssStart),
      rssLoadedMB: mb(rssLoaded),
      peakRssMB: mb(peak),
      // The high-water mark while training, above the resident size once the models were loaded.
      peakAboveLoadedMB: mb(peak - rssLoaded),
      // Did training raise the mark above what loading alone reached? (If not, the number above is loading's.)
      peakGrewDuringTraining: peak > peakAfterLoad,
      // Did the timed steps raise it above the warm-up's? (Growth here means memory creeping per step.)
      peakGrewAfterWarmupMB: mb(peak - peakAfterWarmup),
      peakAboveLoadedAfterEachStepMB: peaks,
      rssAboveLoadedAtEndMB: mb(process.memoryUsage().rss - rssLoaded),
    };
  } finally {
    trainer?.dispose();
    for (const t of tensors) t.dispose();
    vae?.dispose();
    unet.dispose();
  }
}

await caseMain<TrainCase>(runCase);
