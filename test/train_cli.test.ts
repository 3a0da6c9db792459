// `sdtune train` as a process: Ctrl-C (SIGINT) saves a checkpoint and exits 130;
// SIGKILL in the middle of a checkpoint write leaves the last good checkpoint as
// `latest`; both runs resume to the same LoRA as an uninterrupted run.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { native } from "../src/native/index.js";
import { fixture, repoRoot, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;

beforeAll(async () => {
  dir = await tempDir("sdtune-train-cli-");
  data = join(dir.path, "data");
  for (let i = 0; i < 4; i++) await writeImage(join(data, `img${i}.png`), { width: 20, height: 20, seed: i });
  await writeText(
    join(data, "metadata.jsonl"),
    [0, 1, 2, 3].map((i) => JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` })).join("\n"),
  );
});
afterAll(async () => dir.cleanup());

async function writeConfig(out: string): Promise<string> {
  const path = join(dir.path, `${out}.yaml`);
  await writeFile(
    path,
    [
      `model: ${fixture("tiny-sd")}`,
      `output_dir: ${join(dir.path, out)}`,
      `dataset:`,
      `  path: ${data}`,
      "resolution: 16",
      "max_train_steps: 8",
      "checkpointing_steps: 2",
      "learning_rate: 0.001",
      "seed: 11",
      "",
    ].join("\n"),
  );
  return path;
}

function cli(
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; done: Promise<number | null>; stderr: () => string } {
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

async function waitFor(check: () => boolean, ms = 60_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const lora = (out: string) => join(dir.path, out, "train", "lora", "train.safetensors");
const checkpoints = (out: string) => join(dir.path, out, "train", "checkpoints");

async function sameTensors(a: string, b: string): Promise<void> {
  const x = (await readSafetensors(a)).tensors;
  const y = (await readSafetensors(b)).tensors;
  expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
  for (const [k, t] of x) expect(native().ops.maxAbsDiff(t, y.get(k)!), k).toBe(0);
}

describe("sdtune train (process)", () => {
  it("runs to the end, then SIGINT and SIGKILL runs resume to the same LoRA", async () => {
    const whole = cli(["train", "--config", await writeConfig("whole")]);
    expect(await whole.done, whole.stderr()).toBe(0);

    // SIGINT after the first checkpoint: the step finishes, a checkpoint is saved, exit code 130.
    const interrupted = cli(["train", "--config", await writeConfig("sigint")]);
    await waitFor(() => existsSync(join(checkpoints("sigint"), "checkpoint-2")));
    interrupted.child.kill("SIGINT");
    expect(await interrupted.done, interrupted.stderr()).toBe(130);
    expect(interrupted.stderr()).toMatch(/resume with --resume latest/);
    const resumed = cli(["train", "--config", await writeConfig("sigint"), "--resume", "latest"]);
    expect(await resumed.done, resumed.stderr()).toBe(0);
    await sameTensors(lora("whole"), lora("sigint"));

    // SIGKILL while checkpoint-4 is being written (held open between its files and its manifest).
    const killed = cli(["train", "--config", await writeConfig("sigkill")], { SDTUNE_CHECKPOINT_DELAY: "4:60000" });
    const torn = () =>
      existsSync(checkpoints("sigkill")) &&
      readdirSync(checkpoints("sigkill")).some((n) => n.startsWith("checkpoint-4.partial"));
    await waitFor(torn).catch((error: Error) => {
      throw new Error(`${error.message}; the run said: ${killed.stderr()}`);
    });
    killed.child.kill("SIGKILL");
    await killed.done;
    const left = readdirSync(checkpoints("sigkill"));
    expect(left).toContain("checkpoint-2");
    expect(left).not.toContain("checkpoint-4");
    const after = cli(["train", "--config", await writeConfig("sigkill"), "--resume", "latest"]);
    expect(await after.done, after.stderr()).toBe(0);
    await sameTensors(lora("whole"), lora("sigkill"));
    expect(
      readFileSync(join(dir.path, "sigkill", "metrics.jsonl"), "utf8")
        .trim()
        .split("\n"),
    ).toHaveLength(8);
    // Five training processes one after another (each loads tsx, libtorch and the model): on a
    // busy shared machine that alone takes close to the default 120 s.
  }, 300_000);
});
