// Data-parallel scaling on this machine (issue #17): `sdtune train` on the fixture model with
// 1 process (train_batch_size B), 1 process with the global batch (2B), and 2 processes
// (--nproc-per-node 2, B each: Gloo all-reduce on CPU). Throughput is the median
// images_per_sec of metrics.jsonl after the warm-up steps. Scaling efficiency = throughput of
// 2 processes / (2 x throughput of 1 process with the same per-rank batch). On a CPU machine a
// "device" is a share of the cores: every case runs with the threads one rank of 2 gets
// (OMP_NUM_THREADS = cores / 2, as --nproc-per-node sets it), so 1 process is one device and 2
// are two; a last case gives 1 process every core, for reference.
//   npm run bench -- distributed [--steps N] [--batch B] [--resolution PX]
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import sharp from "sharp";

import { machine, median } from "./_util.js";
import type { Benchmark } from "./run.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = process.env.SDTUNE_FIXTURES ?? resolve(here, "..", "..", "shared", "fixtures");
const WARMUP = 2;

function flag(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`${name} needs a positive integer`);
  return value;
}

async function writeData(dir: string, count: number, size: number): Promise<string> {
  const data = join(dir, "data");
  mkdirSync(data, { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const pixels = Buffer.alloc(size * size * 3, (i * 37) % 251);
    for (let k = 0; k < pixels.length; k += 7) pixels[k] = (k * 13 + i * 29) % 256;
    await sharp(pixels, { raw: { width: size, height: size, channels: 3 } })
      .png()
      .toFile(join(data, `img${i}.png`));
    lines.push(JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` }));
  }
  writeFileSync(join(data, "metadata.jsonl"), `${lines.join("\n")}\n`);
  return data;
}

/** One `sdtune train` run; returns the median throughput after warm-up and the wall time. */
function run(
  dir: string,
  name: string,
  data: string,
  opts: { batch: number; steps: number; resolution: number; nproc: number; threads: number },
): Record<string, unknown> {
  const config = join(dir, `${name}.yaml`);
  const lines = [
    `model: ${join(fixtures, "tiny-sd")}`,
    `output_dir: ${join(dir, name)}`,
    "dataset:",
    `  path: ${data}`,
  ];
  lines.push(`resolution: ${opts.resolution}`, `train_batch_size: ${opts.batch}`, `max_train_steps: ${opts.steps}`);
  lines.push(`checkpointing_steps: ${opts.steps}`, "learning_rate: 0.0001", "seed: 1", "");
  writeFileSync(config, lines.join("\n"));
  const args = ["--import", "tsx", join(here, "_cli.mjs"), "train", "--config", config];
  if (opts.nproc > 1) args.push("--nproc-per-node", String(opts.nproc));
  const t0 = performance.now();
  const result = spawnSync(process.execPath, args, {
    encoding: "utf8",
    cwd: resolve(here, ".."),
    env: { ...process.env, SDTUNE_NUM_THREADS: "", OMP_NUM_THREADS: String(opts.threads) },
  });
  const wallS = (performance.now() - t0) / 1000;
  if (result.status !== 0) return { name, error: result.stderr.split("\n").slice(-6).join("\n") };
  const metrics = readFileSync(join(dir, name, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { images_per_sec: number; step_time: number });
  const timed = metrics.slice(WARMUP);
  return {
    name,
    processes: opts.nproc,
    threadsPerProcess: opts.threads,
    perRankBatch: opts.batch,
    globalBatch: opts.batch * opts.nproc,
    imagesPerSec: Math.round(median(timed.map((m) => m.images_per_sec)) * 100) / 100,
    medianStepMs: Math.round(median(timed.map((m) => m.step_time)) * 1000 * 10) / 10,
    wallSeconds: Math.round(wallS * 10) / 10,
  };
}

export const benchmark: Benchmark = {
  description: "data-parallel training: 2 processes (Gloo, CPU) vs 1, throughput and scaling efficiency",
  async run(args) {
    const steps = flag(args, "--steps", 12);
    const batch = flag(args, "--batch", 2);
    const resolution = flag(args, "--resolution", 64);
    const dir = mkdtempSync(join(tmpdir(), "sdtune-bench-dist-"));
    const loadBefore = loadavg()[0];
    try {
      const data = await writeData(dir, 8, resolution);
      const cores = availableParallelism();
      const common = { steps, resolution, threads: Math.max(1, Math.floor(cores / 2)) };
      const one = run(dir, "one", data, { ...common, batch, nproc: 1 });
      const oneGlobal = run(dir, "one-global", data, { ...common, batch: batch * 2, nproc: 1 });
      const two = run(dir, "two", data, { ...common, batch, nproc: 2 });
      const oneAllCores = run(dir, "one-all-cores", data, { ...common, batch: batch * 2, nproc: 1, threads: cores });
      const tp = (r: Record<string, unknown>): number | undefined => r.imagesPerSec as number | undefined;
      const ratio = (a?: number, b?: number): number | null =>
        a !== undefined && b !== undefined && b > 0 ? Math.round((a / b) * 1000) / 1000 : null;
      return {
        machine: machine(),
        settings: { steps, warmup: WARMUP, perRankBatch: batch, resolution, model: "fixture tiny-sd, LoRA" },
        cases: [one, oneGlobal, two, oneAllCores],
        scalingEfficiency: ratio(tp(two), tp(one) === undefined ? undefined : 2 * tp(one)!),
        twoProcessesOverOneWithGlobalBatch: ratio(tp(two), tp(oneGlobal)),
        twoProcessesOverOneWithAllCores: ratio(tp(two), tp(oneAllCores)),
        // On a shared machine other work skews every number: say how busy it was.
        loadAverage: { before: loadBefore, after: loadavg()[0] },
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
