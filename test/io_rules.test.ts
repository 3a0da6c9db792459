// One home per rule (src/io): the byte formatter, the pickle rule, the atomic writer and the lock.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { copyFileAtomic, isTempFile, tempPathFor, writeFileAtomic } from "../src/io/atomic.js";
import { formatBytes } from "../src/io/bytes.js";
import { acquireFileLock } from "../src/io/lock.js";
import { pickleFiles, pickleRefusal } from "../src/io/pickle.js";
import { tempDir } from "./helpers/fixtures.js";

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.cleanup();
});

describe("formatBytes", () => {
  it("uses binary units, one decimal from KiB up", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(5 * 2 ** 20)).toBe("5.0 MiB");
    expect(formatBytes(3.25 * 2 ** 30)).toBe("3.3 GiB");
  });
});

describe("pickles", () => {
  it("finds pickled names in any case and says why they are refused", () => {
    expect(pickleFiles(["b.safetensors", "z.CKPT", "a.bin", "model.pth", "x.pickle", "notes.txt"])).toEqual([
      "a.bin",
      "model.pth",
      "x.pickle",
      "z.CKPT",
    ]);
    expect(pickleRefusal("dir: only a.bin", "Convert it.")).toMatch(
      /^dir: only a.bin\. .*runs arbitrary code\. Convert it\.$/,
    );
  });
});

describe("atomic writes", () => {
  it("writes and copies through temp files that never stay behind", async () => {
    const file = join(dir.path, "atomic", "a.json");
    await writeFileAtomic(file, "one");
    await writeFileAtomic(file, "two");
    await copyFileAtomic(file, join(dir.path, "atomic", "b.json"));
    expect(readFileSync(join(dir.path, "atomic", "b.json"), "utf8")).toBe("two");
    expect(readdirSync(join(dir.path, "atomic")).sort()).toEqual(["a.json", "b.json"]);
    expect(isTempFile(tempPathFor(file))).toBe(true);
    expect(isTempFile(file)).toBe(false);
  });
});

describe("file lock", () => {
  it("refuses a live holder by name, takes over a dead one, and releases", async () => {
    const path = join(dir.path, "lock", "run.lock");
    const release = await acquireFileLock(path);
    await expect(acquireFileLock(path, { busy: (owner) => new Error(`held by ${owner.pid}`) })).rejects.toThrow(
      `held by ${process.pid}`,
    );
    await release();
    expect(existsSync(path)).toBe(false);

    // A process of this host that has exited: its lock is stale at once.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
    writeFileSync(path, JSON.stringify({ pid: Number(dead), host: hostname() }));
    const again = await acquireFileLock(path);
    expect(JSON.parse(readFileSync(path, "utf8"))).toEqual({ pid: process.pid, host: hostname() });
    await again();
  });
});
