// Making a cache snapshot hold what a request needs.
//
// 1. Cache: the commit is the revision itself (a full hash) or refs/<revision>.
//    If that snapshot already holds every needed file, return it: no request.
//    (Pipelines and literal file names can be checked from the cache alone;
//    glob patterns need the repo's file list, so online they cost one API call.)
// 2. Offline (HF_HUB_OFFLINE=1 or offline: true): fail, naming what is missing.
// 3. Online: one API call gives the commit and its files; plan; download what
//    the snapshot lacks (resumable, verified, a few at a time); write refs/<revision>.
import { mkdir, readFile, statfs } from "node:fs/promises";

import { formatBytes } from "../io/bytes.js";
import { HubClient, type RemoteFile } from "./api.js";
import {
  cachedCommit,
  isDirectory,
  listKnownMissing,
  listSnapshot,
  markMissing,
  pointerPath,
  snapshotDir,
  snapshotHas,
  writeRef,
} from "./cache.js";
import { fetchToCache } from "./download.js";
import { DEFAULT_REVISION, hubSettings, type HubAccessOptions, type HubSettings } from "./env.js";
import { HubError, onDisk } from "./errors.js";
import type { FileSet, Plan } from "./plan.js";
import { COMMIT_HASH, repoPageUrl, storageFolder, type RepoRef } from "./repo.js";
import { linkedController, type LinkedController } from "./signal.js";

/** Progress of a resolve call, in the shape of sdtune's ProgressEvent. */
export interface HubProgressEvent {
  phase: "download";
  /** Bytes of the needed files on disk so far (already cached ones included). */
  step: number;
  /** Bytes of all needed files. */
  total: number;
  /** The file this event is about (repo-relative path). */
  file: string;
  fileBytes: number;
  fileTotal: number;
  filesDone: number;
  filesTotal: number;
  [value: string]: number | string;
}

export interface ResolveOptions extends HubAccessOptions {
  /** Branch, tag or commit hash. Default "main". */
  revision?: string;
  /** Cancels downloads; partial files stay as blobs/<etag>.incomplete and the next call resumes them. */
  signal?: AbortSignal;
  onProgress?: (event: HubProgressEvent) => void;
  /** Ask the hub for the revision's commit even when the cache is complete (to pick up new commits on "main"). */
  refresh?: boolean;
  /** Attempts per file after a dropped connection or a 5xx answer, each resuming. Default 5. */
  retries?: number;
  /** Files downloaded at once. Default 4. */
  concurrency?: number;
}

export type Planner = (fs: FileSet) => Promise<Plan>;

interface Request {
  repo: RepoRef;
  settings: HubSettings;
  storage: string;
  revision: string;
  options: ResolveOptions;
  planner: Planner;
  /** Readable name for messages: "repo org/name@main". */
  what: string;
}

/** The snapshot folder of `repo` holding every file `planner` asks for. */
export async function ensureSnapshot(
  repo: RepoRef,
  options: ResolveOptions,
  needsListing: boolean,
  planner: Planner,
): Promise<string> {
  const settings = hubSettings(options);
  const revision = options.revision ?? DEFAULT_REVISION;
  const req: Request = {
    repo,
    settings,
    storage: storageFolder(settings.cacheDir, repo),
    revision,
    options,
    planner,
    what: `${repo.type === "dataset" ? "dataset" : "repo"} ${repo.id}@${revision}`,
  };
  if (options.signal?.aborted) throw new HubError("aborted", `resolving ${req.what} cancelled`);

  // 1. The cache.
  const commit = await cachedCommit(req.storage, revision);
  let cachedPlan: Plan | undefined;
  if (commit && (await isDirectory(snapshotDir(req.storage, commit)))) {
    cachedPlan = await planner(await localFileSet(req.storage, commit));
  }
  const complete = commit !== undefined && cachedPlan?.problems.length === 0;
  if (complete && (settings.offline || (!needsListing && !options.refresh))) return snapshotDir(req.storage, commit);

  // 2. Offline.
  if (settings.offline) throw notCached(req, commit, cachedPlan);

  // 3. The hub.
  const inner = linkedController(options.signal); // also stops the other downloads after a failure
  try {
    return await fromHub(req, inner);
  } catch (error) {
    // Like huggingface_hub: when the hub cannot be reached, a complete cached snapshot will do.
    if (complete && error instanceof HubError && error.code === "network") return snapshotDir(req.storage, commit);
    throw error;
  } finally {
    inner.dispose();
  }
}

function notCached(req: Request, commit: string | undefined, cachedPlan: Plan | undefined): HubError {
  const where = `the cache ${req.settings.cacheDir}`;
  const fix = "run once online, or unset HF_HUB_OFFLINE / pass offline: false";
  if (!commit) {
    const lacking = COMMIT_HASH.test(req.revision) ? `snapshots/${req.revision}` : `refs/${req.revision}`;
    return new HubError("not_cached", `${req.what} is not in ${where} (no ${lacking}) and offline mode is on: ${fix}`, {
      where: req.storage,
    });
  }
  const missing = cachedPlan ? cachedPlan.problems.map((p) => p.message) : ["the whole snapshot"];
  const dir = snapshotDir(req.storage, commit);
  return new HubError(
    "not_cached",
    `${req.what} is only partly in ${where} and offline mode is on; missing from ${dir}: ${missing.join("; ")}. ${fix}`,
    { where: dir },
  );
}

async function fromHub(req: Request, inner: LinkedController): Promise<string> {
  const client = new HubClient(req.settings, req.repo, inner.signal);
  const { commit, files } = await client.listing(req.revision);
  const retries = req.options.retries ?? 5;
  const plan = await req.planner(
    remoteFileSet(files, async (file) => {
      await fetchToCache(client, req.storage, commit, file, { retries });
      return pointerPath(req.storage, commit, file.path);
    }),
  );
  if (plan.problems.length) {
    const code = plan.problems.some((p) => p.code === "pickle_only") ? "pickle_only" : "bad_repo";
    const all = plan.problems.map((p) => p.message).join("\n");
    throw new HubError(code, `${all}\n(files: ${repoPageUrl(req.settings.endpoint, req.repo)}/tree/${commit})`);
  }
  for (const path of plan.absent) await markMissing(req.storage, commit, path);
  const needed = [...plan.files].map((path) => files.get(path)!);
  await downloadAll(client, req, commit, needed, inner);
  // Last, so that a ref always points to a complete snapshot.
  await writeRef(req.storage, req.revision, commit);
  return snapshotDir(req.storage, commit);
}

/** A cached snapshot as a FileSet. */
async function localFileSet(storage: string, commit: string): Promise<FileSet> {
  const present = await listSnapshot(storage, commit);
  const absent = await listKnownMissing(storage, commit);
  return {
    kind: "local",
    has: (path) => present.has(path),
    paths: () => present,
    readJson: (path) => readJsonFile(pointerPath(storage, commit, path)),
    knownAbsent: (path) => absent.has(path),
  };
}

/** The hub's file list as a FileSet; reading a file downloads it into the snapshot. */
function remoteFileSet(files: Map<string, RemoteFile>, fetchFile: (file: RemoteFile) => Promise<string>): FileSet {
  return {
    kind: "remote",
    has: (path) => files.has(path),
    paths: () => files.keys(),
    readJson: async (path) => readJsonFile(await fetchFile(files.get(path)!)),
    knownAbsent: () => false,
  };
}

async function readJsonFile(path: string): Promise<unknown> {
  const text = await onDisk(path, "reading", () => readFile(path, "utf8"));
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new HubError("bad_repo", `${path}: not valid JSON (${(error as Error).message})`, { where: path });
  }
}

/** Downloads what the snapshot lacks, a few files at a time, reporting bytes per file and overall. */
async function downloadAll(
  client: HubClient,
  req: Request,
  commit: string,
  needed: RemoteFile[],
  inner: LinkedController,
): Promise<void> {
  const { storage, options } = req;
  const todo: RemoteFile[] = [];
  let present = 0;
  for (const file of needed) {
    if (await snapshotHas(storage, commit, file.path)) present += file.size;
    else todo.push(file);
  }
  if (todo.length === 0) return;
  const total = needed.reduce((sum, f) => sum + f.size, 0);
  await checkFreeSpace(
    storage,
    todo.reduce((sum, f) => sum + f.size, 0),
  );

  let failure: { error: unknown } | undefined;
  const fail = (error: unknown): void => {
    failure ??= { error };
    inner.abort(error);
  };
  const current = new Map<string, number>(); // bytes on disk per file being fetched
  let filesDone = needed.length - todo.length;
  const report = (file: RemoteFile, fileBytes: number): void => {
    current.set(file.path, fileBytes);
    if (!options.onProgress) return;
    let step = present;
    for (const bytes of current.values()) step += bytes;
    try {
      options.onProgress({
        phase: "download",
        step,
        total,
        file: file.path,
        fileBytes,
        fileTotal: file.size,
        filesDone,
        filesTotal: needed.length,
      });
    } catch (error) {
      fail(error); // the caller's callback threw: stop, and rethrow its error
    }
  };

  todo.sort((a, b) => b.size - a.size); // largest first, so the long transfers start early
  let next = 0;
  const worker = async (): Promise<void> => {
    while (!failure && next < todo.length) {
      const file = todo[next++]!;
      try {
        await fetchToCache(client, storage, commit, file, {
          retries: options.retries ?? 5,
          onBytes: (b) => report(file, b),
        });
        filesDone++;
        report(file, file.size);
      } catch (error) {
        fail(error);
      }
    }
  };
  const workers = Math.max(1, Math.min(options.concurrency ?? 4, todo.length));
  await Promise.all(Array.from({ length: workers }, worker));
  if (failure) throw failure.error;
}

async function checkFreeSpace(storage: string, bytes: number): Promise<void> {
  await onDisk(storage, "creating", () => mkdir(storage, { recursive: true }));
  let free: number;
  try {
    const s = await statfs(storage);
    free = s.bavail * s.bsize;
  } catch {
    return; // no statfs here: the writes will tell
  }
  if (free < bytes) {
    throw new HubError(
      "disk",
      `not enough free space in ${storage}: the download needs ${formatBytes(bytes)}, ${formatBytes(free)} are free; free space or set HF_HUB_CACHE`,
      { where: storage },
    );
  }
}
