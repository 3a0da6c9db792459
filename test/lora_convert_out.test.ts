// `sdtune lora convert --out`: a folder, or a name without extension, gets a named
// .safetensors inside it; never an extensionless file.
import { existsSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import { inspectSafetensors } from "../src/io/safetensors.js";
import { targetFile } from "../src/lora/formats/save.js";
import { captureCli } from "./helpers/capture.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

const KOHYA = fixture("lora", "kohya", "lora.safetensors");
const DIFFUSERS = fixture("lora", "diffusers");
let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-lora-out-");
});
afterAll(async () => dir.cleanup());
const run = (...argv: string[]) => captureCli(() => main(argv));

describe("lora convert --out", () => {
  it("names the file inside a folder or an extensionless name", () => {
    expect(targetFile(join(dir.path, "x.safetensors"), { format: "kohya" })).toBe(join(dir.path, "x.safetensors"));
    expect(targetFile(join(dir.path, "mine"), { format: "kohya", name: "subject" })).toBe(
      join(dir.path, "mine", "subject.safetensors"),
    );
    expect(targetFile(join(dir.path, "mine"), { format: "peft" })).toBe(
      join(dir.path, "mine", "pytorch_lora_weights.safetensors"),
    );
  });

  it("writes <dir>/<input name>.safetensors for kohya and pytorch_lora_weights for diffusers", async () => {
    const kohyaOut = join(dir.path, "kohya-out");
    let r = await run("lora", "convert", DIFFUSERS, "--to", "kohya", "--out", kohyaOut, "--base", fixture("tiny-sd"));
    expect(r.code, r.err).toBe(0);
    expect(statSync(kohyaOut).isDirectory()).toBe(true);
    const written = join(kohyaOut, "diffusers.safetensors");
    expect((await inspectSafetensors(written)).tensors.length).toBeGreaterThan(0);

    const existing = join(dir.path, "existing");
    await mkdir(existing);
    r = await run("lora", "convert", KOHYA, "--to", "diffusers", "--out", join(dir.path, "diff-out"));
    expect(r.code, r.err).toBe(0);
    expect(existsSync(join(dir.path, "diff-out", "pytorch_lora_weights.safetensors"))).toBe(true);
    r = await run("lora", "convert", DIFFUSERS, "--to", "kohya", "--out", existing, "--base", fixture("tiny-sd"));
    expect(r.code, r.err).toBe(0);
    expect(existsSync(join(existing, "diffusers.safetensors"))).toBe(true);
  });
});
