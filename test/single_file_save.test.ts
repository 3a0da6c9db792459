// Writing merged models as single files: `lora merge --out NAME.safetensors` holds exactly what
// the merged diffusers folder holds, in the LDM layout.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { main } from "../src/cli/main.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { convertDiffusersToSingleFile, inspectSingleFile } from "../src/index.js";
import type { Tensor } from "../src/native/index.js";
import { captureCli } from "./helpers/capture.js";
import { fixture, tempDir } from "./helpers/fixtures.js";

const BASE = fixture("tiny-sd");
const KOHYA = fixture("lora", "kohya", "lora.safetensors");
const cli = (...argv: string[]) => captureCli(() => main(argv));

let tmp: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  tmp = await tempDir("sdtune-single-save-");
});
afterAll(async () => tmp.cleanup());

const bytes = (t: Tensor): Buffer => {
  const v = t.toTypedArray();
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
};

describe("lora merge to a single file", () => {
  it("writes the merged weights in the LDM layout, equal to the merged folder converted", async () => {
    const folder = join(tmp.path, "merged");
    const file = join(tmp.path, "merged.safetensors");
    expect((await cli("lora", "merge", "--model", BASE, "--lora", KOHYA, "--out", folder)).code).toBe(0);
    const r = await cli("lora", "merge", "--model", BASE, "--lora", KOHYA, "--out", file);
    expect(r.code).toBe(0);
    expect((await inspectSingleFile(file)).family).toBe("sd2");
    const converted = join(tmp.path, "converted.safetensors");
    await convertDiffusersToSingleFile(folder, converted);
    const a = (await readSafetensors(converted)).tensors;
    const b = (await readSafetensors(file)).tensors;
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    expect([...a].filter(([k, t]) => !bytes(t).equals(bytes(b.get(k)!))).map(([k]) => k)).toEqual([]);
    // The LoRA changed the UNet: the merged file is not the base converted.
    const plain = join(tmp.path, "base.safetensors");
    await convertDiffusersToSingleFile(BASE, plain);
    const p = (await readSafetensors(plain)).tensors;
    const changed = [...p].filter(([k, t]) => !bytes(t).equals(bytes(b.get(k)!)));
    expect(changed.some(([k]) => k.startsWith("model.diffusion_model."))).toBe(true);
  });

  it("refuses to replace an existing file without --force", async () => {
    const file = join(tmp.path, "merged.safetensors");
    const r = await cli("lora", "merge", "--model", BASE, "--lora", KOHYA, "--out", file);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("--force");
  });
});
