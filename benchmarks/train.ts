// Training steps per second and peak memory on CPU (issue #7): the real training step
// (src/train/trainer.ts) for a LoRA run and a full UNet fine-tune, with and without
// gradient checkpointing, with cached latents (batches of posterior mean/std: the VAE
// never runs) and without (pixels through the VAE every step), on the fixture UNet and
// on the SD-2-base-shaped narrow UNet of benchmarks/unet.ts. Every case runs in its own
// process so that its RSS high-water mark is its own; a failing case reports an error.
//   npm run bench -- train [--quick] [--steps N] [--size PX] [--rounds N]
// --quick: only the fixture cases, fewer steps (a smoke test). --size: the large model's
// square image size (default 128 px: latents 16x16, batch 1, a few minutes on 2 cores).
// --rounds: runs of every case, in alternating order, keeping each case's fastest (default 2).
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { machine, runCaseProcess } from "./_util.js";
import type { ModelSource, TrainCase } from "./_train_case.js";
import { SD2_VAE } from "./generate.js";
import type { Benchmark } from "./run.js";
import { SD2_BASE_NARROW } from "./unet.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = process.env.SDTUNE_FIXTURES ?? resolve(here, "..", "..", "shared", "fixtures");

/** SD 2's VAE at 1/4 of the width (the narrowest that keeps 32 norm groups), as `generate --quick` uses. */
export const SD2_VAE_NARROW = { ...SD2_VAE, block_out_channels: [32, 64, 128, 128] };

/** Untimed steps first: the first allocates AdamW state, the heap settles over the next. */
const WARMUP = 2;

/** diffusers' train_text_to_image_lora.py targets, rank 4. */
const LORA = { rank: 4, targets: ["to_q", "to_k", "to_v", "to_out.0"] };

interface ModelSetup {
  name: string;
  unet: ModelSource;
  vae: ModelSource;
  vaeName: string;
  batch: number;
  height: number;
  width: number;
  steps: number;
}

function flag(args: string[], name: string): number | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const value = Number(args[i + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`${name} needs a positive integer`);
  return value;
}

const key = (c: { training: string; latents: string; checkpointing: boolean }): string =>
  `${c.training}/${c.latents}/${c.checkpointing ? "ckpt" : "plain"}`;

type CaseResult = Record<string, unknown> & { training: string; latents: string; gradientCheckpointing: boolean };

/** a / b of a numeric field of two cases, or null when either failed. */
function ratio(cases: Map<string, CaseResult>, a: string, b: string, field: string): number | null {
  const x = cases.get(a)?.[field];
  const y = cases.get(b)?.[field];
  if (typeof x !== "number" || typeof y !== "number" || y === 0) return null;
  return Math.round((x / y) * 1000) / 1000;
}

/** The same-run baselines for one model: checkpointing on / off, pixels / cached, full / LoRA. */
function comparisons(results: CaseResult[]): Record<string, unknown> {
  const by = new Map(results.map((r) => [key({ ...r, checkpointing: r.gradientCheckpointing }), r]));
  const out: Record<string, Record<string, number | null>> = {
    stepTimeCheckpointingOverPlain: {},
    peakAboveLoadedCheckpointingOverPlain: {},
    stepTimePixelsOverCached: {},
    peakAboveLoadedPixelsOverCached: {},
    stepTimeFullOverLora: {},
    peakAboveLoadedFullOverLora: {},
  };
  for (const training of ["lora", "full"]) {
    for (const latents of ["cached", "pixels"]) {
      const on = key({ training, latents, checkpointing: true });
      const off = key({ training, latents, checkpointing: false });
      out.stepTimeCheckpointingOverPlain![`${training}/${latents}`] = ratio(by, on, off, "medianStepMs");
      out.peakAboveLoadedCheckpointingOverPlain![`${training}/${latents}`] = ratio(by, on, off, "peakAboveLoadedMB");
    }
    for (const checkpointing of [false, true]) {
      const pixels = key({ training, latents: "pixels", checkpointing });
      const cached = key({ training, latents: "cached", checkpointing });
      const label = `${training}/${checkpointing ? "checkpointing" : "plain"}`;
      out.stepTimePixelsOverCached![label] = ratio(by, pixels, cached, "medianStepMs");
      out.peakAboveLoadedPixelsOverCached![label] = ratio(by, pixels, cached, "peakAboveLoadedMB");
    }
  }
  for (const latents of ["cached", "pixels"]) {
    for (const checkpointing of [false, true]) {
      const full = key({ training: "full", latents, checkpointing });
      const lora = key({ training: "lora", latents, checkpointing });
      const label = `${latents}/${checkpointing ? "checkpointing" : "plain"}`;
      out.stepTimeFullOverLora![label] = ratio(by, full, lora, "medianStepMs");
      out.peakAboveLoadedFullOverLora![label] = ratio(by, full, lora, "peakAboveLoadedMB");
    }
  }
  return out;
}

export const benchmark: Benchmark = {
  description:
    "training steps/s and peak RSS on CPU: LoRA (rank 4, to_q/to_k/to_v/to_out.0) and full UNet fine-tune, " +
    "with and without gradient checkpointing, cached latents vs pixels through the VAE; one process per case",
  async run(args) {
    const quick = args.includes("--quick");
    const size = flag(args, "--size") ?? 128;
    const steps = flag(args, "--steps");
    const roundCount = flag(args, "--rounds") ?? (quick ? 1 : 2);
    const tiny = join(fixtures, "tiny-sd");
    const models: ModelSetup[] = [
      {
        name: "fixture tiny-sd UNet (blocks [32, 64])",
        unet: { dir: join(tiny, "unet") },
        vae: { dir: join(tiny, "vae") },
        vaeName: "fixture tiny-sd VAE (blocks [32, 64], scale factor 2)",
        batch: 2,
        height: 16, // the fixture's image size (latents 8x12)
        width: 24,
        steps: steps ?? (quick ? 3 : 10),
      },
    ];
    if (!quick) {
      models.push({
        name: "SD-2-base-shaped UNet, blocks [64, 128, 256, 256], random init",
        unet: { config: SD2_BASE_NARROW },
        vae: { config: SD2_VAE_NARROW },
        vaeName: "SD-2-shaped VAE, blocks [32, 64, 128, 128] (scale factor 8), random init",
        batch: 1,
        height: size,
        width: size,
        steps: steps ?? 8,
      });
    }

    const loadBefore = loadavg();
    const t0 = performance.now();
    const out = [];
    for (const m of models) {
      const specs: TrainCase[] = [];
      for (const training of ["lora", "full"] as const) {
        for (const latents of ["cached", "pixels"] as const) {
          for (const checkpointing of [false, true]) {
            specs.push({
              unet: m.unet,
              vae: m.vae,
              schedulerDir: tiny,
              training,
              lora: LORA,
              checkpointing,
              latents,
              batch: m.batch,
              height: m.height,
              width: m.width,
              textLength: 77,
              warmup: WARMUP,
              steps: m.steps,
              lr: 1e-4,
            });
          }
        }
      }
      // Rounds alternate the case order, so a burst of load elsewhere on the machine does not
      // land on the same cases twice; each case keeps its fastest round (by median step time).
      const rounds = new Map<string, Record<string, unknown>[]>(specs.map((c) => [key(c), []]));
      for (let r = 0; r < roundCount; r++) {
        for (const c of r % 2 ? [...specs].reverse() : specs) {
          let result: Record<string, unknown>;
          try {
            result = runCaseProcess(join(here, "_train_case.ts"), c, {
              what: `train case ${key(c)}`,
              timeoutMs: 10 * 60_000,
            });
          } catch (error) {
            result = { error: (error as Error).message };
          }
          rounds.get(key(c))!.push(result);
        }
      }
      const results: CaseResult[] = specs.map((c) => {
        const all = rounds.get(key(c))!;
        const ok = all.filter((r) => typeof r.medianStepMs === "number");
        const best = ok.length
          ? ok.reduce((a, b) => ((b.medianStepMs as number) < (a.medianStepMs as number) ? b : a))
          : all[0]!;
        return {
          training: c.training,
          latents: c.latents,
          gradientCheckpointing: c.checkpointing,
          ...best,
          ...(roundCount > 1
            ? {
                medianStepMsPerRound: all.map((r) => r.medianStepMs ?? null),
                peakAboveLoadedMBPerRound: all.map((r) => r.peakAboveLoadedMB ?? null),
                ...(ok.length < all.length ? { errorsInOtherRounds: all.map((r) => r.error).filter(Boolean) } : {}),
              }
            : {}),
        };
      });
      out.push({
        model: m.name,
        vae: m.vaeName,
        input: `batch ${m.batch}, images ${m.height}x${m.width} px, text embeddings [${m.batch}, 77, cross_attention_dim]`,
        stepsTimed: m.steps,
        warmupSteps: WARMUP,
        rounds: roundCount,
        cases: results,
        comparisons: comparisons(results),
      });
    }
    return {
      machine: machine(),
      loadAverage: {
        before: loadBefore.map((x) => Math.round(x * 100) / 100),
        after: loadavg().map((x) => Math.round(x * 100) / 100),
      },
      totalSeconds: Math.round((performance.now() - t0) / 100) / 10,
      setup:
        "Trainer (src/train/trainer.ts) on float32 CPU models: AdamW lr 1e-4, epsilon loss, DDPM schedule of the fixture, " +
        "latents sampled from the posterior (mean + std * noise) and scaled, noise and timesteps drawn by the trainer. " +
        "LoRA: rank 4 on to_q/to_k/to_v/to_out.0 (gaussian init), base frozen; full: every UNet parameter trains. " +
        "cached: batches of random posterior mean/std of the latent shape, no VAE loaded; pixels: random images in " +
        "[-1, 1] encoded by the VAE (no grad) every step. Text: random precomputed embeddings in every case (no text " +
        "encoder runs). The same batch every step; warm-up steps (the first allocates AdamW state) are not timed.",
      timingNote:
        "stepsPerSecond = 1000 / medianStepMs of the timed steps (one optimizer step each, no accumulation). Every " +
        "case runs `rounds` times, rounds in alternating case order, and reports its round with the lowest median " +
        "(all rounds' medians in medianStepMsPerRound): other work on the machine (see loadAverage) only slows " +
        "steps down. comparisons are same-run ratios of medianStepMs and peakAboveLoadedMB (null where a case failed).",
      memoryNote:
        "peakRssMB is the process's RSS high-water mark (VmHWM) in a fresh process per case. rssLoadedMB is the RSS " +
        "once the UNet (and for pixels the VAE) and the inputs were loaded, before LoRA/optimizer creation; " +
        "peakAboveLoadedMB = peak - loaded: LoRA adapters, gradients, AdamW moments, activations kept for backward " +
        "and the VAE's encode activations (pixels), plus allocator slack. gradientsAndMomentsMB is computed " +
        "(trainable parameters x 3 x 4 bytes), not measured: the floor of a full fine-tune's peak. The addon keeps " +
        "freed heap memory for reuse (mallopt: mmap above 32 MB, trim above 1 GB) and the trainer frees gradients " +
        "after every optimizer step, so a peak is the heap's high-water mark (most live memory at one moment plus " +
        "fragmentation) and can keep rising for some steps: peakAboveLoadedAfterEachStepMB shows the trajectory " +
        "(warm-up steps first), peakGrewAfterWarmupMB how much of it came during the timed steps. Ratios of peaks " +
        "are only meaningful where activations dominate (LoRA); at this size a full fine-tune's peak is mostly " +
        "optimizer state and slack. Fixed costs (libtorch, thread pools) are in rssLoadedMB, not in the peak above it.",
      models: out,
    };
  },
};
