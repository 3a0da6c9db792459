import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { ClipModel } from "../src/models/clip.js";
import { parseClipConfig, parseClipTextEncoderConfig } from "../src/models/clip_config.js";
import type { Tensor } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { expectClose, fixture, fixtureJson, get, golden, TOL, tempDir } from "./helpers/fixtures.js";

const CLIP_DIR = fixture("tiny-clip");
// Sizes from the fixture's config; fields it leaves out take transformers' defaults.
interface TowerJson {
  hidden_size: number;
  image_size?: number;
  num_channels?: number;
}
const CONFIG = fixtureJson<{ projection_dim?: number; text_config: TowerJson; vision_config: TowerJson }>(
  "tiny-clip",
  "config.json",
);
const PROJECTION = CONFIG.projection_dim ?? 512;
const IMAGE_SIZE = CONFIG.vision_config.image_size ?? 224;
const CHANNELS = CONFIG.vision_config.num_channels ?? 3;

let ref: Map<string, Tensor>;
let clip: ClipModel;
let dir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  ref = await golden("clip_score");
  clip = await ClipModel.load(CLIP_DIR);
  dir = await tempDir();
});
afterAll(async () => {
  clip.dispose();
  await dir.cleanup();
});

/** Rows of a [n, d] float tensor scaled to unit L2 norm (test-side math on a few numbers). */
function normalized(t: Tensor): Tensor {
  const [n, d] = t.shape as [number, number];
  const v = Float32Array.from(t.toTypedArray() as Float32Array);
  for (let i = 0; i < n; i++) {
    const row = v.subarray(i * d, (i + 1) * d);
    const norm = Math.sqrt(row.reduce((s, x) => s + x * x, 0));
    row.forEach((x, j) => (row[j] = x / norm));
  }
  return tensorFrom(v, [n, d]);
}

/** exp(logitScale) * a @ b^T for [n, d] and [m, d]. */
function scaledSimilarity(a: Tensor, b: Tensor, logitScale: number): Tensor {
  const [n, d] = a.shape as [number, number];
  const m = b.shape[0]!;
  const x = a.toTypedArray() as Float32Array;
  const y = b.toTypedArray() as Float32Array;
  const out = new Float32Array(n * m);
  const scale = Math.exp(logitScale);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += x[i * d + k]! * y[j * d + k]!;
      out[i * m + j] = scale * s;
    }
  }
  return tensorFrom(out, [n, m]);
}

describe("ClipModel parity with transformers CLIPModel (golden/clip_score)", () => {
  it("image and text embeddings, normalized embeddings and logits_per_image", async () => {
    const image = await clip.getImageFeatures(get(ref, "pixel_values"));
    const text = await clip.getTextFeatures(get(ref, "input_ids"), get(ref, "attention_mask"));
    await expectClose(image, get(ref, "image_embeds"), TOL.forward, "image_embeds");
    await expectClose(text, get(ref, "text_embeds"), TOL.forward, "text_embeds");
    const imageN = normalized(image);
    const textN = normalized(text);
    await expectClose(imageN, get(ref, "image_embeds_normalized"), TOL.forward, "image_embeds_normalized");
    await expectClose(textN, get(ref, "text_embeds_normalized"), TOL.forward, "text_embeds_normalized");
    const logits = scaledSimilarity(imageN, textN, clip.logitScale);
    await expectClose(logits, get(ref, "logits_per_image"), TOL.forward, "logits_per_image");
  });

  it("logitScale is the checkpoint's logit_scale", async () => {
    const weights = await readSafetensors(join(CLIP_DIR, "model.safetensors"), { names: ["logit_scale"] });
    const stored = weights.tensors.get("logit_scale")!.toTypedArray() as Float32Array;
    expect(clip.logitScale).toBe(stored[0]);
  });

  it("text features without a mask: the causal end-of-text row never sees right padding", async () => {
    const withMask = await clip.getTextFeatures(get(ref, "input_ids"), get(ref, "attention_mask"));
    const without = await clip.getTextFeatures(get(ref, "input_ids"));
    await expectClose(without, withMask, { atol: 1e-6, rtol: 0 }, "text_embeds without mask");
  });

  it("bfloat16 stays near the float32 reference", async () => {
    const bf = await ClipModel.load(CLIP_DIR, { dtype: "bfloat16" });
    const image = await bf.getImageFeatures(get(ref, "pixel_values"));
    expect(image.dtype).toBe("bfloat16");
    await expectClose(image, get(ref, "image_embeds"), { atol: 0.05, rtol: 0.05 }, "bf16 image_embeds");
    bf.dispose();
  });
});

describe("ClipModel errors", () => {
  type Config = Record<string, unknown> & { vision_config: Record<string, unknown> };
  async function editedFolder(name: string, edit: (config: Config) => void): Promise<string> {
    const out = join(dir.path, name);
    await mkdir(out, { recursive: true });
    const config = JSON.parse(await readFile(join(CLIP_DIR, "config.json"), "utf8")) as Config;
    edit(config);
    await writeFile(join(out, "config.json"), JSON.stringify(config));
    await copyFile(join(CLIP_DIR, "model.safetensors"), join(out, "model.safetensors"));
    return out;
  }

  it("a projection_dim that does not match the weights lists both projections with shapes", async () => {
    const other = PROJECTION - 4;
    const [text, vision] = [CONFIG.text_config.hidden_size, CONFIG.vision_config.hidden_size];
    const folder = await editedFolder("proj", (c) => (c.projection_dim = other));
    await expect(ClipModel.load(folder)).rejects.toThrow(
      new RegExp(
        "clip: the checkpoint does not match the model config\\n\\s+shape mismatches \\(2\\):\\n" +
          `\\s+text_projection\\.weight: checkpoint \\[${PROJECTION}, ${text}\\], model \\[${other}, ${text}\\]\\n` +
          `\\s+visual_projection\\.weight: checkpoint \\[${PROJECTION}, ${vision}\\], model \\[${other}, ${vision}\\]`,
      ),
    );
  });

  it("names the sub-config field and value", async () => {
    const folder = await editedFolder("act", (c) => (c.vision_config.hidden_act = "gelu_2"));
    await expect(ClipModel.load(folder)).rejects.toThrow(
      /config\.json: invalid CLIP config: vision_config\.hidden_act = "gelu_2"/,
    );
    const patch = IMAGE_SIZE + 76;
    const size = await editedFolder("size", (c) => (c.vision_config.patch_size = patch));
    await expect(ClipModel.load(size)).rejects.toThrow(
      `vision_config.patch_size = ${patch}: patch_size ${patch} is larger than image_size ${IMAGE_SIZE}`,
    );
  });

  it("refuses pixel values of the wrong size", async () => {
    const small = tensorFrom(new Float32Array(CHANNELS * 32 * 32), [1, CHANNELS, 32, 32]);
    await expect(clip.getImageFeatures(small)).rejects.toThrow(
      `pixelValues must be [batch, ${CHANNELS}, ${IMAGE_SIZE}, ${IMAGE_SIZE}]`,
    );
  });

  it("dispose() is idempotent", async () => {
    const other = await ClipModel.load(CLIP_DIR);
    other.dispose();
    other.dispose();
    expect(other.disposed).toBe(true);
    await expect(other.getImageFeatures(get(ref, "pixel_values"))).rejects.toThrow(/ClipModel is disposed/);
  });
});

describe("CLIP configs", () => {
  it("fills transformers' defaults", () => {
    const c = parseClipConfig({}, "config.json");
    expect(c.projection_dim).toBe(512);
    expect(c.logit_scale_init_value).toBe(2.6592);
    expect(c.text_config).toMatchObject({
      vocab_size: 49408,
      hidden_size: 512,
      intermediate_size: 2048,
      num_hidden_layers: 12,
      num_attention_heads: 8,
      max_position_embeddings: 77,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      eos_token_id: 49407,
    });
    expect(c.vision_config).toMatchObject({
      hidden_size: 768,
      intermediate_size: 3072,
      num_hidden_layers: 12,
      num_attention_heads: 12,
      num_channels: 3,
      image_size: 224,
      patch_size: 32,
      hidden_act: "quick_gelu",
    });
  });

  it("builds a sub-config from the legacy *_config_dict alone, as transformers does", () => {
    const c = parseClipConfig(
      { text_config: { hidden_size: 64, num_attention_heads: 4 }, text_config_dict: { hidden_size: 128 } },
      "config.json",
    );
    expect(c.text_config.hidden_size).toBe(128);
    expect(c.text_config.num_attention_heads).toBe(8);
  });

  it("reads the text tower of a CLIPModel config and skips the rest of its checkpoint", () => {
    const { config, ignorePrefixes } = parseClipTextEncoderConfig(
      { model_type: "clip", text_config: { hidden_size: 16, num_attention_heads: 2 } },
      "config.json",
    );
    expect(config.hidden_size).toBe(16);
    expect(ignorePrefixes).toContain("vision_model.");
  });

  it("errors name the file, the field and the value", () => {
    expect(() => parseClipTextEncoderConfig({ hidden_size: "big" }, "/x/config.json")).toThrow(
      /\/x\/config\.json: invalid CLIP config: hidden_size = "big": /,
    );
    expect(() => parseClipTextEncoderConfig([], "/x/config.json")).toThrow(/must be a JSON object/);
  });
});
