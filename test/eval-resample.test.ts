// The native resampler against Pillow 9.4.0's Image.resize (test/fixtures/pil-resample.json.gz,
// written by scripts/fixtures/pil_resample.py): every convolution filter, L and RGB images,
// up- and downscaling, 1-pixel edges. PIL is the reference, so the bytes must be equal.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";

import { native, type ResampleFilter } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";
import { repoRoot } from "./helpers/fixtures.js";

interface Case {
  width: number;
  height: number;
  channels: number;
  outWidth: number;
  outHeight: number;
  filter: ResampleFilter;
  input: string;
  output: string;
}

describe("PIL-exact resampling (native image.resize)", () => {
  it("matches Pillow's Image.resize byte for byte", async () => {
    const file = join(repoRoot, "test", "fixtures", "pil-resample.json.gz");
    const { pillow, cases } = JSON.parse(gunzipSync(await readFile(file)).toString("utf8")) as {
      pillow: string;
      cases: Case[];
    };
    expect(pillow).toBe("9.4.0");
    expect(new Set(cases.map((c) => c.filter)).size).toBe(5);
    const failures: string[] = [];
    for (const [i, c] of cases.entries()) {
      const src = tensorFrom(new Uint8Array(Buffer.from(c.input, "base64")), [c.height, c.width, c.channels]);
      const out = await native().image.resize(src, { width: c.outWidth, height: c.outHeight, filter: c.filter });
      const got = out.toTypedArray() as Uint8Array;
      const want = Buffer.from(c.output, "base64");
      let differing = 0;
      for (let j = 0; j < want.length; j++) if (got[j] !== want[j]) differing++;
      if (got.length !== want.length || differing > 0) {
        failures.push(
          `case ${i}: ${c.width}x${c.height}x${c.channels} -> ${c.outWidth}x${c.outHeight} ${c.filter}: ${differing} bytes differ`,
        );
      }
      src.dispose();
      out.dispose();
    }
    expect(failures).toEqual([]);
  });
});
