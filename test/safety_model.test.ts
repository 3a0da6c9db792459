// Models, safe by construction. Memory is estimated before anything is built: the parameter
// counts of the estimate against the fixture models' own weight files, a model config asking for
// terabytes refused at once, and a training run that cannot fit stopped in preflight with the
// estimate, leaving no output folder. And a model folder's links are not followed out of it.
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, rename, rm, symlink } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { inspectSafetensors } from "../src/io/safetensors.js";
import {
  nativeClipModelConfig,
  nativeClipTextConfig,
  parseClipConfig,
  parseClipTextEncoderConfig,
} from "../src/models/clip_config.js";
import { nativeUNetConfig, nativeVAEConfig, parseUNetConfig, parseVAEConfig } from "../src/models/config.js";
import { resolveWeightFiles } from "../src/models/files.js";
import {
  clipModelParameters,
  textEncoderParameters,
  unetActivations,
  unetParameters,
  vaeParameters,
} from "../src/models/memory.js";
import { UNet } from "../src/models/unet.js";
import { availableMemory, checkMemory, MEMORY_CHECK_ENV } from "../src/runtime.js";
import { train } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { minimal } from "./helpers/train_config.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-memory-");
});
afterAll(async () => {
  await dir.cleanup();
});

const json = (...parts: string[]): unknown => JSON.parse(readFileSync(fixture(...parts), "utf8"));

/** Elements in a component's weight files (position_ids are buffers, not parameters). */
async function stored(folder: string): Promise<number> {
  let n = 0;
  for (const file of resolveWeightFiles(folder, {})) {
    for (const t of (await inspectSafetensors(file)).tensors) {
      if (!t.name.endsWith("position_ids")) n += t.shape.reduce((a, b) => a * b, 1);
    }
  }
  return n;
}

describe("parameter estimates", () => {
  it("match the fixture models' weight files within 0.5%", async () => {
    const cases: [string, number][] = [
      [
        fixture("tiny-sd", "unet"),
        unetParameters(nativeUNetConfig(parseUNetConfig(json("tiny-sd", "unet", "config.json"), "unet"))),
      ],
      [
        fixture("tiny-sd", "vae"),
        vaeParameters(nativeVAEConfig(parseVAEConfig(json("tiny-sd", "vae", "config.json"), "vae"))),
      ],
      [
        fixture("tiny-sd", "text_encoder"),
        textEncoderParameters(
          nativeClipTextConfig(parseClipTextEncoderConfig(json("tiny-sd", "text_encoder", "config.json"), "te").config),
        ),
      ],
      [
        fixture("tiny-clip"),
        clipModelParameters(nativeClipModelConfig(parseClipConfig(json("tiny-clip", "config.json"), "clip"))),
      ],
    ];
    for (const [folder, estimate] of cases) {
      const real = await stored(folder);
      expect(Math.abs(estimate - real) / real, folder).toBeLessThan(0.005);
    }
  });

  it("activations grow with the latent area, and gradient checkpointing keeps fewer", () => {
    const unet = nativeUNetConfig(parseUNetConfig(json("tiny-sd", "unet", "config.json"), "unet"));
    const small = unetActivations(unet, 8, 8, false);
    const large = unetActivations(unet, 16, 16, false);
    const checkpointed = unetActivations(unet, 16, 16, true);
    expect(large.kept).toBeGreaterThan(3 * small.kept);
    expect(checkpointed.kept).toBeLessThan(large.kept);
  });
});

describe("refusals before allocation", () => {
  it("a UNet config asking for more memory than the machine has is refused with the estimate", async () => {
    const config = json("tiny-sd", "unet", "config.json") as Record<string, unknown>;
    const levels = (config.block_out_channels as number[]).length;
    const huge = { ...config, block_out_channels: Array(levels).fill(8192), layers_per_block: 32 };
    const error = await UNet.fromConfig(huge).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/^UNet\.fromConfig needs about [\d.]+ [KMGT]iB \(weights /);
    expect((error as Error).message).toContain("available");
  });

  it("a training stage that cannot fit stops in preflight, naming the stage and the parts, writing nothing", async () => {
    const out = join(dir.path, "too-big");
    const error = await train({
      ...minimal,
      model: fixture("tiny-sd"),
      output_dir: out,
      stages: [{ name: "huge", resolution: 4096, train_batch_size: 1024 }],
    }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/^stage "huge" needs about .*activations \(batch 1024 at 4096x4096\)/);
    expect((error as Error).message).toContain("gradient_checkpointing");
    expect(existsSync(out)).toBe(false);
  });

  it("compares with what the device has; SDTUNE_MEMORY_CHECK=off skips the estimate", () => {
    const available = availableMemory("cpu")!;
    expect(available).toBeGreaterThan(0);
    expect(() => checkMemory("a test", { part: available * 2 }, "cpu", "Do less.")).toThrow(
      /a test needs about .* \(part .*\), but cpu has .* available\. Do less\./,
    );
    expect(() => checkMemory("a test", { part: 1 }, "cpu", "Do less.")).not.toThrow();
    process.env[MEMORY_CHECK_ENV] = "off";
    try {
      expect(() => checkMemory("a test", { part: available * 2 }, "cpu", "Do less.")).not.toThrow();
    } finally {
      delete process.env[MEMORY_CHECK_ENV];
    }
  });
});

describe("links in a model folder", () => {
  it("a weight file linking out of the model is refused; a link inside the pipeline folder is followed", async () => {
    const model = join(dir.path, "linked-model");
    await cp(fixture("tiny-sd"), model, { recursive: true });
    const weights = join(model, "unet", "diffusion_pytorch_model.safetensors");
    const elsewhere = join(dir.path, "elsewhere");
    await mkdir(elsewhere);
    await rename(weights, join(elsewhere, "weights.safetensors"));
    await symlink(join(elsewhere, "weights.safetensors"), weights);
    await expect(UNet.load(join(model, "unet"))).rejects.toThrow(
      `${weights}: a link to ${join(elsewhere, "weights.safetensors")}, outside the model folder`,
    );
    // The same file kept inside the pipeline folder (as a shared blob would be) loads.
    await mkdir(join(model, "blobs"));
    await rename(join(elsewhere, "weights.safetensors"), join(model, "blobs", "unet.safetensors"));
    await rm(weights);
    await symlink(join("..", "blobs", "unet.safetensors"), weights);
    const unet = await UNet.load(join(model, "unet"));
    unet.dispose();
  });
});
