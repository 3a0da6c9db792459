// Data-parallel tests: `sdtune train` processes (from the TypeScript sources) as ranks of a
// group on the loopback, or as a launcher of its own workers (--nproc-per-node).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";

import { fixture, repoRoot } from "./fixtures.js";
import { writeImage, writeText } from "./images.js";

export interface Proc {
  child: ChildProcess;
  done: Promise<number | null>;
  stderr(): string;
}

/** `sdtune train ...args` as a process; its stderr is kept. */
export function cli(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "test", "helpers", "cli.mjs"), ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  child.stdout!.resume();
  const done = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, done, stderr: () => err };
}

/** A port free on the loopback now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Ranks 0..world-1 started directly with torchrun's variables (rank r also gets envs[r]). */
export async function ranks(args: string[], world: number, envs: Record<string, string>[] = []): Promise<Proc[]> {
  const port = String(await freePort());
  return [...Array(world).keys()].map((rank) =>
    cli(args, {
      MASTER_ADDR: "127.0.0.1",
      MASTER_PORT: port,
      WORLD_SIZE: String(world),
      RANK: String(rank),
      LOCAL_RANK: String(rank),
      // As --nproc-per-node sets it on this 2-core machine: results are then comparable bit for bit.
      OMP_NUM_THREADS: "1",
      ...envs[rank],
    }),
  );
}

export async function waitFor(check: () => boolean, what: string, ms = 60_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Four small images with captions. */
export async function writeData(dir: string): Promise<string> {
  const data = join(dir, "data");
  for (let i = 0; i < 4; i++) await writeImage(join(data, `img${i}.png`), { width: 24, height: 20, seed: i });
  await writeText(
    join(data, "metadata.jsonl"),
    [0, 1, 2, 3].map((i) => JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` })).join("\n"),
  );
  return data;
}

/** A run config on the tiny fixture model; `extra` lines are appended. */
export async function writeConfig(dir: string, out: string, data: string, extra: string[]): Promise<string> {
  const path = join(dir, `${out}.yaml`);
  const lines = [`model: ${fixture("tiny-sd")}`, `output_dir: ${join(dir, out)}`, "dataset:", `  path: ${data}`];
  await writeFile(path, [...lines, "resolution: 16", "learning_rate: 0.001", "seed: 11", ...extra, ""].join("\n"));
  return path;
}

export function metrics(runDir: string): Record<string, unknown>[] {
  const path = join(runDir, "metrics.jsonl");
  if (!existsSync(path)) return [];
  // Complete lines only: the file may be read while a line is being appended.
  const lines = readFileSync(path, "utf8").split("\n").slice(0, -1);
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

export const loraFile = (runDir: string): string => join(runDir, "train", "lora", "train.safetensors");
