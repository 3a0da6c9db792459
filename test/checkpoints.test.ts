import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { CheckpointStore } from "../src/train/checkpoints.js";
import { repoRoot, tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => dir.cleanup());

const writeOne = (content: string) => async (folder: string) => writeFile(join(folder, "weights.bin"), content);

describe("CheckpointStore", () => {
  it("saves, lists, keeps the newest K and picks the latest", async () => {
    const store = new CheckpointStore<{ position: number }>(dir.path, 2);
    for (const step of [10, 20, 30]) await store.save(step, { position: step * 2 }, writeOne(`w${step}`));
    expect((await store.list()).map((c) => c.step)).toEqual([20, 30]);
    const latest = await store.latest();
    expect(latest?.step).toBe(30);
    expect(latest?.manifest.state).toEqual({ position: 60 });
  });

  it("skips a damaged checkpoint in favour of an older good one", async () => {
    const store = new CheckpointStore<object>(dir.path, 5);
    await store.save(1, {}, writeOne("a"));
    const second = await store.save(2, {}, writeOne("b"));
    await writeFile(join(second.dir, "weights.bin"), "tampered");
    expect((await store.latest())?.step).toBe(1);
    await expect(store.load(second.dir)).rejects.toThrow(/damaged/);
  });

  it("a save killed with SIGKILL leaves only a partial folder that latest ignores and the next run removes", async () => {
    const store = new CheckpointStore<object>(dir.path, 5);
    await store.save(5, { ok: true }, writeOne("good"));
    // A child starts saving step 6 and is killed while writing its files.
    const script = `
      import { CheckpointStore } from ${JSON.stringify(join(repoRoot, "src/train/checkpoints.ts"))};
      import { writeFile } from "node:fs/promises";
      const store = new CheckpointStore(${JSON.stringify(dir.path)}, 5);
      await store.save(6, {}, async (folder) => {
        await writeFile(folder + "/weights.bin", "half");
        process.stdout.write("writing\\n");
        await new Promise(() => {});
      });`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => d.toString().includes("writing") && resolve());
      child.on("exit", (code) => reject(new Error(`child exited early with ${code}`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    const names = await readdir(dir.path);
    expect(names.some((n) => n.startsWith("checkpoint-6.partial-"))).toBe(true);
    expect((await store.latest())?.step).toBe(5);
    expect((await store.removePartial()).length).toBe(1);
    expect(existsSync(join(dir.path, "checkpoint-5"))).toBe(true);
  });

  it("load names a folder that is not a complete checkpoint", async () => {
    const store = new CheckpointStore<object>(dir.path);
    await expect(store.load(join(dir.path, "nope"))).rejects.toThrow(/not a complete checkpoint/);
  });
});
