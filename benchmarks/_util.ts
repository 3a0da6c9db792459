// Shared helpers for benchmarks: timing, machine description, peak memory and
// one-process-per-case runs.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { resourceUsage } from "node:process";

import { native } from "../src/native/index.js";

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

/** Bytes as MiB, one decimal. */
export const mb = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;

/** This process's RSS high-water mark in bytes: VmHWM of /proc/self/status (Linux), else getrusage's maxRSS. */
export function peakRssBytes(): number {
  try {
    const hwm = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (hwm) return Number(hwm[1]) * 1024;
  } catch {
    // no procfs: fall through
  }
  return resourceUsage().maxRSS * 1024;
}

/**
 * Runs `script` (a benchmark case file that calls caseMain) in a fresh Node process with `input`
 * as JSON in argv[2], so that the RSS high-water mark it reports is its own; returns its result.
 * Throws the case's own error message, or the tail of its stderr when it died (or ran past `timeoutMs`).
 */
export function runCaseProcess(
  script: string,
  input: unknown,
  options: { what: string; timeoutMs?: number },
): Record<string, unknown> {
  const child = spawnSync(process.execPath, ["--import", "tsx", script, JSON.stringify(input)], {
    encoding: "utf8",
    maxBuffer: 1 << 20,
    timeout: options.timeoutMs,
  });
  let result: Record<string, unknown> | undefined;
  try {
    result = JSON.parse((child.stdout ?? "").trim().split("\n").pop() ?? "") as Record<string, unknown>;
  } catch {
    // no result line: the process died
  }
  if (typeof result?.error === "string") throw new Error(result.error);
  if (child.status === 0 && result) return result;
  const tail = (child.stderr ?? "").trim().split("\n").slice(-5).join("\n");
  const how = child.error ? child.error.message : `exit ${child.status ?? child.signal}`;
  throw new Error(`${options.what} failed (${how})${tail ? `: ${tail}` : ""}`);
}

/** The body of a case file: runs `fn` on argv[2]'s JSON; prints {result} or {error} as one JSON line. */
export async function caseMain<T>(fn: (input: T) => Promise<Record<string, unknown>>): Promise<void> {
  const arg = process.argv[2];
  if (!arg) return;
  try {
    process.stdout.write(`${JSON.stringify(await fn(JSON.parse(arg) as T))}\n`);
  } catch (error) {
    const e = error as Error;
    process.stdout.write(`${JSON.stringify({ error: `${e.name ?? "Error"}: ${e.message}` })}\n`);
    process.exitCode = 1;
  }
}
