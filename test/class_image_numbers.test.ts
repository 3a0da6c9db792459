// Which class-image numbers are still to make: numbered after the images present, skipping a
// number whose file exists (a data-parallel run stopped midway can leave gaps below the count).
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { missingNumbers } from "../src/train/images.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: { path: string; cleanup(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir("sdtune-class-numbers-");
});
afterAll(async () => dir.cleanup());

describe("class-image numbers", () => {
  it("numbers an empty folder from 0 and a full one not at all", () => {
    expect(missingNumbers(dir.path, 0, 3)).toEqual([0, 1, 2]);
    expect(missingNumbers(dir.path, 3, 3)).toEqual([]);
    expect(missingNumbers(dir.path, 4, 3)).toEqual([]);
  });

  it("after a stopped 2-rank run left only number 1, makes 2 more without overwriting it", () => {
    writeFileSync(join(dir.path, "class_00001.png"), "x");
    // One image present: numbering starts at 1, 1 exists, so 2 and 3 are made (3 images in all).
    expect(missingNumbers(dir.path, 1, 3)).toEqual([2, 3]);
  });
});
