// Shared helpers for benchmarks: timing and machine description.
import { cpus } from "node:os";

import { native } from "../src/native.js";

/** Runs `fn` `repeats` times after `warmup` runs; returns every duration in ms. */
export async function time(fn: () => Promise<unknown> | unknown, repeats: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function machine(): Record<string, unknown> {
  const info = native().info();
  return {
    cpu: cpus()[0]?.model,
    cores: info.cores,
    threads: info.threads,
    libtorch: info.libtorchVersion,
    cuda: info.cuda.devices.map((d) => d.name),
    node: process.version,
  };
}
