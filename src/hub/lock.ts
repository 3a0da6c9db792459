// A cross-process lock around one blob download, so that several sdtune
// processes (e.g. one per GPU) resolving the same model do not write the same
// .incomplete file at once. huggingface_hub uses flock() on
// .locks/<repo>/<etag>.lock, which Node cannot take; we use an exclusively
// created sibling file with a heartbeat instead. A holder that dies stops the
// heartbeat and its lock goes stale after STALE_MS. (Concurrent writes by a
// Python process are not excluded; they would fail the hash check, not corrupt
// the cache.)
import { hostname } from "node:os";
import { mkdir, open, rm, stat, utimes } from "node:fs/promises";
import { dirname } from "node:path";

import { abortError, diskError, onDisk } from "./errors.js";

const HEARTBEAT_MS = 5_000;
const STALE_MS = 30_000;
const POLL_MS = 100;

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError("waiting for another download", signal));
    const timer = setTimeout(done, ms);
    function done(): void {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted(): void {
      clearTimeout(timer);
      reject(abortError("waiting for another download", signal));
    }
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

/** Runs `fn` while holding the lock file `path`, waiting for other holders first. */
export async function withFileLock<T>(path: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  await onDisk(dirname(path), "creating lock folder", () => mkdir(dirname(path), { recursive: true }));
  for (;;) {
    try {
      const handle = await open(path, "wx");
      await handle.writeFile(`${process.pid}@${hostname()}\n`);
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw diskError(path, error, "creating lock");
      }
    }
    try {
      if (Date.now() - (await stat(path)).mtimeMs > STALE_MS) await rm(path, { force: true });
    } catch {
      // released between our open and stat: just retry
    }
    await sleep(POLL_MS, signal);
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => undefined);
  }, HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    await rm(path, { force: true });
  }
}
