// Data parallel: Ctrl-C on the launcher stops every rank at the same step boundary, with one
// checkpoint of that step (saved by rank 0), and the launcher exits with 130. The run uses cached
// latents, which the ranks encode between them first.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { cli, metrics, waitFor, writeConfig, writeData } from "./helpers/dist.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-dist-stop-");
  data = await writeData(dir.path);
});
afterAll(async () => dir.cleanup());

describe("Ctrl-C on a data-parallel run", () => {
  it("stops both ranks at one step boundary with one checkpoint", async () => {
    // With cached latents: the ranks split the encoding of the missing latents between them.
    const cache = ["cache_latents: true", "center_crop: true", `cache_dir: ${join(dir.path, "cache")}`];
    const steps = ["max_train_steps: 200", "checkpointing_steps: 1000", "train_batch_size: 1", ...cache];
    const config = await writeConfig(dir.path, "stop", data, steps);
    const run = cli(["train", "--config", config, "--nproc-per-node", "2"]);
    const out = join(dir.path, "stop");
    await waitFor(() => metrics(out).length >= 1, "the first step", 150_000).catch((e: Error) => {
      throw new Error(`${e.message}; it said: ${run.stderr()}`);
    });
    run.child.kill("SIGINT");
    expect(await run.done, run.stderr()).toBe(130);
    expect(run.stderr()).toMatch(/resume with --resume latest/);
    const done = metrics(out).length;
    expect(done).toBeLessThan(200);
    const checkpoints = join(out, "train", "checkpoints");
    expect(existsSync(checkpoints)).toBe(true);
    expect(readdirSync(checkpoints)).toEqual([`checkpoint-${done}`]);
    // Both ranks wrote latent shards (a shard file's name carries its writer's process id).
    const latents = join(dir.path, "cache", "latents");
    const shards = readdirSync(latents).flatMap((ns) =>
      readdirSync(join(latents, ns)).filter((f) => f.endsWith(".safetensors")),
    );
    expect(new Set(shards.map((f) => f.split("-")[1])).size).toBe(2);
  }, 180_000);
});
