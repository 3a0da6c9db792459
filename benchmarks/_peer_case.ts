// sdtune's side of benchmarks/peer.ts, in its own process: the LoRA training step that
// ../shared/peer/diffusers_lora_step.py times for diffusers, on the same UNet config and
// inputs of the same shapes (fixed random latents and text embeddings, DDPM noise and
// timesteps drawn each step, MSE on epsilon, clip to norm 1.0, AdamW), with each phase
// timed inside the native step. Prints one JSON line shaped like the peer's.
import { readFileSync } from "node:fs";

import { createTrainableLora } from "../src/lora/adapters/apply.js";
import { UNet } from "../src/models/unet.js";
import { native } from "../src/native/index.js";
import { Trainer } from "../src/train/trainer.js";
import { caseMain, mb, median, peakRssBytes } from "./_util.js";

export interface PeerCase {
  unetConfig: string; // a diffusers UNet2DConditionModel config.json
  size: number; // latent side
  steps: number;
  warmup: number;
  rank: number;
  seq: number;
}

/** diffusers' train_text_to_image_lora.py: DDPMScheduler(scaled_linear, 0.00085 .. 0.012, 1000 steps). */
const NOISE_SCHEDULE = {
  _class_name: "DDPMScheduler",
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  beta_end: 0.012,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
};

const PHASES = ["forward", "backward", "clip", "optimizer"] as const;

async function runCase(c: PeerCase): Promise<Record<string, unknown>> {
  const raw = JSON.parse(readFileSync(c.unetConfig, "utf8")) as Record<string, unknown>;
  const t0 = performance.now();
  const unet = await UNet.fromConfig(raw, { seed: 0 });
  const cross = unet.config.cross_attention_dim;
  const crossDim = Array.isArray(cross) ? cross[0]! : cross;
  const latents = native().ops.randn([1, unet.config.in_channels, c.size, c.size], { seed: 1 });
  const ehs = native().ops.randn([1, c.seq, crossDim], { seed: 2 });
  const lora = await createTrainableLora(unet, {
    targets: ["to_q", "to_k", "to_v", "to_out.0"],
    rank: c.rank,
    seed: 0,
  });
  const trainer = await Trainer.create({
    unet,
    groups: [{ name: "unet", params: lora.parameters }],
    noiseScheduleConfig: NOISE_SCHEDULE,
    vaeScalingFactor: 1, // the latents are given as the UNet sees them
    maxGradNorm: 1.0,
    adamw: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 },
    seed: 0,
  });
  const loadS = (performance.now() - t0) / 1000;
  const rssLoaded = process.memoryUsage().rss;
  const phases: Record<string, number[]> = Object.fromEntries(PHASES.map((p) => [p, []]));
  const times: number[] = [];
  let last = 0;
  try {
    for (let i = 0; i < c.warmup + c.steps; i++) {
      const start = performance.now();
      const r = await trainer.step({ latents, encoderHiddenStates: ehs }, { default: 1e-4 });
      const ms = performance.now() - start;
      if (!Number.isFinite(r.loss)) throw new Error(`step ${i}: loss is ${r.loss}`);
      last = r.loss;
      if (i < c.warmup) continue;
      times.push(ms);
      for (const p of PHASES) phases[p]!.push(r.phaseMs[p]);
    }
    const round = (x: number): number => Math.round(x * 100) / 100;
    return {
      side: "sdtune",
      ms_per_step_median: round(median(times)),
      ms_per_step_min: round(Math.min(...times)),
      ms_per_step_all: times.map((t) => Math.round(t * 10) / 10),
      phase_ms_median: Object.fromEntries(PHASES.map((p) => [p, round(median(phases[p]!))])),
      trainable_params: lora.parameters.reduce((n, [, p]) => n + p.numel, 0),
      total_params: unet.parameterInfo().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0),
      peak_rss_mb: mb(peakRssBytes()),
      rss_loaded_mb: mb(rssLoaded),
      load_s: Math.round(loadS * 10) / 10,
      process_cpu_s: round(process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6),
      sample_size: c.size,
      threads: native().info().threads,
      blas_threads: native().info().blasThreads.threads,
      last_loss: last,
    };
  } finally {
    trainer.dispose();
    latents.dispose();
    ehs.dispose();
    unet.dispose();
  }
}

await caseMain<PeerCase>(runCase);
