// resolveModel / resolveFiles / resolveDataset: a local folder, or a hub id
// resolved to a snapshot folder of the Hugging Face cache (see snapshot.ts),
// shared with Python's huggingface_hub.
import { homedir } from "node:os";
import { join, resolve as resolvePath } from "node:path";

import { isSingleFilePath, resolveSingleFile, type ResolveSingleFileOptions } from "../models/single_file/index.js";
import { isDirectory } from "./cache.js";
import { HubError } from "./errors.js";
import { DATASET_PATTERNS, planDataset, planPatterns, planPipeline, type PipelineOptions } from "./plan.js";
import { isGlob, parseRepoId, type RepoType } from "./repo.js";
import { ensureSnapshot, type ResolveOptions } from "./snapshot.js";

export type { HubProgressEvent, ResolveOptions } from "./snapshot.js";

export interface ResolveModelOptions extends ResolveOptions, PipelineOptions {
  /** For a single-file checkpoint (.safetensors in the LDM layout): how to read it (see src/models/single_file). */
  singleFile?: ResolveSingleFileOptions;
}

export interface ResolveFilesOptions extends ResolveOptions {
  /** Default "model". */
  repoType?: RepoType;
  /** Patterns fetched when the repo has matching files (each of `patterns` must match). */
  optional?: readonly string[];
}

export interface ResolveDatasetOptions extends ResolveOptions {
  /** Data files to fetch (fnmatch). Default DATASET_PATTERNS. Scripts (*.py) and pickles are never fetched. */
  allowPatterns?: readonly string[];
}

/** A transformers CLIP checkpoint (e.g. openai/clip-vit-large-patch14): resolveFiles(id, CLIP_FILES.patterns, { optional: CLIP_FILES.optional }). */
export const CLIP_FILES = {
  patterns: [
    "config.json",
    "preprocessor_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "model.safetensors",
  ],
  optional: ["special_tokens_map.json", "tokenizer.json"],
} as const;

/**
 * A diffusers pipeline folder: `pathOrId` itself when it is a local folder;
 * for a hub id ("org/name") the cache snapshot, holding model_index.json and,
 * per component, its configs, tokenizer files and safetensors weights (of
 * `variant` where the component has them). Pickles are refused. A single-file checkpoint
 * (model.safetensors, as AUTOMATIC1111 and ComfyUI keep them) resolves to its diffusers
 * conversion in the sdtune cache.
 */
export async function resolveModel(pathOrId: string, options: ResolveModelOptions = {}): Promise<string> {
  if (isSingleFilePath(pathOrId)) return resolveSingleFile(expandHome(pathOrId), options.singleFile);
  const local = await localFolder(pathOrId);
  if (local) return local;
  const repo = parseRepoId(pathOrId, "model");
  const pipeline: PipelineOptions = {};
  if (options.variant !== undefined) pipeline.variant = options.variant;
  if (options.components !== undefined) pipeline.components = options.components;
  if (options.allowPatterns !== undefined) pipeline.allowPatterns = options.allowPatterns;
  const needsListing = (options.allowPatterns ?? []).some(isGlob);
  return ensureSnapshot(repo, options, needsListing, (fs) => planPipeline(fs, pipeline, repo.id));
}

/**
 * The cache snapshot of any repo, holding the files that match `patterns`
 * (fnmatch; each must match) and `options.optional`. Pickles are never fetched.
 */
export async function resolveFiles(
  id: string,
  patterns: readonly string[],
  options: ResolveFilesOptions = {},
): Promise<string> {
  const repo = parseRepoId(id, options.repoType ?? "model");
  const optional = [...(options.optional ?? [])];
  const needsListing = [...patterns, ...optional].some(isGlob);
  return ensureSnapshot(repo, options, needsListing, async (fs) => planPatterns(fs, [...patterns], optional, repo.id));
}

/**
 * A dataset folder: `pathOrId` itself when it is a local folder; for a hub id
 * the cache snapshot (datasets--org--name) with its data files: parquet shards,
 * metadata.jsonl / .csv, images, caption .txt files, README.md.
 */
export async function resolveDataset(pathOrId: string, options: ResolveDatasetOptions = {}): Promise<string> {
  const local = await localFolder(pathOrId);
  if (local) return local;
  const repo = parseRepoId(pathOrId, "dataset");
  const patterns = [...(options.allowPatterns ?? DATASET_PATTERNS)];
  return ensureSnapshot({ ...repo, type: "dataset" }, options, true, async (fs) => planDataset(fs, patterns, repo.id));
}

/** The absolute path when `pathOrId` is an existing folder; an error when it looks like a path but is none. */
async function localFolder(pathOrId: string): Promise<string | undefined> {
  if (typeof pathOrId !== "string" || pathOrId.trim() === "") {
    throw new HubError(
      "invalid_id",
      `expected a local folder or a hub id such as "org/name", got ${JSON.stringify(pathOrId)}`,
    );
  }
  pathOrId = expandHome(pathOrId);
  if (await isDirectory(pathOrId)) return resolvePath(pathOrId);
  const pathLike =
    /^(\.{1,2}|~)?[/\\]/.test(pathOrId) ||
    /^\.{1,2}$/.test(pathOrId) ||
    pathOrId.includes("\\") ||
    pathOrId.split("/").length > 2;
  if (pathLike) {
    const full = resolvePath(pathOrId);
    throw new HubError("invalid_id", `local folder ${full} does not exist (and "${pathOrId}" is not a hub id)`, {
      where: full,
    });
  }
  return undefined;
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}
