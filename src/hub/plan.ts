// Which files a request needs. The same planners run against the hub's file
// list ("remote": what to download) and against a cached snapshot ("local":
// is everything there, so that no request is needed?).
//
// A Stable Diffusion pipeline needs model_index.json and, per component, its
// config (config.json / scheduler_config.json / preprocessor_config.json), its
// tokenizer files, and the safetensors weights of the chosen variant (one file,
// or an index plus its shards). Pickled weights are never fetched. With a
// variant, a component that has no weights of that variant uses its plain ones,
// as diffusers' from_pretrained does.
import { CONVERT_FILE, CONVERT_MODEL, PICKLE, pickleRefusal } from "../io/pickle.js";
import { WEIGHT_STEMS, findWeightFile } from "../models/files.js";
import { globToRegExp, isGlob, matchesAny } from "./repo.js";

/** The files of one commit, remote or cached. */
export interface FileSet {
  readonly kind: "remote" | "local";
  has(path: string): boolean;
  paths(): Iterable<string>;
  /** Parsed JSON of a file that `has`; the remote set downloads it into the cache first. */
  readJson(path: string): Promise<unknown>;
  /** True when the cache recorded that the file does not exist (.no_exist). */
  knownAbsent(path: string): boolean;
}

export interface Problem {
  /** "pickle_only" and "bad_repo" are errors of the repo; "missing" just means not (yet) cached. */
  code: "missing" | "pickle_only" | "bad_repo";
  message: string;
}

export interface Plan {
  files: Set<string>;
  problems: Problem[];
  /** Optional files the repo does not have (recorded in .no_exist after a remote plan). */
  absent: string[];
}

const newPlan = (): Plan => ({ files: new Set(), problems: [], absent: [] });

/** In a cached snapshot every shortfall is just "not cached yet". */
function problem(fs: FileSet, code: Problem["code"], message: string, missing: string): Problem {
  return fs.kind === "local" ? { code: "missing", message: missing } : { code, message };
}

const childFiles = (fs: FileSet, folder: string): string[] =>
  [...fs.paths()].filter((p) => p.startsWith(`${folder}/`) && !p.slice(folder.length + 1).includes("/"));

// ------------------------------------------------------------------ pipeline

export interface PipelineOptions {
  variant?: string;
  /** model_index.json entries to fetch; default: all but the ones in SKIPPED_COMPONENTS. */
  components?: string[];
  /** Extra files to fetch (fnmatch patterns); pickles are never fetched. */
  allowPatterns?: string[];
}

/** Not needed to generate or fine-tune; fetched only when named in `components`. */
export const SKIPPED_COMPONENTS = ["safety_checker", "feature_extractor", "image_encoder"];

const CONFIG_FILES = ["config.json", "scheduler_config.json", "preprocessor_config.json"];
const TOKENIZER_FILES = [
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "tokenizer.json",
  "added_tokens.json",
  "spiece.model",
  "tokenizer.model",
];

export async function planPipeline(fs: FileSet, options: PipelineOptions, repoName: string): Promise<Plan> {
  const plan = newPlan();
  if (!fs.has("model_index.json")) {
    if (options.allowPatterns?.length) {
      addPatterns(fs, plan, options.allowPatterns, [], repoName);
      return plan;
    }
    plan.problems.push(
      problem(
        fs,
        "bad_repo",
        `${repoName} has no model_index.json, so it is not a diffusers pipeline; use resolveFiles() for other repos, or pass allowPatterns`,
        "model_index.json",
      ),
    );
    return plan;
  }
  plan.files.add("model_index.json");
  const index = await fs.readJson("model_index.json");
  if (!index || typeof index !== "object" || Array.isArray(index)) {
    plan.problems.push({ code: "bad_repo", message: `${repoName}: model_index.json is not a JSON object` });
    return plan;
  }
  // Components are entries ["library", "ClassName"]; [null, null] means absent.
  const available = Object.entries(index as Record<string, unknown>)
    .filter(([key, v]) => !key.startsWith("_") && Array.isArray(v) && v.length === 2 && v[0] !== null && v[1] !== null)
    .map(([key]) => key);
  let wanted = available.filter((c) => !SKIPPED_COMPONENTS.includes(c));
  if (options.components) {
    const unknown = options.components.filter((c) => !available.includes(c));
    if (unknown.length) {
      plan.problems.push({
        code: "bad_repo",
        message: `${repoName}: no component ${unknown.map((c) => `"${c}"`).join(", ")} in model_index.json (it has ${available.join(", ")})`,
      });
      return plan;
    }
    wanted = options.components;
  }
  for (const component of wanted) await planComponent(fs, plan, component, options.variant, repoName);
  if (options.allowPatterns?.length) addPatterns(fs, plan, options.allowPatterns, [], repoName);
  return plan;
}

async function planComponent(
  fs: FileSet,
  plan: Plan,
  folder: string,
  variant: string | undefined,
  repoName: string,
): Promise<void> {
  const files = childFiles(fs, folder);
  const names = new Set(files.map((f) => f.slice(folder.length + 1)));
  const configs = CONFIG_FILES.filter((n) => names.has(n));
  const tokenizer = TOKENIZER_FILES.filter((n) => names.has(n));
  for (const name of [...configs, ...tokenizer]) plan.files.add(`${folder}/${name}`);
  if (configs.length === 0 && tokenizer.length === 0) {
    plan.problems.push(
      problem(
        fs,
        "bad_repo",
        `${repoName}: component "${folder}" is listed in model_index.json but ${folder}/ has no config.json, scheduler_config.json or tokenizer files`,
        `${folder}/config.json`,
      ),
    );
    return;
  }
  if (tokenizer.length > 0) {
    const vocab =
      (names.has("vocab.json") && names.has("merges.txt")) ||
      tokenizer.some((t) => /^(tokenizer\.json|spiece\.model|tokenizer\.model)$/.test(t));
    if (!vocab) {
      plan.problems.push(
        problem(
          fs,
          "bad_repo",
          `${repoName}: ${folder}/ has no vocab.json + merges.txt (nor tokenizer.json)`,
          `${folder}/vocab.json + ${folder}/merges.txt`,
        ),
      );
    }
  }
  const hasWeightFiles = [...names].some((n) => n.endsWith(".safetensors") || PICKLE.test(n));
  if (names.has("config.json") || hasWeightFiles) await planWeights(fs, plan, folder, names, variant, repoName);
}

/**
 * The weight files of one model folder: the variant's if it has them, else the
 * plain ones; a single file, or an index and its shards. That a folder has no
 * variant weights is recorded in .no_exist, so that a cached snapshot with plain
 * weights only counts as complete for a variant request when the repo has none.
 */
async function planWeights(
  fs: FileSet,
  plan: Plan,
  folder: string,
  names: Set<string>,
  variant: string | undefined,
  repoName: string,
): Promise<void> {
  let weights = variant ? findWeightFile(names, variant) : undefined;
  if (!weights) {
    if (variant) {
      const markers = WEIGHT_STEMS.map((stem) => `${folder}/${stem}.${variant}.safetensors`);
      if (fs.kind === "remote") plan.absent.push(...markers);
      else if (!markers.every((m) => fs.knownAbsent(m))) {
        plan.problems.push({ code: "missing", message: `${markers[0]} (${variant} weights of ${folder})` });
        return;
      }
    }
    weights = findWeightFile(names, undefined);
  }
  if (weights?.endsWith(".json")) return planShards(fs, plan, `${folder}/${weights}`, repoName);
  if (weights) {
    plan.files.add(`${folder}/${weights}`);
    return;
  }
  const variantPart = variant ? `.${variant}` : "";
  const expected = WEIGHT_STEMS.map((stem) => `${folder}/${stem}${variantPart}.safetensors`).join(" or ");
  const pickles = [...names].filter((n) => PICKLE.test(n)).map((n) => `${folder}/${n}`);
  if (pickles.length) {
    plan.problems.push(
      problem(
        fs,
        "pickle_only",
        pickleRefusal(
          `${repoName}: ${folder}/ has only pickled weights (${pickles.join(", ")})`,
          "Use a revision with safetensors weights (the hub's safetensors conversion bot often opened a pull request: " +
            `try revision "refs/pr/<n>"), or convert once with Python: ${CONVERT_MODEL} and load the folder \`out\``,
        ),
        `${expected} (the cache has only pickled weights)`,
      ),
    );
    return;
  }
  plan.problems.push(
    problem(
      fs,
      "bad_repo",
      `${repoName}: ${folder}/ has a config.json but no weights (expected ${expected})`,
      expected,
    ),
  );
}

async function planShards(fs: FileSet, plan: Plan, indexPath: string, repoName: string): Promise<void> {
  plan.files.add(indexPath);
  const index = (await fs.readJson(indexPath)) as { weight_map?: unknown } | null;
  const map = index?.weight_map;
  if (!map || typeof map !== "object") {
    plan.problems.push({ code: "bad_repo", message: `${repoName}: ${indexPath} has no "weight_map" object` });
    return;
  }
  const folder = indexPath.slice(0, indexPath.lastIndexOf("/"));
  for (const shard of new Set(Object.values(map as Record<string, unknown>))) {
    if (typeof shard !== "string" || shard.includes("/") || !shard.endsWith(".safetensors")) {
      plan.problems.push({
        code: "bad_repo",
        message: `${repoName}: ${indexPath} names shard ${JSON.stringify(shard)}; expected a .safetensors file in the same folder`,
      });
      continue;
    }
    const path = `${folder}/${shard}`;
    if (fs.has(path)) plan.files.add(path);
    else
      plan.problems.push(
        problem(fs, "bad_repo", `${repoName}: ${indexPath} names shard ${shard}, which the repo does not have`, path),
      );
  }
}

// ------------------------------------------------------------------ patterns

/**
 * Files matching `required` (each pattern must match something) and
 * `optional` patterns (fetched when present). Pickles are never matched.
 */
export function planPatterns(fs: FileSet, required: string[], optional: string[], repoName: string): Plan {
  const plan = newPlan();
  addPatterns(fs, plan, required, optional, repoName);
  return plan;
}

function addPatterns(fs: FileSet, plan: Plan, required: string[], optional: string[], repoName: string): void {
  const all = [...fs.paths()];
  const safe = all.filter((p) => !PICKLE.test(p));
  for (const [pattern, isRequired] of [
    ...required.map((p) => [p, true] as const),
    ...optional.map((p) => [p, false] as const),
  ]) {
    const re = globToRegExp(pattern);
    const matches = safe.filter((p) => re.test(p));
    matches.forEach((p) => plan.files.add(p));
    if (matches.length > 0) continue;
    if (!isRequired) {
      // A literal optional file: remember remotely that it is absent; locally accept a recorded absence.
      if (!isGlob(pattern)) {
        if (fs.kind === "remote") plan.absent.push(pattern);
        else if (!fs.knownAbsent(pattern)) plan.problems.push({ code: "missing", message: pattern });
      }
      continue;
    }
    const pickles = all.filter((p) => PICKLE.test(p) && matchesAny(p.replace(PICKLE, ".safetensors"), [re]));
    if (pickles.length) {
      plan.problems.push(
        problem(
          fs,
          "pickle_only",
          pickleRefusal(
            `${repoName}: "${pattern}" exists only as pickled weights (${pickles.join(", ")})`,
            `Use a revision with safetensors weights, or convert once with Python: ${CONVERT_FILE}`,
          ),
          `${pattern} (the cache has only pickled weights)`,
        ),
      );
    } else {
      plan.problems.push(problem(fs, "bad_repo", `${repoName}: no file matches "${pattern}"`, pattern));
    }
  }
}

// ------------------------------------------------------------------ datasets

/** What a training dataset is made of: tables, captions, metadata and images. Never scripts or pickles. */
export const DATASET_PATTERNS = [
  "*.parquet",
  "*.arrow",
  "*.jsonl",
  "*.json",
  "*.csv",
  "*.tsv",
  "*.txt",
  "*.png",
  "*.jpg",
  "*.jpeg",
  "*.webp",
  "*.bmp",
  "*.gif",
  "*.tif",
  "*.tiff",
  "README.md",
];

export function planDataset(fs: FileSet, patterns: string[], repoName: string): Plan {
  const plan = newPlan();
  const res = patterns.map(globToRegExp);
  for (const path of fs.paths()) {
    if (PICKLE.test(path) || path.endsWith(".py") || path === ".gitattributes") continue;
    if (matchesAny(path, res)) plan.files.add(path);
  }
  if (plan.files.size === 0) {
    plan.problems.push(
      problem(fs, "bad_repo", `${repoName}: no data files match ${patterns.join(", ")}`, patterns.join(", ")),
    );
  }
  return plan;
}
