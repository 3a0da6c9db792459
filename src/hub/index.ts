// Hub ids -> local files through the Hugging Face cache (see resolve.ts).
export { resolveDataset, resolveFiles, resolveModel, CLIP_FILES } from "./resolve.js";
export type {
  HubProgressEvent,
  ResolveDatasetOptions,
  ResolveFilesOptions,
  ResolveModelOptions,
  ResolveOptions,
} from "./resolve.js";
export { DATASET_PATTERNS, SKIPPED_COMPONENTS } from "./plan.js";
export { hfHome, hubCacheDir, hubSettings, DEFAULT_ENDPOINT } from "./env.js";
export type { HubAccessOptions, HubSettings } from "./env.js";
export { HubError } from "./errors.js";
export type { HubErrorCode } from "./errors.js";
export { parseRepoId, repoFolderName } from "./repo.js";
export type { RepoRef, RepoType } from "./repo.js";
