// UNet forward and forward+backward (all parameters trainable, mse loss) time and peak
// memory, with and without gradient checkpointing, on the fixture UNet and on an
// SD-2-base-shaped UNet with fewer channels (random init). Every case runs in its own
// process so that its RSS high-water mark is its own.
//   npm run bench -- unet [--quick]
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { machine, runCaseProcess } from "./_util.js";
import type { UNetCase } from "./_unet_case.js";
import type { Benchmark } from "./run.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = process.env.SDTUNE_FIXTURES ?? resolve(here, "..", "..", "shared", "fixtures");

/** SD-2-base's block structure (4 blocks, CrossAttnDown x3 + Down, head dim 64, linear projections, cross 1024) at 1/5 of the width. */
export const SD2_BASE_NARROW = {
  block_out_channels: [64, 128, 256, 256],
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  layers_per_block: 2,
  attention_head_dim: [1, 2, 4, 4], // heads; head dim 64 as in SD 2 (320 / 5)
  use_linear_projection: true,
  cross_attention_dim: 1024,
  norm_num_groups: 32,
  sample_size: 32,
};

function runChild(c: UNetCase): Record<string, unknown> {
  return runCaseProcess(join(here, "_unet_case.ts"), c, { what: "unet benchmark case" });
}

export const benchmark: Benchmark = {
  description:
    "UNet forward / forward+backward (all parameters trainable) time and peak RSS, with and without gradient checkpointing; one process per case",
  async run(args) {
    const quick = args.includes("--quick");
    const models = [
      {
        name: "fixture tiny-sd UNet (blocks [32, 64])",
        model: { dir: join(fixtures, "tiny-sd", "unet") },
        batch: 2,
        height: 8,
        width: 12,
        textLength: 77,
        repeats: quick ? 3 : 10,
      },
      {
        name: "SD-2-base-shaped UNet, blocks [64, 128, 256, 256], random init",
        model: { config: SD2_BASE_NARROW },
        batch: quick ? 1 : 2,
        height: quick ? 16 : 32,
        width: quick ? 16 : 32,
        textLength: 77,
        repeats: quick ? 2 : 3,
      },
    ];
    const cases = [];
    for (const m of models) {
      for (const [mode, checkpointing] of [
        ["forward", false],
        ["forward+backward", false],
        ["forward+backward", true],
      ] as const) {
        const c: UNetCase = { ...m, mode, checkpointing };
        const result = runChild(c);
        cases.push({
          model: m.name,
          input: `latents [${m.batch}, 4, ${m.height}, ${m.width}], text [${m.batch}, ${m.textLength}, …]`,
          mode,
          gradientCheckpointing: checkpointing,
          ...result,
        });
      }
    }
    return {
      machine: machine(),
      note:
        "peakRssMB is the process's RSS high-water mark (VmHWM) in a fresh process per case; " +
        "peakAboveLoadedMB subtracts the RSS once the model was loaded (weights, allocator, the addon). " +
        "forward+backward makes every parameter trainable (full fine-tuning gradients). " +
        "The addon keeps freed heap memory for reuse (mallopt: mmap above 32 MB, trim above 1 GB), so a peak " +
        "is the heap's high-water mark: the most live memory at any moment plus fragmentation.",
      cases,
    };
  },
};
