// Safe by construction, weights side: nothing non-finite is ever saved (checkpoint, LoRA,
// model), a LoRA file holding NaN/Inf is refused on load, and a float32 run whose weights
// diverge stops at once without writing a LoRA. A bounded fuzz throws damaged LoRA files
// at the loader: it refuses them with an error naming the file, never crashes.
import { existsSync, readdirSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { isFiniteTensor, NonFiniteError } from "../src/io/finite.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { loadLoraFile, saveLora } from "../src/lora/index.js";
import type { Tensor } from "../src/native/index.js";
import { train } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";
import { rng } from "./helpers/rng.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-safety-weights-");
  data = join(dir.path, "data");
  for (let i = 0; i < 3; i++) await writeImage(join(data, `img${i}.png`), { width: 20, height: 20, seed: i });
  await writeText(
    join(data, "metadata.jsonl"),
    [0, 1, 2].map((i) => JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` })).join("\n"),
  );
});
afterAll(async () => dir.cleanup());

const kohyaFixture = () => fixture("lora", "kohya", "lora.safetensors");

/** A copy of the fixture's kohya LoRA with `value` written into the first element of its first up weight. */
async function poisonedLora(name: string, value: number): Promise<{ path: string; tensor: string }> {
  const { tensors, metadata } = await readSafetensors(kohyaFixture());
  const copies = new Map<string, Tensor>();
  for (const [k, t] of tensors) copies.set(k, t.clone());
  const target = [...copies.keys()].find((k) => k.endsWith("lora_up.weight"))!;
  const t = copies.get(target)!;
  const f32 = t.dtype === "float32" ? t : await t.to({ dtype: "float32" });
  (f32.toTypedArray() as Float32Array)[0] = value;
  copies.set(target, f32);
  const path = join(dir.path, `${name}.safetensors`);
  await writeSafetensors(path, copies, metadata);
  return { path, tensor: target };
}

describe("finite weights", () => {
  it("the scan finds NaN and infinities in every float format", async () => {
    const { tensors } = await readSafetensors(kohyaFixture());
    const t = [...tensors.values()].find((x) => x.shape.length === 2)!.clone();
    const f32 = t.dtype === "float32" ? t : await t.to({ dtype: "float32" });
    expect(isFiniteTensor(f32)).toBe(true);
    for (const dtype of ["float16", "bfloat16", "float64"] as const)
      expect(isFiniteTensor(await f32.to({ dtype }))).toBe(true);
    (f32.toTypedArray() as Float32Array)[1] = Number.NEGATIVE_INFINITY;
    for (const dtype of ["float32", "float16", "bfloat16", "float64"] as const) {
      expect(isFiniteTensor(await f32.to({ dtype })), dtype).toBe(false);
    }
    (f32.toTypedArray() as Float32Array)[1] = Number.NaN;
    expect(isFiniteTensor(f32)).toBe(false);
  });

  it("a LoRA file with NaN or Inf is refused on load, naming the file and tensor", async () => {
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const bad = await poisonedLora(`poisoned-${value}`, value);
      const error = await loadLoraFile(bad.path).catch((e: Error) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toContain(bad.path);
      expect((error as Error).message).toContain(bad.tensor);
      expect((error as Error).message).toMatch(/not finite/);
    }
    expect((await loadLoraFile(kohyaFixture())).adapters.size).toBeGreaterThan(0);
  });

  it("saveLora refuses non-finite weights and writes nothing", async () => {
    const weights = await loadLoraFile(kohyaFixture());
    const first = [...weights.adapters.values()][0]!;
    const up = first.up.dtype === "float32" ? first.up.clone() : await first.up.to({ dtype: "float32" });
    (up.toTypedArray() as Float32Array)[0] = Number.NaN;
    first.up = up;
    const target = join(dir.path, "never.safetensors");
    const error = await saveLora(target, weights, { format: "kohya" }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(NonFiniteError);
    expect((error as Error).message).toContain(target);
    expect(existsSync(target)).toBe(false);
  });

  it("a float32 run whose weights blow up stops at once, writes no LoRA and saves no bad checkpoint", async () => {
    const out = join(dir.path, "diverged");
    const error = await train({
      model: fixture("tiny-sd"),
      output_dir: out,
      dataset: { path: data },
      resolution: 16,
      seed: 1,
      mixed_precision: "no",
      device: "cpu",
      learning_rate: 1e308,
      max_train_steps: 3,
      checkpointing_steps: 1,
    }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/not finite|NaN or infinite/);
    expect((error as Error).message).toContain(join(out, "train", "checkpoints"));
    expect(existsSync(join(out, "train", "lora"))).toBe(false);
    // Whatever checkpoint exists holds finite weights only.
    const folder = join(out, "train", "checkpoints");
    for (const c of existsSync(folder) ? readdirSync(folder) : []) {
      const { tensors } = await readSafetensors(join(folder, c, "training_state.safetensors"));
      for (const [name, t] of tensors) expect(isFiniteTensor(t), `${c}/${name}`).toBe(true);
    }
  });
});

describe("fuzz", () => {
  it("damaged LoRA files are refused with the file named, never a crash (bounded time)", async () => {
    const original = await readFile(kohyaFixture());
    const headerLength = Number(original.readBigUInt64LE(0));
    const random = rng(99);
    const started = Date.now();
    let refused = 0;
    let accepted = 0;
    for (let i = 0; i < 150 && Date.now() - started < 10_000; i++) {
      const bytes = Buffer.from(original);
      const mode = i % 3;
      if (mode === 0) {
        // Flip bytes in the JSON header.
        for (let k = 0; k < 4; k++) bytes[8 + Math.floor(random() * headerLength)] = Math.floor(random() * 256);
      } else if (mode === 1) {
        // Truncate anywhere.
        bytes.fill(0, Math.floor(random() * bytes.length));
      } else {
        // Garble the tensor bytes (may make NaN/Inf, which must be refused too).
        for (let k = 0; k < 16; k++) {
          const at = 8 + headerLength + Math.floor(random() * (bytes.length - 8 - headerLength));
          bytes[at] = 0xff;
        }
      }
      const path = join(dir.path, `fuzz-${i}.safetensors`);
      await writeFile(path, mode === 1 ? bytes.subarray(0, Math.max(1, Math.floor(random() * bytes.length))) : bytes);
      try {
        const weights = await loadLoraFile(path);
        for (const a of weights.adapters.values()) {
          expect(isFiniteTensor(a.up) && isFiniteTensor(a.down)).toBe(true);
        }
        accepted++;
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
        expect((error as Error).message, (error as Error).stack).toContain(path);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
    expect(refused + accepted).toBeGreaterThan(10);
  });
});
