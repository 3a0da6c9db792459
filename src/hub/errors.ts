// Errors of hub resolution. Every message says what failed (repo, revision,
// file, URL or path) and what to do about it.

export type HubErrorCode =
  | "invalid_id" // not a local folder and not a valid repo id
  | "gated" // 401/403: gated or private repo, or bad token
  | "repo_not_found"
  | "revision_not_found"
  | "file_not_found" // a file the repo should have (e.g. a shard named in an index)
  | "not_cached" // offline and the cache lacks something
  | "pickle_only" // weights exist only as pickles
  | "bad_repo" // the repo's contents do not make sense (no model_index.json, bad index...)
  | "network" // connection failure, timeout, unexpected HTTP status
  | "integrity" // size / hash mismatch after download
  | "disk" // file system error in the cache
  | "aborted"; // cancelled through the AbortSignal

export class HubError extends Error {
  readonly code: HubErrorCode;
  /** The URL or the local path concerned, when there is one. */
  readonly where?: string;
  /** HTTP status, for errors that came from an answer. */
  readonly status?: number;

  constructor(code: HubErrorCode, message: string, extra: { where?: string; status?: number; cause?: unknown } = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = code === "aborted" ? "AbortError" : "HubError";
    this.code = code;
    if (extra.where !== undefined) this.where = extra.where;
    if (extra.status !== undefined) this.status = extra.status;
  }
}

/** What a request was about, to word its errors. */
export interface RequestContext {
  endpoint: string;
  repoId: string;
  /** "model" | "dataset" */
  repoType: string;
  revision?: string;
  file?: string;
  hadToken: boolean;
}

function repoUrl(ctx: RequestContext): string {
  return `${ctx.endpoint}/${ctx.repoType === "dataset" ? "datasets/" : ""}${ctx.repoId}`;
}

/**
 * The error for a non-2xx hub answer. The hub says which thing was missing in
 * the X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound,
 * GatedRepo), as huggingface_hub's hf_raise_for_status reads it.
 */
export function httpError(ctx: RequestContext, url: string, status: number, headers: Headers, body: string): HubError {
  const code = headers.get("x-error-code") ?? "";
  const serverSays = (headers.get("x-error-message") ?? messageFromBody(body)).slice(0, 300);
  const detail = serverSays ? ` (hub says: ${serverSays})` : "";
  const what = `${ctx.repoType === "dataset" ? "dataset" : "repo"} ${ctx.repoId}`;
  if (status === 401 || status === 403 || code === "GatedRepo") {
    const tokenHint = ctx.hadToken
      ? "check that your token (HF_TOKEN, or the token option) has read access to it"
      : "set HF_TOKEN (or pass token)";
    const notFoundHint =
      code === "RepoNotFound"
        ? "; the hub answers the same way for a repo that does not exist, so check the id too"
        : "";
    return new HubError(
      "gated",
      `${what} is gated or private: accept its license at ${repoUrl(ctx)} and ${tokenHint}${notFoundHint}. ` +
        `HTTP ${status} from ${url}${detail}`,
      { where: url, status },
    );
  }
  if (status === 404 || code === "RepoNotFound" || code === "RevisionNotFound" || code === "EntryNotFound") {
    if (code === "RevisionNotFound") {
      return new HubError(
        "revision_not_found",
        `revision "${ctx.revision}" not found in ${what}: use a branch, tag or commit hash that exists (see ${repoUrl(ctx)}/tree/main). HTTP ${status} from ${url}`,
        { where: url, status },
      );
    }
    if (code === "EntryNotFound" || (code === "" && ctx.file !== undefined)) {
      return new HubError(
        "file_not_found",
        `file "${ctx.file}" not found in ${what} at revision ${ctx.revision}. HTTP ${status} from ${url}`,
        { where: url, status },
      );
    }
    return new HubError(
      "repo_not_found",
      `${what} not found on ${ctx.endpoint}: check the id (or, for a private repo, ${ctx.hadToken ? "your token's access" : "set HF_TOKEN"}). HTTP ${status} from ${url}`,
      { where: url, status },
    );
  }
  return new HubError("network", `unexpected HTTP ${status} from ${url}${detail}`, { where: url, status });
}

function messageFromBody(body: string): string {
  try {
    const json = JSON.parse(body) as { error?: unknown; message?: unknown };
    const text = json.error ?? json.message;
    return typeof text === "string" ? text : "";
  } catch {
    return body.trim().split("\n")[0] ?? "";
  }
}

/** A failure to reach a URL at all (DNS, refused connection, reset, timeout). */
export function networkError(url: string, error: unknown, what = "request"): HubError {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const reason = cause?.code ?? cause?.message ?? (error as Error).message ?? String(error);
  return new HubError(
    "network",
    `${what} to ${url} failed (${reason}). Check your connection, HF_ENDPOINT and proxy settings, or use offline mode (HF_HUB_OFFLINE=1) with a filled cache`,
    { where: url, cause: error },
  );
}

/** A file system failure in the cache, naming the path. */
export function diskError(path: string, error: unknown, doing: string): HubError {
  const err = error as NodeJS.ErrnoException;
  const hint =
    err.code === "ENOSPC"
      ? ": the disk is full; free space or point HF_HUB_CACHE (or cacheDir) elsewhere"
      : err.code === "EACCES" || err.code === "EPERM" || err.code === "EROFS"
        ? ": no write permission; fix the permissions or point HF_HUB_CACHE (or cacheDir) elsewhere"
        : "";
  return new HubError("disk", `${doing} ${path} failed (${err.code ?? err.message})${hint}`, {
    where: path,
    cause: error,
  });
}

export function abortError(what: string, signal: AbortSignal | undefined): HubError {
  const reason = signal?.reason;
  const why = reason instanceof Error && reason.name !== "AbortError" ? `: ${reason.message}` : "";
  return new HubError("aborted", `${what} cancelled${why}`, { cause: reason });
}

/** Wraps a file system call so that its error names the path. */
export async function onDisk<T>(path: string, doing: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (error) {
    if (error instanceof HubError) throw error;
    throw diskError(path, error, doing);
  }
}
