// `sdtune lora extract` / `lora resize` on conv layers: a LoCon-style LoRA on the ResNet 3x3
// convs, merged into the fixture model, comes back from the difference as a kxk down and a
// 1x1 up with the same products; resize to the same rank keeps them.
import { join } from "node:path";

import { afterAll, beforeAll, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import {
  createTrainableLora,
  disposeLora,
  extractLora,
  extractLoraFromModels,
  loadLoraFile,
  mergeLoraIntoModel,
  saveLora,
  type LoraAdapter,
  type LoraWeights,
} from "../src/lora/index.js";
import { UNet } from "../src/models/unet.js";
import { native } from "../src/native/index.js";
import { captureCli } from "./helpers/capture.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

const BASE = fixture("tiny-sd");
let dir: { path: string; cleanup(): Promise<void> };
let locon: LoraWeights;
let tuned: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-extract-conv-");
  const unet = await UNet.load(join(BASE, "unet"));
  try {
    const { name } = await createTrainableLora(unet, { targets: ["conv1"], rank: 2, init: "random", seed: 5 });
    locon = await extractLora({ unet }, name);
  } finally {
    unet.dispose();
  }
  const file = join(dir.path, "locon.safetensors");
  await saveLora(file, locon, { format: "kohya" });
  tuned = join(dir.path, "tuned");
  await mergeLoraIntoModel({ base: BASE, loras: [{ path: file }], out: tuned });
});
afterAll(async () => {
  disposeLora(locon);
  await dir.cleanup();
});

async function product(a: LoraAdapter): Promise<Float64Array> {
  const up = await a.up.reshape([a.up.shape[0]!, a.rank]).to({ dtype: "float64" });
  const down = await a.down.reshape([a.rank, a.down.numel / a.rank]).to({ dtype: "float64" });
  const p = await native().ops.matmul(up, down);
  return Float64Array.from(p.toTypedArray() as Float64Array, (v) => (v * a.alpha) / a.rank);
}

function relativeError(a: Float64Array, b: Float64Array): number {
  let diff = 0;
  let size = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    size = Math.max(size, Math.abs(b[i]!));
  }
  return diff / size;
}

it("extracts 3x3 conv differences as a kxk down and a 1x1 up; resize to the same rank keeps them", async () => {
  const out = join(dir.path, "extracted.safetensors");
  const cli = await captureCli(() =>
    main([
      "lora",
      "extract",
      "--base",
      BASE,
      "--tuned",
      tuned,
      "--rank",
      "4",
      "--conv-rank",
      "2",
      "--out",
      out,
      "--json",
    ]),
  );
  expect(cli.code).toBe(0);
  const report = JSON.parse(cli.out) as { layers: { key: string; energy: number }[]; skipped: unknown[] };
  expect(report.layers.map((l) => l.key).sort()).toEqual([...locon.adapters.keys()].sort());
  for (const l of report.layers) expect(l.energy).toBeCloseTo(1, 6);

  const resized = join(dir.path, "resized.safetensors");
  expect((await captureCli(() => main(["lora", "resize", out, "--rank", "2", "--out", resized]))).code).toBe(0);
  for (const file of [out, resized]) {
    const got = await loadLoraFile(file);
    try {
      for (const [key, ref] of locon.adapters) {
        const a = got.adapters.get(key)!;
        expect(a.down.shape, key).toEqual(ref.down.shape);
        expect(a.up.shape, key).toEqual([ref.up.shape[0], 2, 1, 1]);
        expect(relativeError(await product(a), await product(ref)), `${file}: ${key}`).toBeLessThan(1e-5);
      }
    } finally {
      disposeLora(got);
    }
  }
});

it("refuses bad arguments with the flag's name", async () => {
  const bad = await captureCli(() => main(["lora", "extract", "--base", BASE, "--tuned", tuned, "--rank", "x"]));
  expect(bad.code).toBe(2);
  expect(bad.err).toContain("--rank");
  const same = await captureCli(() => main(["lora", "extract", "--base", BASE, "--tuned", BASE, "--rank", "2"]));
  expect(same.code).not.toBe(0);
  expect(same.err).toMatch(/does not differ/);
});

it("reports progress per layer and stops when cancelled", async () => {
  const controller = new AbortController();
  const seen: string[] = [];
  const stopped = await extractLoraFromModels({
    base: BASE,
    tuned,
    rank: 2,
    convRank: 2,
    signal: controller.signal,
    onProgress: (e) => {
      seen.push(`${e.phase} ${e.step}/${e.total}`);
      if (e.step === 3) controller.abort();
    },
  }).catch((e: Error) => e);
  expect((stopped as Error).name).toBe("AbortError");
  expect(seen.slice(0, 3)).toEqual([1, 2, 3].map((i) => `lora.extract ${i}/${seen[0]!.split("/")[1]}`));
  expect(seen).toHaveLength(3);
});
