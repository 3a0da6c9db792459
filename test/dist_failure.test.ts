// Data-parallel failures: a rank killed mid-run makes the other stop with a clear error (no
// hang); resuming both ranks from the newest checkpoint ends bit-identical to an uninterrupted
// 2-process run; resuming with another number of processes is allowed and says so.
import { existsSync, readdirSync } from "node:fs";
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readSafetensors } from "../src/io/safetensors.js";
import { native } from "../src/native/index.js";
import { cli, loraFile, metrics, ranks, waitFor, writeConfig, writeData } from "./helpers/dist.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-dist-failure-");
  data = await writeData(dir.path);
});
afterAll(async () => dir.cleanup());

const STEPS = ["max_train_steps: 4", "checkpointing_steps: 1", "train_batch_size: 1"];

async function sameTensors(a: string, b: string): Promise<void> {
  const x = (await readSafetensors(a)).tensors;
  const y = (await readSafetensors(b)).tensors;
  expect([...y.keys()].sort()).toEqual([...x.keys()].sort());
  for (const [k, t] of x) expect(native().ops.maxAbsDiff(t, y.get(k)!), k).toBe(0);
}

describe("data-parallel failures (2 processes, Gloo)", () => {
  it("stops the survivor of a killed rank with a clear error, then resumes exactly", async () => {
    const whole = cli([
      "train",
      "--config",
      await writeConfig(dir.path, "whole", data, STEPS),
      "--nproc-per-node",
      "2",
    ]);
    // Rank 0 is held inside the save of checkpoint-3 (after checkpoint-2 is complete) and killed there;
    // rank 1 waits for it at the barrier after the save, and must fail at once, not wait for the timeout.
    const config = await writeConfig(dir.path, "killed", data, STEPS);
    const [r0, r1] = await ranks(["train", "--config", config], 2, [{ SDTUNE_CHECKPOINT_DELAY: "3:60000" }]);
    const held = join(dir.path, "killed", "train", "checkpoints");
    await waitFor(
      () => existsSync(held) && readdirSync(held).some((n) => n.startsWith("checkpoint-3.partial")),
      "checkpoint-3 to be written",
      150_000,
    ).catch((e: Error) => {
      throw new Error(`${e.message}; rank 0 said: ${r0!.stderr()}; rank 1 said: ${r1!.stderr()}`);
    });
    r0!.child.kill("SIGKILL");
    expect(await r1!.done).not.toBe(0);
    expect(r1!.stderr()).toMatch(/rank 1 of 2: .* failed: another rank stopped, crashed or did not answer/);
    expect(r1!.stderr()).toMatch(/--resume latest/);
    expect(await whole.done, whole.stderr()).toBe(0);

    // A copy, to resume with one process instead of two.
    await cp(join(dir.path, "killed"), join(dir.path, "alone"), { recursive: true });
    const saved = join(dir.path, "alone", "config.yaml");
    await writeFile(saved, (await readFile(saved, "utf8")).replace(join(dir.path, "killed"), join(dir.path, "alone")));
    const alone = cli(["train", "--config", await writeConfig(dir.path, "alone", data, STEPS), "--resume", "latest"]);
    const resumed = await ranks(["train", "--config", config, "--resume", "latest"], 2);
    const codes = await Promise.all(resumed.map((r) => r.done));
    expect(codes, resumed.map((r) => r.stderr()).join("\n")).toEqual([0, 0]);
    await sameTensors(loraFile(join(dir.path, "whole")), loraFile(join(dir.path, "killed")));
    expect(metrics(join(dir.path, "killed")).map((l) => l.loss)).toEqual(
      metrics(join(dir.path, "whole")).map((l) => l.loss),
    );

    expect(await alone.done, alone.stderr()).toBe(0);
    expect(alone.stderr()).toMatch(/the checkpoint was trained by 2 processes, this run has 1/);
    expect(metrics(join(dir.path, "alone"))).toHaveLength(4);
  }, 240_000);
});
