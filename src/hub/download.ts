// One file into the cache: GET {endpoint}/{id}/resolve/{commit}/{path}, following
// the hub's 302 to its CDN for LFS files (without the token, as huggingface_hub
// does), into blobs/<etag>.incomplete. An existing .incomplete is resumed with
// "Range: bytes=<size>-". The result is checked against the listed size and
// hash (sha256 for LFS files, git blob sha1 otherwise) before it is renamed to
// blobs/<etag>; then snapshots/<commit>/<path> is linked to it.
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rm, truncate } from "node:fs/promises";
import { dirname, join } from "node:path";

import { moveIntoPlace } from "../io/atomic.js";
import type { HubClient, RemoteFile } from "./api.js";
import { blobExists, blobPath, fileSize, linkSnapshotFile, pointerPath } from "./cache.js";
import { abortError, diskError, HubError, httpError, networkError, onDisk } from "./errors.js";
import { withFileLock } from "./lock.js";
import { repoFolderName, resolveUrl } from "./repo.js";
import { linkedController, type LinkedController } from "./signal.js";

export interface DownloadOptions {
  /** Called after every chunk written, with the bytes of this file now on disk. */
  onBytes?: (fileBytes: number) => void;
  /** Attempts after a dropped connection or a 5xx answer; each resumes where the last stopped. */
  retries: number;
}

const MAX_REDIRECTS = 10;

/** Makes snapshots/<commit>/<file.path> exist, downloading its blob if needed. */
export async function fetchToCache(
  client: HubClient,
  storage: string,
  commit: string,
  file: RemoteFile,
  options: DownloadOptions,
): Promise<void> {
  const blob = blobPath(storage, file.etag);
  if (!(await blobExists(storage, file.etag))) {
    const lock = join(client.settings.cacheDir, ".locks", repoFolderName(client.repo), `${file.etag}.sdtune.lock`);
    await withFileLock(lock, client.signal, async () => {
      if (await blobExists(storage, file.etag)) return; // another process finished it meanwhile
      await downloadBlob(client, commit, file, blob, options);
    });
  }
  await linkSnapshotFile(blob, pointerPath(storage, commit, file.path));
}

/** A failure worth another attempt; the partial file is kept. */
class Retryable extends Error {
  constructor(readonly error: HubError) {
    super(error.message);
  }
}

/** The .incomplete file and the hash of the bytes it holds. */
interface Partial {
  path: string;
  bytes: number;
  hash: Hash;
}

async function downloadBlob(
  client: HubClient,
  commit: string,
  file: RemoteFile,
  blob: string,
  options: DownloadOptions,
): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  await onDisk(dirname(blob), "creating", () => mkdir(dirname(blob), { recursive: true }));
  for (let attempt = 0; ; attempt++) {
    try {
      const partial = await resumePartial(file, incomplete);
      if (partial.bytes < file.size) await transfer(client, commit, file, partial, options);
      verify(file, partial);
      break;
    } catch (error) {
      if (error instanceof HubError && error.code === "integrity") await rm(incomplete, { force: true });
      if (!(error instanceof Retryable)) throw error;
      if (attempt >= options.retries) {
        throw new HubError(
          "network",
          `${error.message} (after ${attempt + 1} attempts; the partial download ${incomplete} is kept and the next call resumes it)`,
          { where: error.error.where, cause: error.error },
        );
      }
      await backoff(attempt, client.signal);
    }
  }
  // Already fsynced; a failed move keeps the partial file for the next call.
  await onDisk(blob, "storing", () => moveIntoPlace(incomplete, blob, { syncFile: false, keepOnError: true }));
}

/** What an earlier attempt left in the .incomplete file, hashed so far. */
async function resumePartial(file: RemoteFile, path: string): Promise<Partial> {
  let bytes = await fileSize(path);
  if (bytes > file.size) {
    await onDisk(path, "truncating", () => truncate(path, 0));
    bytes = 0;
  }
  const hash = newHash(file);
  if (bytes > 0) {
    await onDisk(path, "reading", async () => {
      for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) hash.update(chunk as Buffer);
    });
  }
  return { path, bytes, hash };
}

function newHash(file: RemoteFile): Hash {
  if (file.sha256) return createHash("sha256");
  return createHash("sha1").update(`blob ${file.size}\0`); // git's blob id: sha1 of "blob <size>\0" + contents
}

function backoff(attempt: number, signal: AbortSignal | undefined): Promise<void> {
  const ms = Math.min(250 * 2 ** attempt, 8000);
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError("download", signal));
    const aborted = (): void => {
      clearTimeout(timer);
      reject(abortError("download", signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }, ms);
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

/** One GET (with redirects) appending to the partial file. */
async function transfer(
  client: HubClient,
  commit: string,
  file: RemoteFile,
  partial: Partial,
  options: DownloadOptions,
): Promise<void> {
  // Aborted by the caller's signal, or by the stall timer when no data arrives for a while.
  const controller = linkedController(client.signal);
  try {
    const { response, url } = await request(client, commit, file, partial, controller);
    await receive(client, file, partial, response, url, controller, options);
  } finally {
    controller.dispose();
  }
}

async function request(
  client: HubClient,
  commit: string,
  file: RemoteFile,
  partial: Partial,
  transfer: LinkedController,
): Promise<{ response: Response; url: string }> {
  const { settings } = client;
  let url = resolveUrl(settings.endpoint, client.repo, commit, file.path);
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    // identity: sizes, ranges and hashes are about the stored bytes, never a compressed form
    const headers = client.headers(url, { "accept-encoding": "identity" });
    if (partial.bytes > 0) headers.range = `bytes=${partial.bytes}-`;
    const response = await client
      .send(url, { headers, redirect: "manual" }, settings.downloadTimeoutS, transfer.signal)
      .catch((error: unknown) => {
        throw error instanceof HubError && error.code === "network" ? new Retryable(error) : error;
      });
    if (hop === 0) checkEtag(response, file, url);
    const location = response.headers.get("location");
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      url = new URL(location, url).href;
      continue;
    }
    await checkStatus(client, commit, file, partial, response, url);
    return { response, url };
  }
  throw new HubError("network", `too many redirects for ${file.path} (last: ${url})`, { where: url });
}

/** 200 (from the start), 206 (from our offset), or an error; may reset `partial`. */
async function checkStatus(
  client: HubClient,
  commit: string,
  file: RemoteFile,
  partial: Partial,
  response: Response,
  url: string,
): Promise<void> {
  const restart = async (why: string): Promise<never> => {
    await response.body?.cancel();
    await onDisk(partial.path, "truncating", () => truncate(partial.path, 0));
    throw new Retryable(new HubError("network", `${url} ${why}`, { where: url }));
  };
  if (response.status === 200) {
    if (partial.bytes > 0) {
      // The server ignored the Range header and sends the whole file: take it from the start.
      partial.bytes = 0;
      partial.hash = newHash(file);
    }
  } else if (response.status === 206) {
    const start = /^bytes (\d+)-/.exec(response.headers.get("content-range") ?? "")?.[1];
    if (Number(start) !== partial.bytes) await restart(`resumed at the wrong offset (Content-Range from ${start})`);
  } else if (response.status === 416) {
    await restart(`refused to resume at byte ${partial.bytes} (HTTP 416)`);
  } else {
    const body = await response.text().catch(() => "");
    const error = httpError(client.context(commit, file.path), url, response.status, response.headers, body);
    throw response.status >= 500 || response.status === 429 ? new Retryable(error) : error;
  }
}

/** Streams the body into the partial file, hashing and reporting as it goes. */
async function receive(
  client: HubClient,
  file: RemoteFile,
  partial: Partial,
  response: Response,
  url: string,
  transfer: LinkedController,
  options: DownloadOptions,
): Promise<void> {
  const timeoutS = client.settings.downloadTimeoutS;
  if (!response.body) throw new Retryable(new HubError("network", `${url} sent no body`, { where: url }));
  const handle = await onDisk(partial.path, "opening", () => open(partial.path, partial.bytes > 0 ? "a" : "w"));
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      transfer.abort();
    }, timeoutS * 1000);
  };
  // Each read races the abort signal: a read that undici never settles after an
  // abort (seen with Node 20) must not hang the download.
  const reader = response.body.getReader();
  const aborted = new Promise<never>((_, reject) => {
    const stop = (): void => reject(new Error("aborted"));
    if (transfer.signal.aborted) stop();
    else transfer.signal.addEventListener("abort", stop, { once: true });
  });
  aborted.catch(() => undefined);
  let finished = false;
  try {
    arm();
    for (;;) {
      const { done, value: chunk } = await Promise.race([reader.read(), aborted]);
      if (done) {
        finished = true;
        break;
      }
      arm();
      if (partial.bytes + chunk.length > file.size) {
        throw new HubError("integrity", `${url} sent more than the ${file.size} bytes listed for ${file.path}`, {
          where: url,
        });
      }
      await handle.write(chunk).catch((error: unknown) => {
        throw diskError(partial.path, error, "writing");
      });
      partial.hash.update(chunk);
      partial.bytes += chunk.length;
      options.onBytes?.(partial.bytes);
    }
    await handle.sync().catch((error: unknown) => {
      throw diskError(partial.path, error, "syncing");
    });
  } catch (error) {
    if (error instanceof HubError) throw error;
    const signal = client.signal;
    if (signal?.aborted) {
      const kept = `${partial.bytes} of ${file.size} bytes kept in ${partial.path}; the next call resumes it`;
      throw abortError(`download of ${file.path} (${kept})`, signal);
    }
    if (stalled) {
      const why = `no data from ${url} for ${timeoutS} s (HF_HUB_DOWNLOAD_TIMEOUT)`;
      throw new Retryable(new HubError("network", why, { where: url }));
    }
    throw new Retryable(networkError(url, error, `download of ${file.path}`));
  } finally {
    clearTimeout(timer);
    if (!finished) reader.cancel().catch(() => undefined); // not awaited: it may never settle either
    await handle.close().catch(() => undefined);
  }
  if (partial.bytes !== file.size) {
    const why = `${url} ended after ${partial.bytes} of ${file.size} bytes`;
    throw new Retryable(new HubError("network", why, { where: url }));
  }
}

const normalizeEtag = (value: string | null): string | undefined =>
  value?.replace(/^W\//, "").replace(/^"|"$/g, "") || undefined;

/** The hub's X-Linked-Etag / ETag must name the blob we listed (when it looks like a hash). */
function checkEtag(response: Response, file: RemoteFile, url: string): void {
  const etag = normalizeEtag(response.headers.get("x-linked-etag") ?? response.headers.get("etag"));
  if (etag && /^([0-9a-f]{40}|[0-9a-f]{64})$/.test(etag) && etag !== file.etag) {
    throw new HubError(
      "integrity",
      `${url} serves version ${etag} of ${file.path}, but the file list named ${file.etag}; the repo changed meanwhile, retry`,
      { where: url },
    );
  }
}

/** Size and hash against the hub's listing; a mismatch removes the partial file. */
function verify(file: RemoteFile, partial: Partial): void {
  const digest = partial.hash.digest("hex");
  if (partial.bytes === file.size && digest === file.etag) return;
  const kind = file.sha256 ? "sha256" : "git blob id";
  throw new HubError(
    "integrity",
    `downloaded ${file.path} does not match the hub's listing (${partial.bytes} bytes, ${kind} ${digest}; ` +
      `expected ${file.size} bytes, ${file.etag}). The partial file ${partial.path} was removed; retry the download`,
    { where: partial.path },
  );
}
