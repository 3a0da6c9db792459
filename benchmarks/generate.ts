// Text-to-image seconds per image and pipeline overhead (total time / UNet time), for the
// fixture tiny pipeline and for an SD-2-base-shaped random-init pipeline (built with
// UNet/VAE/TextEncoder.fromConfig, written with savePipeline, loaded with loadPipeline).
//   npm run bench -- generate [--quick] [--device cuda] [--dtype float16] [--size 512] [--steps 2] [--images 1]
// --quick: an SD-2-base-shaped pipeline at 1/5 width (UNet) and a 2-layer text encoder, 64 px.
// The SD-2-base-shaped pipeline runs untiled and tiled VAE decode (default tile size); its
// outside-UNet share at the default 50 steps is derived from the measured per-step and
// per-image times (a 512 px CFG step of the 865 M UNet takes many seconds on a CPU).
import { rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

import type { ModelDType } from "../src/models/options.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import { VAE } from "../src/models/vae.js";
import { generateImages, type GenerateTimings } from "../src/pipeline/generate.js";
import { loadPipeline, savePipeline, type StableDiffusionPipeline } from "../src/pipeline/index.js";
import { readSchedulerConfig } from "../src/sched/config.js";
import { ClipTokenizer } from "../src/text/clip_tokenizer.js";
import { machine } from "./_util.js";
import type { Benchmark } from "./run.js";
import { SD2_BASE_NARROW } from "./unet.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = process.env.SDTUNE_FIXTURES ?? resolve(here, "..", "..", "shared", "fixtures");

/** stabilityai/stable-diffusion-2-base unet/config.json (the fields that differ from diffusers' defaults). */
const SD2_BASE_UNET = {
  block_out_channels: [320, 640, 1280, 1280],
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  layers_per_block: 2,
  attention_head_dim: [5, 10, 20, 20],
  use_linear_projection: true,
  cross_attention_dim: 1024,
  sample_size: 64,
};

/** Its vae/config.json. */
export const SD2_VAE = {
  block_out_channels: [128, 256, 512, 512],
  down_block_types: Array(4).fill("DownEncoderBlock2D"),
  up_block_types: Array(4).fill("UpDecoderBlock2D"),
  layers_per_block: 2,
  latent_channels: 4,
  sample_size: 512,
  scaling_factor: 0.18215,
};

/** Its text_encoder/config.json (OpenCLIP ViT-H text tower as a CLIPTextModel, 23 layers). */
const SD2_TEXT = {
  architectures: ["CLIPTextModel"],
  hidden_size: 1024,
  intermediate_size: 4096,
  num_hidden_layers: 23,
  num_attention_heads: 16,
  hidden_act: "gelu",
  max_position_embeddings: 77,
  vocab_size: 49408,
  eos_token_id: 2,
  projection_dim: 512,
};

interface Setup {
  device: string;
  dtype: ModelDType;
  size: number;
  steps: number;
  images: number;
  vaeTiling?: boolean;
}

/** generate()'s default step count (src/pipeline/options.ts). */
const DEFAULT_STEPS = 50;

async function measure(
  name: string,
  pipe: StableDiffusionPipeline,
  s: Setup,
  size: number,
): Promise<Record<string, unknown>> {
  const options = {
    prompt: "a photograph of an astronaut riding a horse",
    width: size,
    height: size,
    steps: s.steps,
    seed: 1,
    numImages: s.images,
    ...(s.vaeTiling === undefined ? {} : { vaeTiling: s.vaeTiling }),
  };
  // Warm-up at a small size: loads kernels/allocator without paying a second 512 px run.
  const warm = Math.min(size, 8 * pipe.vaeScaleFactor);
  await generateImages(pipe.context(), { ...options, width: warm, height: warm, numImages: 1, steps: 1 });
  const r = await generateImages(pipe.context(), options, { syncTimings: true });
  const t = r.timings;
  const perImage = (x: number): number => round(x / s.images);
  return {
    pipeline: name,
    image: `${size}x${size}`,
    steps: s.steps,
    images: s.images,
    vaeTiling: s.vaeTiling ?? "auto",
    sampler: r.sampler,
    outsideUnetShareMeasured: round((t.total - t.unet) / t.total),
    atDefaultSteps: atSteps(t, s.steps, DEFAULT_STEPS),
    secondsPerImage: perImage(t.total),
    unetSecondsPerImage: perImage(t.unet),
    overheadRatio: round(t.total / t.unet),
    breakdownSecondsPerImage: {
      textEncoder: perImage(t.textEncoder),
      unet: perImage(t.unet),
      samplerAndGuidance: perImage(t.denoise - t.unet),
      vaeDecode: perImage(t.decode),
      png: perImage(t.png),
      other: perImage(t.total - t.textEncoder - t.denoise - t.decode - t.png),
    },
  };
}

/**
 * The outside-UNet share at `target` steps, scaling the per-step parts (UNet, sampler and
 * guidance) and keeping the per-run parts (text encoder, decode, PNG, rest): derived unless the
 * run itself took `target` steps (then it is the measured share).
 */
function atSteps(t: GenerateTimings, steps: number, target: number): Record<string, unknown> {
  const perStep = t.denoise / steps;
  const unet = (t.unet / steps) * target;
  const total = t.total - t.denoise + perStep * target;
  return {
    steps: target,
    derived: steps !== target,
    totalSeconds: round(total),
    outsideUnetShare: round((total - unet) / total),
  };
}

function round(x: number): number {
  return Number(x.toPrecision(4));
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

export const benchmark: Benchmark = {
  description:
    "text-to-image seconds per image and total / UNet time (pipeline overhead): fixture tiny pipeline and an SD-2-base-shaped random-init pipeline",
  async run(args) {
    const quick = args.includes("--quick");
    const s: Setup = {
      device: flag(args, "--device") ?? "cpu",
      dtype: (flag(args, "--dtype") ?? "float32") as ModelDType,
      size: Number(flag(args, "--size") ?? (quick ? 64 : 512)),
      steps: Number(flag(args, "--steps") ?? (quick ? 3 : 2)),
      images: Number(flag(args, "--images") ?? (quick ? 2 : 1)),
    };
    const load = { device: s.device, dtype: s.dtype };
    const results: Record<string, unknown>[] = [];

    const tiny = await loadPipeline(join(fixtures, "tiny-sd"), load);
    // At its native 16x16 the tiny UNet costs next to nothing: the worst case for overhead.
    results.push(
      await measure(
        "fixture tiny-sd",
        tiny,
        { ...s, steps: 20 },
        (tiny.unet.config.sample_size as number) * tiny.vaeScaleFactor,
      ),
    );

    // The SD-2-base-shaped pipeline, random init, written as a diffusers folder and loaded back.
    const dir = join(tmpdir(), `sdtune-bench-generate-${process.pid}`);
    try {
      const built = performance.now();
      const unet = await UNet.fromConfig(quick ? SD2_BASE_NARROW : SD2_BASE_UNET, { seed: 1 });
      const vae = await VAE.fromConfig(quick ? { ...SD2_VAE, block_out_channels: [32, 64, 128, 128] } : SD2_VAE, {
        seed: 2,
      });
      const textEncoder = await TextEncoder.fromConfig(quick ? { ...SD2_TEXT, num_hidden_layers: 2 } : SD2_TEXT, {
        seed: 3,
      });
      const tokenizer = await ClipTokenizer.fromPretrained(join(fixtures, "tiny-sd", "tokenizer"));
      const schedulerConfig = readSchedulerConfig(join(fixtures, "tiny-sd"));
      await savePipeline(dir, { unet, vae, textEncoder, tokenizer, schedulerConfig });
      const params = unet.parameterInfo().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
      unet.dispose();
      vae.dispose();
      textEncoder.dispose();
      const buildSeconds = (performance.now() - built) / 1000;
      const loaded = performance.now();
      const sd2 = await loadPipeline(dir, load);
      const loadSeconds = (performance.now() - loaded) / 1000;
      const name = quick
        ? "SD-2-base-shaped at 1/5 width (UNet blocks [64, 128, 256, 256]), random init"
        : "SD-2-base-shaped (UNet blocks [320, 640, 1280, 1280], 23-layer text encoder), random init";
      for (const vaeTiling of [false, true]) {
        results.push({
          ...(await measure(name, sd2, { ...s, vaeTiling }, s.size)),
          unetParameters: params,
          buildAndSaveSeconds: round(buildSeconds),
          loadSeconds: round(loadSeconds),
        });
      }
      sd2.dispose();
    } finally {
      tiny.dispose();
      await rm(dir, { recursive: true, force: true });
    }
    return { machine: machine(), loadAverage: loadavg(), device: s.device, dtype: s.dtype, results };
  },
};
