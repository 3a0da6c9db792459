import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { native, type ProgressEvent, type Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { VAE } from "../src/models/vae.js";
import { expectClose, fixture, fixtureJson, get, golden, tempDir, TOL, values } from "./helpers/fixtures.js";

const vaeDir = fixture("tiny-sd", "vae");
// Channels and block layout from the fixture's own config.
interface VaeJson {
  block_out_channels: number[];
  down_block_types: string[];
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  norm_num_groups: number;
}
const CONFIG = fixtureJson<VaeJson>("tiny-sd", "vae", "config.json");
/** Pixels per latent: one downsampler between consecutive blocks. */
const FACTOR = 2 ** (CONFIG.block_out_channels.length - 1);

describe("AutoencoderKL against diffusers (golden/vae.safetensors)", () => {
  let vae: VAE;
  let g: Map<string, Tensor>;
  beforeAll(async () => {
    vae = await VAE.load(vaeDir);
    g = await golden("vae");
  });
  afterAll(() => vae.dispose());

  it("reads scaling_factor and the spatial factor from the config", async () => {
    expect(vae.scalingFactor).toBe(vae.config.scaling_factor);
    expect(Math.fround(vae.scalingFactor)).toBe((await values(get(g, "scaling_factor")))[0]);
    expect(vae.scaleFactor).toBe(FACTOR);
  });

  it("encodes to the same moments, mean, logvar, std and mode", async () => {
    const d = await vae.encode(get(g, "image"));
    await expectClose(d.moments, get(g, "moments"), TOL.forward, "moments");
    await expectClose(d.mean, get(g, "latent_mean"), TOL.forward, "latent_mean");
    await expectClose(d.mean, get(g, "latent_mode"), TOL.forward, "latent_mode");
    await expectClose(d.logvar, get(g, "latent_logvar"), TOL.forward, "latent_logvar");
    await expectClose(d.std, get(g, "latent_std"), TOL.forward, "latent_std");
  });

  it("samples mean + std * noise with the reference's noise", async () => {
    const s = await vae.sample(get(g, "image"), { noise: get(g, "posterior_sample_noise") });
    await expectClose(s, get(g, "posterior_sample"), TOL.forward, "posterior_sample");
    // scaled: the UNet's latents = sample * scaling_factor.
    const scaled = await vae.sample(get(g, "image"), { noise: get(g, "posterior_sample_noise"), scaled: true });
    const factor = (await values(get(g, "scaling_factor")))[0]!;
    const expected = Float32Array.from(await values(get(g, "posterior_sample")), (v) => Math.fround(v * factor));
    await expectClose(scaled, tensorFrom(expected, get(g, "posterior_sample").shape), TOL.forward, "scaled sample");
  });

  it("draws its noise like torch.Generator().manual_seed(seed)", async () => {
    const image = get(g, "image");
    const a = await vae.sample(image, { seed: 7 });
    const b = await vae.sample(image, { seed: 7 });
    const c = await vae.sample(image, { seed: 8 });
    const viaNoise = await vae.sample(image, { noise: native().ops.randn(a.shape, { seed: 7 }) });
    expect(native().ops.maxAbsDiff(a, b)).toBe(0);
    expect(native().ops.maxAbsDiff(a, viaNoise)).toBe(0);
    expect(native().ops.maxAbsDiff(a, c)).toBeGreaterThan(0);
  });

  it("decodes to the same images, unscaled and from the pipeline's scaled latents", async () => {
    await expectClose(await vae.decode(get(g, "decode_latents")), get(g, "decoded"), TOL.forward, "decoded");
    const fromScaled = await vae.decode(get(g, "decode_latents"), { scaled: true });
    await expectClose(fromScaled, get(g, "decoded_from_scaled"), TOL.forward, "decoded_from_scaled");
  });

  it("reports progress per image and stops when aborted", async () => {
    const events: ProgressEvent[] = [];
    await vae.decode(get(g, "decode_latents"), { onProgress: (e) => events.push(e) });
    await new Promise((resolve) => setImmediate(resolve));
    const batch = get(g, "decode_latents").shape[0]!;
    expect(events.map((e) => [e.phase, e.step, e.total])).toEqual(
      Array.from({ length: batch }, (_, i) => ["vae.decode", i + 1, batch]),
    );
    const controller = new AbortController();
    controller.abort();
    const error = await vae.decode(get(g, "decode_latents"), { signal: controller.signal }).catch((e: Error) => e);
    expect((error as Error).name).toBe("AbortError");
  });

  it("decodes in tiles: the first tile is untouched by blending, the result has the full size", async () => {
    const latents = get(g, "decode_latents");
    const [B, C, h, w] = latents.shape as [number, number, number, number];
    const [H, W] = [h * FACTOR, w * FACTOR];
    const O = CONFIG.out_channels;
    const tile = 4; // latent tile, smaller than the golden latents
    expect(Math.min(h, w)).toBeGreaterThan(tile);
    const tiled = await vae.decode(latents, { tileSize: tile, tileOverlap: 0.25 });
    expect(tiled.shape).toEqual([B, O, H, W]);
    // A tile no larger than the latents is a plain decode.
    const whole = await vae.decode(latents, { tileSize: Math.max(h, w) });
    expect(native().ops.maxAbsDiff(whole, await vae.decode(latents))).toBe(0);
    // Top-left tile: latents [0:tile, 0:tile] -> pixels [0:T, 0:T] (T = tile * factor),
    // kept up to row_limit = T - T * overlap.
    const T = tile * FACTOR;
    const limit = T - Math.floor(T * 0.25);
    const all = await values(latents);
    const corner = new Float32Array(B * C * tile * tile);
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++)
        for (let y = 0; y < tile; y++)
          for (let x = 0; x < tile; x++)
            corner[((b * C + c) * tile + y) * tile + x] = all[((b * C + c) * h + y) * w + x]!;
    const alone = await values(await vae.decode(tensorFrom(corner, [B, C, tile, tile])));
    const got = await values(tiled);
    let worst = 0;
    for (let b = 0; b < B; b++)
      for (let c = 0; c < O; c++)
        for (let y = 0; y < limit; y++)
          for (let x = 0; x < limit; x++) {
            const d = got[((b * O + c) * H + y) * W + x]! - alone[((b * O + c) * T + y) * T + x]!;
            worst = Math.max(worst, Math.abs(d));
          }
    expect(worst).toBe(0);
  });

  it("refuses inputs of the wrong shape before running", async () => {
    await expect(vae.decode(get(g, "image"))).rejects.toThrow(
      `latents must be [batch, ${CONFIG.latent_channels}, height, width]`,
    );
    await expect(vae.encode(get(g, "decode_latents"))).rejects.toThrow(
      `images must be [batch, ${CONFIG.in_channels}, height, width]`,
    );
    await expect(vae.decode(get(g, "decode_latents"), { tileSize: 0 })).rejects.toThrow(/tileSize 0/);
  });
});

describe("VAE loading", () => {
  let tmp: { path: string; cleanup(): Promise<void> };
  beforeAll(async () => {
    tmp = await tempDir("sdtune-vae-");
  });
  afterAll(() => tmp.cleanup());

  it("loads checkpoints with the old query/key/value/proj_attn attention names", async () => {
    const dir = join(tmp.path, "legacy");
    await mkdir(dir);
    await copyFile(join(vaeDir, "config.json"), join(dir, "config.json"));
    const { tensors } = await readSafetensors(join(vaeDir, "diffusion_pytorch_model.safetensors"));
    const renamed = new Map<string, Tensor>();
    const old: Record<string, string> = { to_q: "query", to_k: "key", to_v: "value", "to_out.0": "proj_attn" };
    for (const [name, t] of tensors) {
      renamed.set(
        name.replace(/attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./, (_, m: string) => `attentions.0.${old[m]}.`),
        t,
      );
    }
    expect([...renamed.keys()].some((k) => k.includes("mid_block.attentions.0.proj_attn.weight"))).toBe(true);
    await writeSafetensors(join(dir, "diffusion_pytorch_model.safetensors"), renamed);
    const vae = await VAE.load(dir);
    const g = await golden("vae");
    await expectClose(await vae.decode(get(g, "decode_latents")), get(g, "decoded"), TOL.forward, "legacy names");
    vae.dispose();
  });

  it("names the file, field and value of an unsupported config", async () => {
    const base = JSON.parse(await readFile(join(vaeDir, "config.json"), "utf8")) as Record<string, unknown>;
    const G = CONFIG.norm_num_groups;
    const odd = CONFIG.block_out_channels[1]! + G / 2;
    for (const [field, value, pattern] of [
      [
        "down_block_types",
        CONFIG.down_block_types.map((t, i) => (i === 1 ? "AttnDownEncoderBlock2D" : t)),
        /"down_block_types\.1" = "AttnDownEncoderBlock2D" is not supported/,
      ],
      [
        "block_out_channels",
        CONFIG.block_out_channels.map((c, i) => (i === 1 ? odd : c)),
        new RegExp(`"block_out_channels\\.1" = ${odd} is not divisible by norm_num_groups \\(${G}\\)`),
      ],
      ["latent_channels", -4, /"latent_channels" = -4: Too small/],
      ["use_quant_conv", false, /"use_quant_conv" = false is not supported/],
    ] as const) {
      const dir = join(tmp.path, `bad-${field}`);
      await mkdir(dir);
      await writeFile(join(dir, "config.json"), JSON.stringify({ ...base, [field]: value }));
      const error = await VAE.load(dir).catch((e: Error) => e);
      expect((error as Error).message, field).toMatch(pattern);
      expect((error as Error).message, field).toContain(join(dir, "config.json"));
    }
  });

  it("builds a random VAE from a config and runs it in bfloat16", async () => {
    const config = JSON.parse(await readFile(join(vaeDir, "config.json"), "utf8")) as object;
    const vae = await VAE.fromConfig(config, { seed: 3, dtype: "bfloat16" });
    const size = 4 * FACTOR;
    const images = native().ops.randn([1, CONFIG.in_channels, size, size], { seed: 1 });
    const d = await vae.encode(images);
    expect(d.mean.shape).toEqual([1, CONFIG.latent_channels, size / FACTOR, size / FACTOR]);
    expect(d.mean.dtype).toBe("bfloat16");
    const out = await vae.decode(d.mean);
    expect(out.shape).toEqual([1, CONFIG.out_channels, size, size]);
    expect(Array.from(await values(out)).every(Number.isFinite)).toBe(true);
    vae.dispose();
    vae.dispose();
    await expect(vae.decode(d.mean)).rejects.toThrow(/disposed/);
  });
});
