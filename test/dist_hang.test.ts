// Data parallel: a rank that hangs (here: held inside a checkpoint save far longer than the
// group's timeout) makes the others stop with a clear error once the timeout passes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ranks, writeConfig, writeData } from "./helpers/dist.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
let data: string;
beforeAll(async () => {
  dir = await tempDir("sdtune-dist-hang-");
  data = await writeData(dir.path);
});
afterAll(async () => dir.cleanup());

describe("a rank that hangs", () => {
  it("makes the other stop after the timeout, naming it", async () => {
    const steps = ["max_train_steps: 2", "checkpointing_steps: 1", "train_batch_size: 1"];
    const config = await writeConfig(dir.path, "hang", data, steps);
    // Generous against a slow start (the rendezvous and first steps share the timeout); the hold is longer.
    const timeout = { SDTUNE_DIST_TIMEOUT_MS: "8000" };
    const [r0, r1] = await ranks(["train", "--config", config], 2, [
      { ...timeout, SDTUNE_CHECKPOINT_DELAY: "1:600000" },
      timeout,
    ]);
    try {
      expect(await r1!.done).not.toBe(0);
      expect(r1!.stderr()).toMatch(/rank 1 of 2: the barrier failed: .*did not answer within 8 s/);
    } finally {
      r0!.child.kill("SIGKILL");
      await r0!.done;
    }
  }, 180_000);
});
