// Hub settings from the environment, and the download lock. No network.
import { existsSync } from "node:fs";
import { utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { hubSettings } from "../src/hub/index.js";
import { withFileLock } from "../src/hub/lock.js";
import { tempDir } from "./helpers/fixtures.js";
import { isolateHubEnv } from "./helpers/hub_server.js";

let restoreEnv: () => void;
let tmp: { path: string; cleanup(): Promise<void> };
beforeEach(async () => {
  tmp = await tempDir("sdtune-hub-env-");
  restoreEnv = isolateHubEnv();
});
afterEach(async () => {
  restoreEnv();
  await tmp.cleanup();
});

describe("environment", () => {
  it("reads HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN as huggingface_hub does", () => {
    process.env.XDG_CACHE_HOME = "/xdg";
    expect(hubSettings().cacheDir).toBe("/xdg/huggingface/hub");
    process.env.HF_HOME = "/hf-home";
    expect(hubSettings().cacheDir).toBe("/hf-home/hub");
    process.env.HF_HUB_CACHE = "/elsewhere/hub";
    expect(hubSettings().cacheDir).toBe("/elsewhere/hub");
    expect(hubSettings({ cacheDir: "/opt/cache" }).cacheDir).toBe("/opt/cache");
    expect(hubSettings().endpoint).toBe("https://huggingface.co");
    process.env.HF_ENDPOINT = "https://hf-mirror.example/";
    expect(hubSettings().endpoint).toBe("https://hf-mirror.example");
    for (const [value, offline] of [
      ["1", true],
      ["true", true],
      ["ON", true],
      ["yes", true],
      ["0", false],
      ["", false],
    ] as const) {
      process.env.HF_HUB_OFFLINE = value;
      expect(hubSettings().offline, `HF_HUB_OFFLINE=${value}`).toBe(offline);
    }
    process.env.HF_HUB_OFFLINE = "1";
    expect(hubSettings({ offline: false }).offline).toBe(false);
    process.env.HF_TOKEN = "  hf_from_env\n";
    expect(hubSettings().token).toBe("hf_from_env");
    expect(hubSettings({ token: false }).token).toBeUndefined();
    expect(hubSettings({ token: "hf_given" }).token).toBe("hf_given");
    process.env.HF_ENDPOINT = "ftp://nope";
    expect(() => hubSettings()).toThrow(/must be an http\(s\) URL/);
  });
});

describe("download lock", () => {
  it("waits for a live holder and takes over a stale lock", async () => {
    const lock = join(tmp.path, "locks", "x.lock");
    const order: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const first = withFileLock(lock, undefined, async () => {
      order.push("first in");
      await held;
      order.push("first out");
    });
    await new Promise((r) => setTimeout(r, 50));
    const second = withFileLock(lock, undefined, async () => void order.push("second"));
    await new Promise((r) => setTimeout(r, 300));
    expect(order).toEqual(["first in"]);
    release();
    await Promise.all([first, second]);
    expect(order).toEqual(["first in", "first out", "second"]);
    expect(existsSync(lock)).toBe(false);

    // A lock left by a dead process (no heartbeat for a minute) is taken over.
    await writeFile(lock, "12345@elsewhere\n");
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    await withFileLock(lock, undefined, async () => void order.push("after stale"));
    expect(order.at(-1)).toBe("after stale");

    // Waiting is cancellable.
    await writeFile(lock, "held\n");
    const error = await withFileLock(lock, AbortSignal.timeout(200), async () => undefined).catch((e: unknown) => e);
    expect((error as Error).name).toBe("AbortError");
  });
});
