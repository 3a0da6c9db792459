// Safe by construction, resume side: a checkpoint's manifest (resume state included) is
// covered by its digest; damaged checkpoints are named and passed over for the next older
// valid one; `--resume latest` with none valid fails saying what it found; a lost or
// garbled config.yaml refuses the resume (the changed-settings check cannot be skipped).
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { CheckpointStore } from "../src/train/checkpoints.js";
import { train, type TrainProgress } from "../src/train/run.js";
import { fixture, tempDir } from "./helpers/fixtures.js";
import { writeImage, writeText } from "./helpers/images.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-safety-resume-");
  data = join(dir.path, "data");
  for (let i = 0; i < 3; i++) await writeImage(join(data, `img${i}.png`), { width: 20, height: 20, seed: 10 + i });
  await writeText(
    join(data, "metadata.jsonl"),
    [0, 1, 2].map((i) => JSON.stringify({ file_name: `img${i}.png`, text: `picture ${i}` })).join("\n"),
  );
});
afterAll(async () => dir.cleanup());

const config = (out: string, extra: Record<string, unknown> = {}) => ({
  model: fixture("tiny-sd"),
  output_dir: out,
  dataset: { path: data },
  resolution: 16,
  seed: 4,
  max_train_steps: 5,
  checkpointing_steps: 1,
  learning_rate: 1e-3,
  ...extra,
});

/** Trains `out` until `stopAt` optimizer steps are done, then stops it as Ctrl-C does. */
async function stopped(out: string, stopAt: number): Promise<string> {
  const controller = new AbortController();
  const error = await train(config(out), {
    signal: controller.signal,
    onProgress: (e) => e.phase === "train" && e.step === stopAt && controller.abort(),
  }).catch((e: Error) => e);
  expect((error as Error).name).toBe("AbortError");
  return join(out, "train", "checkpoints");
}

const manifestOf = (checkpoints: string, step: number) => join(checkpoints, `checkpoint-${step}`, "manifest.json");

describe("checkpoint manifests", () => {
  it("an edit to the resume state or a manifest without state is found on load", async () => {
    const store = new CheckpointStore<{ step: number; position: { epoch: number } }>(join(dir.path, "store"), 5);
    const saved = await store.save(2, { step: 2, position: { epoch: 0 } }, async (f) =>
      writeFile(join(f, "w.bin"), "weights"),
    );
    expect((await store.load(saved.dir)).manifest.state.step).toBe(2);
    const path = join(saved.dir, "manifest.json");
    const text = await readFile(path, "utf8");
    await writeFile(path, text.replace('"epoch": 0', '"epoch": 1'));
    await expect(store.load(saved.dir)).rejects.toThrow(/manifest\.json: damaged or edited/);
    const { state: _state, ...withoutState } = JSON.parse(text) as Record<string, unknown>;
    await writeFile(path, JSON.stringify(withoutState));
    await expect(store.load(saved.dir)).rejects.toThrow(/manifest\.json: damaged/);
    await writeFile(path, "{ not json");
    await expect(store.load(saved.dir)).rejects.toThrow(/manifest\.json: damaged/);
    const { damaged, checkpoint } = await store.newestValid();
    expect(checkpoint).toBeUndefined();
    expect(damaged.map((d) => d.dir)).toEqual([saved.dir]);
  });
});

describe("resume", () => {
  it("a tampered newest checkpoint is named and the next older one is used", async () => {
    const out = join(dir.path, "tampered");
    const checkpoints = await stopped(out, 3);
    const path = manifestOf(checkpoints, 3);
    await writeFile(path, (await readFile(path, "utf8")).replace('"step": 3', '"step": 30'));
    const notices: string[] = [];
    const onProgress = (e: TrainProgress) => void (e.phase === "notice" && notices.push(String(e.message)));
    const result = await train(config(out), { resume: "latest", onProgress });
    expect(result.stages[0]!.steps).toBe(5);
    expect(notices.join("\n")).toMatch(/checkpoint-3: .*damaged or edited[\s\S]*resuming from .*checkpoint-2/);
  });

  it("--resume latest with no valid checkpoint fails and lists what it found", async () => {
    const out = join(dir.path, "all-damaged");
    const checkpoints = await stopped(out, 2);
    for (const step of [1, 2])
      await writeFile(join(checkpoints, `checkpoint-${step}`, "training_state.safetensors"), "x");
    const error = await train(config(out), { resume: "latest" }).catch((e: Error) => e);
    expect((error as Error).message).toMatch(/no valid checkpoint/);
    expect((error as Error).message).toMatch(/checkpoint-2: .*damaged \(hash mismatch\)/);
    expect((error as Error).message).toMatch(/checkpoint-1: /);
    // Nothing was trained over the damaged run.
    expect(existsSync(join(out, "train", "lora"))).toBe(false);
  });

  it("a lost or garbled config.yaml refuses the resume instead of skipping the settings check", async () => {
    const out = join(dir.path, "config-lost");
    await stopped(out, 2);
    const path = join(out, "config.yaml");
    const original = await readFile(path, "utf8");
    await writeFile(path, "stages: [unclosed\n  - : :");
    await expect(train(config(out, { learning_rate: 5e-3 }), { resume: "latest" })).rejects.toThrow(
      /config\.yaml: unreadable .*put back the original config\.yaml/s,
    );
    await rm(path);
    await expect(train(config(out, { learning_rate: 5e-3 }), { resume: "latest" })).rejects.toThrow(
      /config\.yaml is missing.*cannot be compared/s,
    );
    await writeFile(path, original);
    await expect(train(config(out, { learning_rate: 5e-3 }), { resume: "latest" })).rejects.toThrow(
      /differs from the run being resumed in stages\[0\]\.learning_rate/,
    );
    expect((await train(config(out), { resume: "latest" })).stages[0]!.steps).toBe(5);
  });
});
