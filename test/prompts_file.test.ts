// Prompts files with kohya sd-scripts' per-prompt flags (train_util's line_to_prompt_dict).
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readPromptsFile } from "../src/eval/images.js";
import { parsePromptLine, promptBatches, readPromptSpecs } from "../src/pipeline/prompts.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-prompts-");
});
afterAll(async () => dir.cleanup());

describe("prompt lines", () => {
  it("parse kohya's flags off the prompt", () => {
    expect(parsePromptLine("a photo of sks dog --n blurry, low quality --w 512 --h 768 --s 20 --d 42 --l 6.5")).toEqual(
      {
        prompt: "a photo of sks dog",
        negativePrompt: "blurry, low quality",
        width: 512,
        height: 768,
        steps: 20,
        seed: 42,
        guidanceScale: 6.5,
      },
    );
    expect(parsePromptLine("a cat --ss euler_a --D 3")).toEqual({ prompt: "a cat", sampler: "euler_a", seed: 3 });
    expect(parsePromptLine("no flags here")).toEqual({ prompt: "no flags here" });
  });

  it("refuse unknown flags and bad values, naming the place", () => {
    expect(() => parsePromptLine("a --x 1", "p.txt:4")).toThrow(/p\.txt:4: unknown flag "--x"/);
    expect(() => parsePromptLine("a --w wide", "p.txt:2")).toThrow(/p\.txt:2: --w expects a non-negative integer/);
    expect(() => parsePromptLine("a --ss nope", "p.txt:1")).toThrow(/unknown sampler "nope"/);
  });
});

describe("prompts files", () => {
  it("read lines (skipping blanks and #) and JSON lists; eval scores the prompt text only", async () => {
    const txt = join(dir.path, "prompts.txt");
    await writeFile(txt, "# samples\na red robot --n blurry --d 5\n\n  a blue car --w 64  \n");
    expect(await readPromptSpecs(txt)).toEqual([
      { prompt: "a red robot", negativePrompt: "blurry", seed: 5 },
      { prompt: "a blue car", width: 64 },
    ]);
    expect(await readPromptsFile(txt)).toEqual(["a red robot", "a blue car"]);
    const json = join(dir.path, "prompts.json");
    await writeFile(json, JSON.stringify(["x --s 3", { prompt: "y", negative_prompt: "z", sample_steps: 4, seed: 9 }]));
    expect(await readPromptSpecs(json)).toEqual([
      { prompt: "x", steps: 3 },
      { prompt: "y", negativePrompt: "z", steps: 4, seed: 9 },
    ]);
  });

  it("group consecutive prompts with equal settings, keeping seeds as one call would", () => {
    const specs = [{ prompt: "a" }, { prompt: "b" }, { prompt: "c", steps: 3 }, { prompt: "d", seed: 100 }];
    const batches = promptBatches(specs, { prompt: [], seed: 10, numImages: 2, steps: 5 });
    expect(batches.map((b) => [b.prompt, b.seed, b.steps])).toEqual([
      [["a", "b"], [10, 11, 12, 13], 5],
      [["c"], [14, 15], 3],
      [["d"], [100, 101], 5],
    ]);
  });
});
