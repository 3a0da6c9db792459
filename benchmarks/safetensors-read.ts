// safetensors read throughput (mmap + materialise every tensor) against a plain
// fs.readFile of the same file, in the same run.
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { native } from "../src/native/index.js";
import { machine, median, time } from "./_util.js";
import type { Benchmark } from "./run.js";

export const benchmark: Benchmark = {
  description: "safetensors read throughput vs fs.readFile of the same file (page cache warm)",
  async run(args) {
    const megabytes = Number(args[0] ?? 256);
    const path = join(tmpdir(), `sdtune-bench-${process.pid}.safetensors`);
    const tensors = new Map();
    const perTensor = 4 * 1024 * 1024; // 16 MiB float32 tensors, like big UNet weights
    for (let i = 0; i < Math.ceil((megabytes * 1024 * 1024) / (perTensor * 4)); i++) {
      tensors.set(`layer.${i}.weight`, native().ops.randn([perTensor], { seed: i }));
    }
    await writeSafetensors(path, tensors);
    for (const t of tensors.values()) t.dispose();
    try {
      const bytes = (await readFile(path)).length;
      const readAll = async (): Promise<void> => {
        const { tensors: read } = await readSafetensors(path);
        for (const t of read.values()) {
          t.clone().dispose(); // touch every page
          t.dispose();
        }
      };
      const sdtune = await time(readAll, 5);
      const baseline = await time(() => readFile(path), 5);
      const mbps = (ms: number): number => bytes / 1e6 / (ms / 1000);
      return {
        machine: machine(),
        fileBytes: bytes,
        sdtuneMedianMs: median(sdtune),
        readFileMedianMs: median(baseline),
        sdtuneMBps: mbps(median(sdtune)),
        readFileMBps: mbps(median(baseline)),
        ratioVsReadFile: median(baseline) / median(sdtune),
      };
    } finally {
      await rm(path, { force: true });
    }
  },
};
