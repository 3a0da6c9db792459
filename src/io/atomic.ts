// Atomic file writes, the one home for them: readers see the old file or the new one,
// never half of one, and after the call returns the new file survives a power cut
// (the file is fsynced before the rename, the folder after it). Temp files sit beside
// their target as `<name>.tmp-<pid>-<hex>` (native/io/safetensors.cc names its own the
// same way), so cleanup and folder walks recognise them with isTempFile().
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, open, rename, rm, stat } from "node:fs/promises";
import { basename, dirname } from "node:path";

/** A fresh temp path beside `path`. */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/** True for a temp file name written by tempPathFor (or the native safetensors writer). */
export function isTempFile(path: string): boolean {
  return /\.tmp-\d+-\w+$/.test(basename(path));
}

/** Writes `data` to a temp file beside `path`, fsyncs it, renames it into place and fsyncs the folder. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = tempPathFor(path);
  const handle = await open(temp, "wx");
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  await moveIntoPlace(temp, path, { syncFile: false });
}

/** Copies `from` to `to` through a temp file, with writeFileAtomic's guarantees. */
export async function copyFileAtomic(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  const temp = tempPathFor(to);
  try {
    await copyFile(from, temp);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await moveIntoPlace(temp, to);
}

/**
 * Renames a finished temp file over `path`: fsyncs it first (`syncFile: false` when the
 * caller already did, or for a symlink), the folder after. The temp file is removed when
 * the move fails, unless `keepOnError` (a resumable download keeps its partial file).
 */
export async function moveIntoPlace(
  temp: string,
  path: string,
  options: { syncFile?: boolean; keepOnError?: boolean } = {},
): Promise<void> {
  try {
    if (options.syncFile ?? true) await fsyncFile(temp);
    await rename(temp, path);
  } catch (error) {
    if (!options.keepOnError) await rm(temp, { force: true });
    throw error;
  }
  await syncDir(dirname(path));
}

/** Flushes a regular file's contents to disk (anything else is left alone). */
export async function fsyncFile(path: string): Promise<void> {
  if (!(await stat(path)).isFile()) return;
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a rename inside `dir` durable. */
export async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself already happened.
  }
}
