// Talking to the hub API: which commit a revision is, and which files that
// commit has (with sizes and hashes, so that downloads can be verified and
// named in the cache without a HEAD request per file).
//
// The commit and file list come from GET /api/{models|datasets}/{id}/revision/{rev}?blobs=true,
// the call huggingface_hub's repo_info(files_metadata=True) makes. Its
// "siblings" are unreliable for large repos (the hub may truncate or omit them),
// so like recent huggingface_hub versions (snapshot_download, >= 1000 files or
// none) we then list the tree instead, with @huggingface/hub's listFiles
// (paginated /api/.../tree/{commit}?recursive=true).
import { listFiles } from "@huggingface/hub";

import type { HubSettings } from "./env.js";
import { abortError, HubError, httpError, networkError, type RequestContext } from "./errors.js";
import { linkedController } from "./signal.js";
import { checkRepoPath, COMMIT_HASH, revisionApiUrl, type RepoRef } from "./repo.js";

/** One file of a commit. */
export interface RemoteFile {
  path: string;
  size: number;
  /** Blob name in the cache: the sha256 for LFS files, else the git blob sha1. */
  etag: string;
  /** Set for LFS files: the content's sha256 (== etag). */
  sha256?: string;
  /** Set for regular git files: the git blob sha1 (== etag). */
  gitOid?: string;
}

export interface RepoListing {
  commit: string;
  files: Map<string, RemoteFile>;
}

/** Beyond this many siblings the revision answer is not trusted to be complete. */
export const LARGE_REPO_THRESHOLD = 1000;

const USER_AGENT = `sdtune; node/${process.versions.node}`;

export class HubClient {
  constructor(
    readonly settings: HubSettings,
    readonly repo: RepoRef,
    readonly signal: AbortSignal | undefined,
  ) {}

  context(revision?: string, file?: string): RequestContext {
    const ctx: RequestContext = {
      endpoint: this.settings.endpoint,
      repoId: this.repo.id,
      repoType: this.repo.type,
      hadToken: this.settings.token !== undefined,
    };
    if (revision !== undefined) ctx.revision = revision;
    if (file !== undefined) ctx.file = file;
    return ctx;
  }

  /** Headers for a request to `url`: the token goes only to the hub itself, never to a CDN. */
  headers(url: string, extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { "user-agent": USER_AGENT, ...extra };
    if (this.settings.token && new URL(url).origin === new URL(this.settings.endpoint).origin) {
      headers.authorization = `Bearer ${this.settings.token}`;
    }
    return headers;
  }

  /**
   * fetch() with the user's signal, translating failures to reach the server
   * into errors that name the URL. `timeoutS` bounds the wait for the answer's
   * headers only; the body is bounded by `signal` (downloads add a stall timer).
   */
  async send(url: string, init: RequestInit, timeoutS: number, signal = this.signal): Promise<Response> {
    // The controller lives as long as the response body: it is what aborts a transfer.
    const controller = linkedController(signal);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutS * 1000);
    try {
      return await fetch(url, { ...init, signal: controller.signal });
    } catch (error) {
      controller.dispose();
      if (this.signal?.aborted) throw abortError(`request to ${url}`, this.signal);
      if (timedOut) {
        throw new HubError("network", `no answer from ${url} within ${timeoutS} s`, { where: url, cause: error });
      }
      throw networkError(url, error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A GET of a JSON API URL; non-2xx answers become HubErrors worded for `ctx`. */
  async getJson(url: string, ctx: RequestContext): Promise<unknown> {
    const response = await this.apiFetch(url, { headers: this.headers(url, { accept: "application/json" }) }, ctx);
    try {
      return await response.json();
    } catch (error) {
      throw new HubError("network", `${url} answered with invalid JSON (${(error as Error).message})`, { where: url });
    }
  }

  async apiFetch(url: string, init: RequestInit, ctx: RequestContext): Promise<Response> {
    const response = await this.send(url, init, this.settings.requestTimeoutS);
    if (!response.ok) throw httpError(ctx, url, response.status, response.headers, await response.text());
    return response;
  }

  /** The commit `revision` points to and the files it holds. */
  async listing(revision: string): Promise<RepoListing> {
    const url = `${revisionApiUrl(this.settings.endpoint, this.repo, revision)}?blobs=true`;
    const info = (await this.getJson(url, this.context(revision))) as { sha?: unknown; siblings?: unknown };
    if (typeof info.sha !== "string" || !COMMIT_HASH.test(info.sha)) {
      const why = `${url}: the answer has no commit hash ("sha"); is ${this.settings.endpoint} a Hugging Face hub?`;
      throw new HubError("network", why, { where: url });
    }
    const commit = info.sha;
    const siblings = Array.isArray(info.siblings) ? (info.siblings as Sibling[]) : [];
    const complete = siblings.length > 0 && siblings.length < LARGE_REPO_THRESHOLD && siblings.every(hasBlobInfo);
    const files = complete ? filesFromSiblings(siblings, url) : await this.listTree(commit);
    return { commit, files };
  }

  /** Every file of `commit`, from the paginated tree API. */
  private async listTree(commit: string): Promise<Map<string, RemoteFile>> {
    const ctx = this.context(commit);
    const files = new Map<string, RemoteFile>();
    const source = `file list of ${this.repo.id}@${commit}`;
    const entries = listFiles({
      repo: { type: this.repo.type, name: this.repo.id },
      revision: commit,
      recursive: true,
      hubUrl: this.settings.endpoint,
      // Our fetch adds the token (any format, not only hf_...), the signal and
      // the timeout, and words errors with the X-Error-Code the hub sends.
      fetch: (input, init) => {
        const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
        return this.apiFetch(url, this.withAuth(url, init), ctx);
      },
    });
    for await (const entry of entries) {
      if (entry.type !== "file") continue;
      const path = checkRepoPath(entry.path, source);
      if (entry.lfs) files.set(path, lfsFile(path, entry.lfs.size, entry.lfs.oid, source));
      else files.set(path, gitFile(path, entry.size, entry.oid, source));
    }
    return files;
  }

  private withAuth(url: string, init: RequestInit | undefined): RequestInit {
    const given = Object.fromEntries(new Headers(init?.headers).entries());
    return { ...init, headers: this.headers(url, given) };
  }
}

interface Sibling {
  rfilename: string;
  size?: number;
  blobId?: string;
  lfs?: { sha256?: string; size?: number };
}

function hasBlobInfo(s: Sibling): boolean {
  return (
    typeof s.rfilename === "string" && typeof s.size === "number" && (typeof s.blobId === "string" || !!s.lfs?.sha256)
  );
}

function filesFromSiblings(siblings: Sibling[], source: string): Map<string, RemoteFile> {
  const files = new Map<string, RemoteFile>();
  for (const s of siblings) {
    const path = checkRepoPath(s.rfilename, source);
    if (s.lfs?.sha256) files.set(path, lfsFile(path, s.lfs.size ?? s.size!, s.lfs.sha256, source));
    else files.set(path, gitFile(path, s.size!, s.blobId, source));
  }
  return files;
}

// The hash becomes a file name in the cache: accept hex digests only.
function lfsFile(path: string, size: number, sha256: string, source: string): RemoteFile {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new HubError("network", `${source}: bad sha256 "${sha256}" for "${path}"`);
  return { path, size, etag: sha256, sha256 };
}

function gitFile(path: string, size: number, oid: string | undefined, source: string): RemoteFile {
  if (!oid || !/^[0-9a-f]{40}$/.test(oid)) {
    throw new HubError("network", `${source}: bad blob id "${oid}" for "${path}"`);
  }
  return { path, size, etag: oid, gitOid: oid };
}
