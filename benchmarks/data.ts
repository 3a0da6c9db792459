// Data pipeline throughput per core (issue #16 item 4): JPEG files (1-4 MP) -> EXIF-oriented,
// resized, centre-cropped, normalised 512x512 tensors. sdtune's dataset pipeline
// (benchmarks/_data_case.ts) against diffusers' per-image path in Python (benchmarks/peer_data.py:
// PIL + torchvision Resize/CenterCrop/ToTensor/Normalize, /usr/bin/python3 with python3-pil and
// python3-torchvision), both on one core, alternating A B A B in fresh processes over the same files
// (page cache warm). sdtune with its default threads is reported for information.
// Usage: npm run bench -- data [--images DIR] [--count 48] [--rounds 3]
// --images: a folder of real camera JPEGs (its first --count files are used); without it the
// benchmark writes synthetic photo-like JPEGs and says so. A quarter of the images get an EXIF
// Orientation tag (6 or 8) so the EXIF step does work on both sides.
import { spawnSync } from "node:child_process";
import { copyFile, readdir } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import sharp from "sharp";

import { tempDir } from "../test/helpers/fixtures.js";
import type { DataCase } from "./_data_case.js";
import { machine, median, runCaseProcess } from "./_util.js";
import type { Benchmark } from "./run.js";

const here = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.SDTUNE_PEER_PYTHON ?? "/usr/bin/python3";
const RESOLUTION = 512;

const SIZES: [number, number][] = [
  [1200, 900], // 1.1 MP
  [1600, 1200], // 1.9 MP
  [2048, 1536], // 3.1 MP
  [2304, 1728], // 4.0 MP
  [1080, 1440], // portrait 1.6 MP
  [1536, 2048], // portrait 3.1 MP
];

/** A photo-like JPEG: smooth gradients plus noise, so it compresses like a picture, not a flat fill. */
async function writePhoto(
  path: string,
  width: number,
  height: number,
  seed: number,
  orientation?: number,
): Promise<number> {
  const small = Buffer.alloc(64 * 48 * 3);
  for (let i = 0; i < small.length; i++) small[i] = (i * 7 + seed * 13 + ((i * 2654435761) >>> 24)) & 255;
  const info = await sharp(small, { raw: { width: 64, height: 48, channels: 3 } })
    .resize(width, height, { kernel: "cubic" })
    .composite([
      {
        input: {
          create: {
            width,
            height,
            channels: 3,
            background: { r: 128, g: 128, b: 128 },
            noise: { type: "gaussian", mean: 0, sigma: 20 },
          },
        },
        blend: "overlay",
      },
    ])
    .jpeg({ quality: 90 })
    .withMetadata(orientation ? { orientation } : {})
    .toFile(path);
  return info.size;
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args[i + 1];
}

/** Why the Python peer cannot run, with the setup step; undefined when it can. */
function peerMissing(): string | undefined {
  const probe = spawnSync(PYTHON, ["-c", "import torch, torchvision, PIL"], { encoding: "utf8" });
  if (probe.status === 0) return undefined;
  return `${PYTHON} cannot import torch, torchvision and PIL: apt-get install -y python3-torchvision python3-pil (or set SDTUNE_PEER_PYTHON)`;
}

/** Copies (or writes) `count` JPEGs into `dir`; every fourth gets EXIF orientation 6 or 8. */
async function prepareImages(dir: string, source: string | undefined, count: number): Promise<Record<string, unknown>> {
  const names: string[] = [];
  let pixels = 0;
  const sources = source
    ? (await readdir(source))
        .filter((n) => /\.jpe?g$/i.test(n))
        .sort()
        .slice(0, count)
    : [];
  if (source && sources.length === 0) throw new Error(`--images ${source}: no .jpg/.jpeg files there`);
  const n = source ? sources.length : count;
  for (let i = 0; i < n; i++) {
    const out = join(dir, `${String(i).padStart(4, "0")}.jpg`);
    if (source) {
      const input = join(source, sources[i]!);
      if (i % 4 === 3)
        await sharp(input)
          .withMetadata({ orientation: i % 8 === 3 ? 6 : 8 })
          .jpeg({ quality: 92 })
          .toFile(out);
      else await copyFile(input, out);
    } else {
      const [w, h] = SIZES[i % SIZES.length]!;
      await writePhoto(out, w, h, i, i % 4 === 3 ? (i % 8 === 3 ? 6 : 8) : undefined);
    }
    const meta = await sharp(out).metadata();
    pixels += (meta.width ?? 0) * (meta.height ?? 0);
    names.push(source ? sources[i]! : `synthetic-${i}.jpg`);
  }
  return {
    source: source ?? "synthetic photo-like JPEGs (gradients + noise): no --images folder given",
    files: names,
    megapixelsMean: pixels / n / 1e6,
    withExifOrientation: names.filter((_, i) => i % 4 === 3).length,
  };
}

function runPeer(files: string[]): number {
  const child = spawnSync(PYTHON, [join(here, "peer_data.py"), String(RESOLUTION), ...files], {
    encoding: "utf8",
    env: { ...process.env, OMP_NUM_THREADS: "1", OPENBLAS_NUM_THREADS: "1" },
  });
  if (child.status !== 0)
    throw new Error(`peer_data.py failed: ${(child.stderr ?? "").trim().split("\n").slice(-3).join(" ")}`);
  return (JSON.parse(child.stdout.trim().split("\n").pop()!) as { ms: number }).ms;
}

/** One timed pass in a fresh process; `sharpOnly`: SDTUNE_JPEG=sharp (no libjpeg road). */
function runSdtune(dir: string, oneCore: boolean, sharpOnly = false): number {
  const vars = { UV_THREADPOOL_SIZE: oneCore ? "1" : undefined, SDTUNE_JPEG: sharpOnly ? "sharp" : undefined };
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) if (v !== undefined) process.env[k] = v;
  try {
    const input: DataCase = { dir, resolution: RESOLUTION, oneCore };
    return runCaseProcess(join(here, "_data_case.ts"), input, { what: "sdtune data case" }).ms as number;
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

export const benchmark: Benchmark = {
  description: "images/s per core, JPEG (1-4 MP) -> normalised 512x512 tensors, vs PIL + torchvision",
  async run(args) {
    const count = Number(option(args, "--count") ?? 48);
    const rounds = Number(option(args, "--rounds") ?? 3);
    const missing = peerMissing();
    if (missing) throw new Error(`the data peer is not set up: ${missing}`);
    const dir = await tempDir("sdtune-bench-data-");
    try {
      const images = await prepareImages(dir.path, option(args, "--images"), count);
      const files = (await readdir(dir.path))
        .filter((n) => n.endsWith(".jpg"))
        .sort()
        .map((n) => join(dir.path, n));
      const loadBefore = loadavg();
      runPeer(files); // warm the page cache
      const peer: number[] = [];
      const ours: number[] = [];
      const oursDefault: number[] = [];
      const oursSharp: number[] = [];
      for (let r = 0; r < rounds; r++) {
        ours.push(runSdtune(dir.path, true));
        peer.push(runPeer(files));
        oursSharp.push(runSdtune(dir.path, true, true));
        oursDefault.push(runSdtune(dir.path, false));
      }
      const ips = (ms: number): number => (files.length * 1000) / ms;
      const sdtunePerCore = ips(median(ours));
      const peerPerCore = ips(median(peer));
      return {
        machine: machine(),
        images,
        rounds,
        loadAverageBefore: loadBefore,
        loadAverageAfter: loadavg(),
        peer: {
          description:
            "PIL open + convert(RGB) + exif_transpose, torchvision Resize(512, bilinear) CenterCrop ToTensor Normalize; torch.set_num_threads(1)",
          imagesPerSecondPerCore: peerPerCore,
          msRuns: peer,
        },
        sdtune: {
          description:
            "openDataset + createBatchStream(batch 4), JPEGs on the libjpeg road (DCT-scaled decode); UV_THREADPOOL_SIZE=1, sharp.concurrency(1), setNumThreads(1), concurrency 1",
          imagesPerSecondPerCore: sdtunePerCore,
          msRuns: ours,
        },
        sdtuneSharpOnly: {
          description: "the same with SDTUNE_JPEG=sharp: every image decoded full size by sharp, then resized",
          imagesPerSecondPerCore: ips(median(oursSharp)),
          msRuns: oursSharp,
          ratioPerCore: ips(median(oursSharp)) / peerPerCore,
        },
        sdtuneDefaultThreads: { imagesPerSecond: ips(median(oursDefault)), msRuns: oursDefault },
        ratioPerCore: sdtunePerCore / peerPerCore,
        target: 2,
      };
    } finally {
      await dir.cleanup();
    }
  },
};
