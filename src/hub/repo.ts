// Repo ids, their cache folder names and URLs, and fnmatch-style file patterns,
// with huggingface_hub's rules (validate_repo_id, repo_folder_name, hf_hub_url,
// filter_repo_objects).
import { join } from "node:path";

import { HubError } from "./errors.js";

export type RepoType = "model" | "dataset";

export interface RepoRef {
  id: string;
  type: RepoType;
}

// huggingface_hub's REPO_ID_REGEX: [namespace/]name, word characters plus "-" and
// ".", each part starting and ending with a word character, name <= 96 characters.
const REPO_ID = /^(\b[\w\-.]+\b\/)?\b[\w\-.]{1,96}\b$/;

/** Why `id` is not a valid repo id, or undefined when it is. */
export function repoIdProblem(id: string): string | undefined {
  if (id.split("/").length > 2) return "an id has at most one '/' (namespace/name)";
  if (!REPO_ID.test(id)) {
    return "use letters, digits, '-', '_' and '.', not starting or ending with '-' or '.', name at most 96 characters";
  }
  if (id.includes("--") || id.includes("..")) return "'--' and '..' are not allowed";
  if (id.endsWith(".git")) return "an id does not end with '.git'";
  return undefined;
}

/**
 * Parses a repo id; "datasets/org/name" selects the dataset type. Throws a
 * HubError("invalid_id") that says what is wrong.
 */
export function parseRepoId(raw: string, type: RepoType = "model"): RepoRef {
  let id = raw.trim();
  if (id.startsWith("datasets/")) {
    id = id.slice("datasets/".length);
    type = "dataset";
  } else if (id.startsWith("models/")) {
    id = id.slice("models/".length);
  }
  const problem = repoIdProblem(id);
  if (problem) {
    throw new HubError(
      "invalid_id",
      `"${raw}" is not a valid Hugging Face ${type} id (${problem}); expected "org/name" such as ` +
        `"stabilityai/stable-diffusion-2-base", or a path to a local folder`,
    );
  }
  return { id, type };
}

/** models--org--name / datasets--org--name, as repo_folder_name writes it. */
export function repoFolderName(repo: RepoRef): string {
  return [`${repo.type}s`, ...repo.id.split("/")].join("--");
}

export function storageFolder(cacheDir: string, repo: RepoRef): string {
  return join(cacheDir, repoFolderName(repo));
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

const typePrefix = (repo: RepoRef): string => (repo.type === "dataset" ? "datasets/" : "");

/** {endpoint}/api/{models|datasets}/{id}/revision/{revision} */
export function revisionApiUrl(endpoint: string, repo: RepoRef, revision: string): string {
  return `${endpoint}/api/${repo.type}s/${repo.id}/revision/${encodeURIComponent(revision)}`;
}

/** {endpoint}/[datasets/]{id}/resolve/{revision}/{path}, with the path quoted per segment. */
export function resolveUrl(endpoint: string, repo: RepoRef, revision: string, path: string): string {
  const quoted = path.split("/").map(encodeURIComponent).join("/");
  return `${endpoint}/${typePrefix(repo)}${repo.id}/resolve/${encodeURIComponent(revision)}/${quoted}`;
}

/** The repo's page, for messages. */
export function repoPageUrl(endpoint: string, repo: RepoRef): string {
  return `${endpoint}/${typePrefix(repo)}${repo.id}`;
}

/**
 * A repo-relative path that is safe to join onto a cache folder: no absolute
 * paths, no "..", no empty or "." segments, no backslashes.
 */
export function checkRepoPath(path: string, source: string): string {
  const segments = path.split("/");
  if (
    !path ||
    path.startsWith("/") ||
    path.includes("\\") ||
    segments.some((s) => s === "" || s === "." || s === "..")
  ) {
    throw new HubError("bad_repo", `${source}: unsafe file path "${path}" (must be relative, without '..')`);
  }
  return path;
}

// ------------------------------------------------------------------ patterns

const GLOB_CHARS = /[*?[]/;

export const isGlob = (pattern: string): boolean => GLOB_CHARS.test(pattern);

/**
 * fnmatch semantics, as huggingface_hub's filter_repo_objects uses them: "*"
 * also matches "/", "?" one character, "[...]" a set ("[!...]" negated); a
 * pattern ending in "/" matches everything below that folder.
 */
export function globToRegExp(pattern: string): RegExp {
  const p = pattern.endsWith("/") ? `${pattern}*` : pattern;
  let out = "";
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "[") {
      const end = p.indexOf("]", i + 2);
      if (end < 0) {
        out += "\\[";
        continue;
      }
      let set = p.slice(i + 1, end);
      if (set.startsWith("!")) set = `^${set.slice(1)}`;
      out += `[${set.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else out += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${out}$`, "s");
}

export function matchesAny(path: string, patterns: RegExp[]): boolean {
  return patterns.some((re) => re.test(path));
}
