// The Hugging Face cache layout, exactly as huggingface_hub writes it:
//
//   <cache>/models--org--name/
//     blobs/<etag>                 file contents (etag = git blob sha1, or sha256 for LFS files)
//     blobs/<etag>.incomplete      a download in progress (resumable)
//     snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag> (one more ../ per folder level)
//     refs/<revision>              the commit hash a branch or tag pointed to, no newline
//     .no_exist/<commit>/<path>    empty marker: this file does not exist at that commit
//   <cache>/.locks/models--org--name/<etag>.lock   huggingface_hub's file locks
//
// Every write is atomic (temp file + rename), so a crash never leaves a
// half-written ref or link, and Python and sdtune can share one cache.
import { copyFile, lstat, mkdir, readFile, readdir, rm, stat, symlink } from "node:fs/promises";
import { dirname, join, relative } from "node:path";

import { isTempFile, moveIntoPlace, tempPathFor, writeFileAtomic as writeAtomic } from "../io/atomic.js";
import { onDisk } from "./errors.js";
import { COMMIT_HASH } from "./repo.js";

export const blobPath = (storage: string, etag: string): string => join(storage, "blobs", etag);
export const snapshotDir = (storage: string, commit: string): string => join(storage, "snapshots", commit);
export const pointerPath = (storage: string, commit: string, path: string): string =>
  join(snapshotDir(storage, commit), ...path.split("/"));
const noExistPath = (storage: string, commit: string, path: string): string =>
  join(storage, ".no_exist", commit, ...path.split("/"));

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path); // follows symlinks: a dangling link does not count
    return true;
  } catch {
    return false;
  }
}

/** Writes a small file atomically (src/io/atomic.ts), a disk error naming the file. */
export async function writeFileAtomic(path: string, contents: string): Promise<void> {
  await onDisk(path, "writing", () => writeAtomic(path, contents));
}

/** The commit for a revision: the revision itself if it is a full hash, else refs/<revision>. */
export async function cachedCommit(storage: string, revision: string): Promise<string | undefined> {
  if (COMMIT_HASH.test(revision)) return revision;
  try {
    const commit = (await readFile(join(storage, "refs", ...revision.split("/")), "utf8")).trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

/** refs/<revision> := commit, unless the revision is that commit or the ref already says so. */
export async function writeRef(storage: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const path = join(storage, "refs", ...revision.split("/"));
  try {
    if ((await readFile(path, "utf8")) === commit) return; // no write: the cache may be read-only
  } catch {
    // missing: write it
  }
  await writeFileAtomic(path, commit);
}

let symlinksWork: boolean | undefined;

/**
 * snapshots/<commit>/<path> -> relative link to the blob, replacing whatever was
 * there atomically. Where symlinks are not allowed (some Windows setups), the
 * blob is copied instead, as huggingface_hub does.
 */
export async function linkSnapshotFile(blob: string, pointer: string): Promise<void> {
  await onDisk(pointer, "linking", async () => {
    await mkdir(dirname(pointer), { recursive: true });
    const tmp = tempPathFor(pointer);
    if (symlinksWork !== false) {
      try {
        await symlink(relative(dirname(pointer), blob), tmp);
        await moveIntoPlace(tmp, pointer, { syncFile: false });
        symlinksWork = true;
        return;
      } catch (error) {
        await rm(tmp, { force: true });
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw error;
        symlinksWork = false;
      }
    }
    await copyFile(blob, tmp);
    await moveIntoPlace(tmp, pointer);
  });
}

/** True when snapshots/<commit>/<path> resolves to a readable file. */
export const snapshotHas = (storage: string, commit: string, path: string): Promise<boolean> =>
  exists(pointerPath(storage, commit, path));

export const blobExists = (storage: string, etag: string): Promise<boolean> => exists(blobPath(storage, etag));

/** Marks that `path` does not exist at `commit` (huggingface_hub's .no_exist). */
export async function markMissing(storage: string, commit: string, path: string): Promise<void> {
  const marker = noExistPath(storage, commit, path);
  if (await exists(marker)) return;
  await writeFileAtomic(marker, "");
}

/**
 * Every file of a cached snapshot (repo-relative, "/"-separated) whose link
 * resolves; dangling links are left out.
 */
export const listSnapshot = (storage: string, commit: string): Promise<Set<string>> =>
  walkFiles(snapshotDir(storage, commit));

/** The files recorded as absent at `commit` (.no_exist markers). */
export const listKnownMissing = (storage: string, commit: string): Promise<Set<string>> =>
  walkFiles(join(storage, ".no_exist", commit));

async function walkFiles(root: string): Promise<Set<string>> {
  const found = new Set<string>();
  async function walk(dir: string, prefix: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const full = join(dir, entry.name);
      const rel = prefix + entry.name;
      if (entry.isDirectory()) await walk(full, `${rel}/`);
      else if (isTempFile(entry.name))
        continue; // another writer's temp file
      else if (entry.isFile() || (entry.isSymbolicLink() && (await isFile(full)))) found.add(rel);
    }
  }
  await walk(root, "");
  return found;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Size of a file, 0 when missing (lstat: an .incomplete file is never a link). */
export async function fileSize(path: string): Promise<number> {
  try {
    return (await lstat(path)).size;
  } catch {
    return 0;
  }
}
