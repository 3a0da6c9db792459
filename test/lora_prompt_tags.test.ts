// <lora:NAME:WEIGHT:lbw=BLOCKS> tags in generate() prompts (AUTOMATIC1111's LoRA Block Weight
// syntax): the tagged call equals loading the LoRA with those block weights; other calls keep
// the LoRA as it is.
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { parseLoraSpec } from "../src/cli/command.js";
import { loadPipeline, type StableDiffusionPipeline } from "../src/index.js";
import { parseLoraTags } from "../src/lora/index.js";
import { native, type Tensor } from "../src/native/index.js";
import { fixture } from "./helpers/fixtures.js";

const KOHYA = fixture("lora", "kohya", "lora.safetensors");
const OUT_ONLY = "0,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1";
let pipe: StableDiffusionPipeline;
beforeAll(async () => {
  pipe = await loadPipeline(fixture("tiny-sd"));
});
afterAll(() => pipe?.dispose());

const image = async (prompt: string): Promise<Tensor> =>
  (await pipe.generate({ prompt, steps: 2, seed: 7, scheduler: "ddim", outputType: "tensor" })).tensor!;

describe("parseLoraTags", () => {
  it("cuts the tags and reads name, weight and block weights", () => {
    const parsed = parseLoraTags(`a cat <lora:style:0.5:lbw=${OUT_ONLY}>, <lora:other> <lora:x:1:OUTALL>`);
    expect(parsed.prompt).toBe("a cat ,");
    expect(parsed.tags).toEqual([
      { name: "style", scale: 0.5, blockWeights: OUT_ONLY },
      { name: "other", scale: 1 },
      { name: "x", scale: 1, blockWeights: "OUTALL" },
    ]);
    expect(() => parseLoraTags("<lora:a:zz>")).toThrow(/not a number/);
    expect(parseLoraSpec(`C:\\x.safetensors:0.8:lbw=${OUT_ONLY}`)).toEqual({
      path: "C:\\x.safetensors",
      scale: 0.8,
      blockWeights: OUT_ONLY,
    });
    expect(() => parseLoraTags("<lora:a:1:lbw=1,2>")).toThrow(/2 values/);
  });
});

describe("generate() with <lora:...> tags", () => {
  it("a tagged call equals the LoRA loaded with those block weights", async () => {
    await pipe.loadLora(KOHYA, { name: "style" });
    const full = await image("a cat");
    const tagged = await image(`a cat <lora:style:1:lbw=${OUT_ONLY}>`);
    await pipe.unloadLora("style");
    await pipe.loadLora(KOHYA, { name: "style", blockWeights: OUT_ONLY });
    const loaded = await image("a cat");
    expect(native().ops.maxAbsDiff(tagged, loaded)).toBe(0);
    expect(native().ops.maxAbsDiff(tagged, full)).toBeGreaterThan(0);
    await expect(image("a cat <lora:missing:1>")).rejects.toThrow(/"missing", which is not loaded/);
    await pipe.unloadLora("style");
  });
});
