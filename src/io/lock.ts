// Cross-process locks, the one home for them: an exclusively created lock file that
// names its owner ({pid, host}) and whose mtime the owner refreshes every few seconds
// (a heartbeat). A lock is stale, and taken over, when its owner is a process on this
// host that no longer exists, or when its heartbeat stopped (an owner on another host
// that died). Node cannot take flock(), and a lock file works on network folders too.
//
// Users: the hub's per-blob download lock (waits for the holder) and the training
// run lock (refuses at once, naming the holder).
import { hostname } from "node:os";
import { mkdir, open, readFile, rm, stat, utimes } from "node:fs/promises";
import { dirname } from "node:path";

const HEARTBEAT_MS = 5_000;
const STALE_MS = 30_000;
const POLL_MS = 100;

export interface LockOwner {
  pid?: number;
  host?: string;
}

export interface FileLockOptions {
  /** Wait for a live holder (polling); otherwise `busy` is thrown at once. */
  wait?: boolean;
  /** Cancels the wait. */
  signal?: AbortSignal;
  /** The error when the lock is held and `wait` is off. */
  busy?: (owner: LockOwner) => Error;
  /** The error when `signal` cancels the wait (default: an AbortError naming the lock). */
  aborted?: () => Error;
}

/** Takes the lock at `path`; resolves to its release. */
export async function acquireFileLock(path: string, options: FileLockOptions = {}): Promise<() => Promise<void>> {
  await mkdir(dirname(path), { recursive: true });
  for (;;) {
    if (await tryCreate(path)) return holding(path);
    const owner = await readOwner(path);
    if (owner === undefined) continue; // released between our open and read: retry now
    if (await isStale(path, owner)) {
      await rm(path, { force: true });
      continue;
    }
    if (!options.wait) throw options.busy?.(owner) ?? new Error(`${path} is held by process ${owner.pid ?? "?"}`);
    await sleep(POLL_MS, options);
  }
}

/** Runs `fn` while holding the lock at `path`. */
export async function withFileLock<T>(path: string, options: FileLockOptions, fn: () => Promise<T>): Promise<T> {
  const release = await acquireFileLock(path, options);
  try {
    return await fn();
  } finally {
    await release();
  }
}

async function tryCreate(path: string): Promise<boolean> {
  try {
    const handle = await open(path, "wx");
    try {
      await handle.writeFile(`${JSON.stringify({ pid: process.pid, host: hostname() })}\n`);
    } finally {
      await handle.close();
    }
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
}

function holding(path: string): () => Promise<void> {
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => undefined);
  }, HEARTBEAT_MS);
  heartbeat.unref();
  return async () => {
    clearInterval(heartbeat);
    await rm(path, { force: true });
  };
}

/** The owner a lock file names; {} when it names none (older formats); undefined when it is gone. */
async function readOwner(path: string): Promise<LockOwner | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const owner = JSON.parse(text) as LockOwner;
    return typeof owner === "object" && owner !== null ? owner : {};
  } catch {
    return {};
  }
}

async function isStale(path: string, owner: LockOwner): Promise<boolean> {
  if (owner.pid !== undefined && owner.host === hostname()) return !isAlive(owner.pid);
  try {
    return Date.now() - (await stat(path)).mtimeMs > STALE_MS;
  } catch {
    return false; // gone: the next try creates it
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function sleep(ms: number, options: FileLockOptions): Promise<void> {
  const { signal } = options;
  const cancelled = (): Error => {
    if (options.aborted) return options.aborted();
    const error = new Error("waiting for a lock was cancelled");
    error.name = "AbortError";
    return error;
  };
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled());
    const timer = setTimeout(done, ms);
    function done(): void {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted(): void {
      clearTimeout(timer);
      reject(cancelled());
    }
    signal?.addEventListener("abort", aborted, { once: true });
  });
}
