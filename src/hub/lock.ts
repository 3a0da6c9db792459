// The lock around one blob download, so that several sdtune processes (e.g. one per
// GPU) resolving the same model do not write the same .incomplete file at once.
// huggingface_hub uses flock() on .locks/<repo>/<etag>.lock; this is src/io/lock.ts's
// lock file on a sibling path, waiting for the holder. (Concurrent writes by a Python
// process are not excluded; they would fail the hash check, not corrupt the cache.)
import { dirname } from "node:path";

import { acquireFileLock } from "../io/lock.js";
import { abortError, onDisk } from "./errors.js";

/** Runs `fn` while holding the lock file `path`, waiting for other holders first. */
export async function withFileLock<T>(path: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  const release = await onDisk(dirname(path), "creating lock", () =>
    acquireFileLock(path, { wait: true, signal, aborted: () => abortError("waiting for another download", signal) }),
  );
  try {
    return await fn();
  } finally {
    await release();
  }
}
