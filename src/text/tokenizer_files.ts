// Reading a CLIP tokenizer folder into one plain description: the slow files
// (vocab.json + merges.txt + special_tokens_map.json + tokenizer_config.json, what
// diffusers' CLIPTokenizer.from_pretrained reads), or tokenizer.json when the slow
// files are absent. Special/added tokens are resolved the way transformers 4.39 does.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";

import type { AddedToken } from "./added_tokens.js";
import { PY_SPACE, pySplit, pyStrip } from "./clip_normalize.js";

export interface TokenizerSpec {
  /** The folder the files were read from. */
  dir: string;
  source: "vocab.json+merges.txt" | "tokenizer.json";
  vocab: Record<string, number>;
  /** In rank order (first = applied first). */
  merges: [string, string][];
  /** Every added token (special tokens included), with its id. */
  addedTokens: AddedToken[];
  bosToken: string;
  eosToken: string;
  unkToken: string;
  padToken: string;
  maxLength: number;
  cleanUpTokenizationSpaces: boolean;
}

/** CLIPTokenizer's constructor defaults (used when the folder does not say). */
const CLIP_DEFAULTS = {
  bos_token: "<|startoftext|>",
  eos_token: "<|endoftext|>",
  unk_token: "<|endoftext|>",
  pad_token: "<|endoftext|>",
} as const;
/** The CLIP text encoder's position count; transformers' default when the config omits it is "unlimited". */
const DEFAULT_MAX_LENGTH = 77;
/** CLIPTokenizer reads at most this many merges (`split("\n")[1 : 49152 - 256 - 2 + 1]`). */
const SLOW_MERGE_LIMIT = 49152 - 256 - 2;
const SPECIAL_KEYS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const;

type Json = Record<string, unknown>;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(code === "ENOENT" ? `${path}: file not found` : `${path}: ${(error as Error).message}`);
  }
}

async function readJson(path: string): Promise<unknown> {
  const text = await readText(path);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
  }
}

async function readJsonObject(path: string): Promise<Json | undefined> {
  if (!(await exists(path))) return undefined;
  const value = await readJson(path);
  if (!isObject(value)) throw new Error(`${path}: expected a JSON object`);
  return value;
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The folder holding the tokenizer files: `dir` itself, or `dir/tokenizer` when
 * `dir` is a diffusers pipeline folder.
 */
export async function resolveTokenizerDir(dir: string): Promise<string> {
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new Error(`${dir}: tokenizer folder not found`);
  const has = async (d: string): Promise<boolean> =>
    (await exists(join(d, "vocab.json"))) || (await exists(join(d, "merges.txt"))) || exists(join(d, "tokenizer.json"));
  if (!(await has(dir)) && (await has(join(dir, "tokenizer")))) return join(dir, "tokenizer");
  return dir;
}

type BpeModel = { vocab: Record<string, number>; merges: [string, string][]; added: AddedToken[] };

export async function readTokenizerFolder(dirArg: string): Promise<TokenizerSpec> {
  const dir = await resolveTokenizerDir(dirArg);
  const { model, source } = await readBpeModel(dir);
  const configPath = join(dir, "tokenizer_config.json");
  const [config, specialMap] = await Promise.all([
    readJsonObject(configPath),
    readJsonObject(join(dir, "special_tokens_map.json")),
  ]);
  const cfg = config ?? {};

  // special_tokens_map.json overrides tokenizer_config.json (transformers' from_pretrained order).
  const special = (key: string): AddedToken | undefined => {
    const value = specialMap?.[key] ?? cfg[key] ?? CLIP_DEFAULTS[key as keyof typeof CLIP_DEFAULTS];
    return value === undefined || value === null ? undefined : parseTokenValue(value, key, dir, true);
  };
  const added = await listedAddedTokens(model, cfg, dir);
  addSpecialTokens(added, model, specialTokens(special, specialMap, cfg, dir));

  return {
    dir,
    source,
    vocab: model.vocab,
    merges: model.merges,
    addedTokens: [...added.values()],
    bosToken: special("bos_token")!.content,
    eosToken: special("eos_token")!.content,
    unkToken: special("unk_token")!.content,
    padToken: special("pad_token")!.content,
    maxLength: maxLengthOf(cfg),
    cleanUpTokenizationSpaces:
      typeof cfg.clean_up_tokenization_spaces === "boolean" ? cfg.clean_up_tokenization_spaces : true,
  };
}

/** The BPE vocabulary and merges; the slow files win when both forms exist (diffusers' CLIPTokenizer loads them). */
async function readBpeModel(dir: string): Promise<{ model: BpeModel; source: TokenizerSpec["source"] }> {
  const vocabPath = join(dir, "vocab.json");
  const mergesPath = join(dir, "merges.txt");
  const fastPath = join(dir, "tokenizer.json");
  const [hasVocab, hasMerges, hasFast] = await Promise.all([exists(vocabPath), exists(mergesPath), exists(fastPath)]);
  if (hasVocab && hasMerges) {
    const [vocab, merges] = await Promise.all([readVocab(vocabPath), readMergesTxt(mergesPath)]);
    return { model: { vocab, merges, added: [] }, source: "vocab.json+merges.txt" };
  }
  if (hasFast) return { model: await readTokenizerJson(fastPath), source: "tokenizer.json" };
  const missing = [!hasVocab && "vocab.json", !hasMerges && "merges.txt"].filter(Boolean).join(" and ");
  throw new Error(
    `${dir}: ${missing} missing: a CLIP tokenizer folder needs vocab.json and merges.txt (or tokenizer.json)`,
  );
}

/**
 * Tokens the folder lists as added (tokenizer.json added_tokens, tokenizer_config added_tokens_decoder,
 * legacy added_tokens.json), in that order.
 */
async function listedAddedTokens(model: BpeModel, cfg: Json, dir: string): Promise<Map<string, AddedToken>> {
  const configPath = join(dir, "tokenizer_config.json");
  const added = new Map<string, AddedToken>(model.added.map((t) => [t.content, t]));
  if (cfg.added_tokens_decoder !== undefined) {
    if (!isObject(cfg.added_tokens_decoder)) throw new Error(`${configPath}: "added_tokens_decoder" must be an object`);
    for (const [idText, value] of Object.entries(cfg.added_tokens_decoder)) {
      const token = parseTokenValue(value, `added_tokens_decoder.${idText}`, configPath, false);
      token.id = parseId(idText, `${configPath}: added_tokens_decoder key "${idText}"`);
      if (!added.has(token.content)) added.set(token.content, token);
    }
  }
  const legacyPath = join(dir, "added_tokens.json");
  const legacy = await readJsonObject(legacyPath);
  for (const [content, id] of Object.entries(legacy ?? {})) {
    if (added.has(content)) continue;
    added.set(content, { content, id: parseId(id, `${legacyPath}: "${content}"`), special: false, ...NO_STRIP });
  }
  return added;
}

/** The special tokens (bos, eos, unk, pad, ...) plus additional_special_tokens. */
function specialTokens(
  special: (key: string) => AddedToken | undefined,
  specialMap: Json | undefined,
  cfg: Json,
  dir: string,
): AddedToken[] {
  const specials = SPECIAL_KEYS.map((k) => special(k)).filter((t): t is AddedToken => t !== undefined);
  const extra = specialMap?.additional_special_tokens ?? cfg.additional_special_tokens ?? [];
  if (!Array.isArray(extra)) throw new Error(`${dir}: "additional_special_tokens" must be a list`);
  extra.forEach((v, i) => specials.push(parseTokenValue(v, `additional_special_tokens[${i}]`, dir, true)));
  return specials;
}

/**
 * Every special token becomes an added token too (PreTrainedTokenizer.__init__ adds
 * all_special_tokens_extended): this is why SD-2's pad token "!" is cut out of prompts.
 */
function addSpecialTokens(added: Map<string, AddedToken>, model: BpeModel, specials: AddedToken[]): void {
  // transformers gives a special token missing from the vocab the next id, len(vocab | added).
  let nextId = -1;
  const newId = (): number => {
    if (nextId < 0) nextId = new Set([...Object.keys(model.vocab), ...added.keys()]).size;
    return nextId++;
  };
  for (const token of specials) {
    const known = added.get(token.content);
    if (known) {
      known.special = true; // listed without the flag: still a special token for decode(skipSpecialTokens)
      continue;
    }
    token.id = Object.hasOwn(model.vocab, token.content) ? model.vocab[token.content]! : newId();
    added.set(token.content, token);
  }
}

function maxLengthOf(cfg: Json): number {
  const value = cfg.model_max_length;
  const valid = typeof value === "number" && Number.isInteger(value) && value >= 2 && value < 1e6;
  return valid ? value : DEFAULT_MAX_LENGTH;
}

const NO_STRIP = { lstrip: false, rstrip: false, singleWord: false } as const;

/** A token given as a string or as a serialized AddedToken ({content, lstrip, rstrip, single_word, special}). */
function parseTokenValue(value: unknown, what: string, where: string, special: boolean): AddedToken {
  if (typeof value === "string") return { content: value, id: -1, special, ...NO_STRIP };
  if (isObject(value) && typeof value.content === "string") {
    return {
      content: value.content,
      id: -1,
      special: typeof value.special === "boolean" ? value.special || special : special,
      lstrip: value.lstrip === true,
      rstrip: value.rstrip === true,
      singleWord: value.single_word === true,
    };
  }
  throw new Error(`${where}: "${what}" must be a string or an object with a "content" string`);
}

function parseId(value: unknown, what: string): number {
  const id = typeof value === "string" ? Number(value) : value;
  if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new Error(`${what}: not a token id`);
  return id;
}

async function readVocab(path: string): Promise<Record<string, number>> {
  const vocab = await readJson(path);
  return checkVocab(vocab, path);
}

function checkVocab(vocab: unknown, where: string): Record<string, number> {
  if (!isObject(vocab)) throw new Error(`${where}: the vocabulary must be a JSON object of token -> id`);
  if (Object.keys(vocab).length === 0) throw new Error(`${where}: the vocabulary is empty (no token -> id entries)`);
  const valid = (id: unknown): boolean => typeof id === "number" && Number.isInteger(id) && id >= 0;
  // Object.values is the fast scan; the slow one only runs to name the bad entry.
  if (!Object.values(vocab).every(valid)) {
    const [token, id] = Object.entries(vocab).find(([, v]) => !valid(v))!;
    throw new Error(`${where}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)} (expected an integer >= 0)`);
  }
  return vocab as Record<string, number>;
}

/**
 * merges.txt as CLIPTokenizer reads it: strip the file, skip the first line (the
 * "#version" header), keep at most 48894 merges, split each on whitespace.
 */
/** Two symbols and one space, no character that Python or JS counts as whitespace. */
const SIMPLE_MERGE = new RegExp(`^[^\\s${PY_SPACE}]+ [^\\s${PY_SPACE}]+$`, "u");

async function readMergesTxt(path: string): Promise<[string, string][]> {
  const lines = pyStrip(await readText(path))
    .split("\n")
    .slice(1, 1 + SLOW_MERGE_LIMIT);
  const merges: [string, string][] = [];
  lines.forEach((line, i) => {
    // Fast path for the usual "a b" line; anything else goes through Python's split().
    const parts = SIMPLE_MERGE.test(line) ? line.split(" ") : pySplit(line);
    if (parts.length === 0) return; // Python keeps an empty tuple that never matches: same as skipping
    if (parts.length !== 2) {
      throw new Error(`${path}: line ${i + 2} is ${JSON.stringify(line)}; expected two symbols separated by a space`);
    }
    merges.push(parts as [string, string]);
  });
  return merges;
}

/** model.vocab, model.merges and added_tokens of a tokenizers-library tokenizer.json. */
async function readTokenizerJson(
  path: string,
): Promise<{ vocab: Record<string, number>; merges: [string, string][]; added: AddedToken[] }> {
  const json = await readJson(path);
  const model = isObject(json) ? json.model : undefined;
  if (!isObject(json) || !isObject(model)) throw new Error(`${path}: expected an object with a "model" object`);
  if (model.type !== undefined && model.type !== "BPE") {
    throw new Error(`${path}: model.type is ${JSON.stringify(model.type)}; a CLIP tokenizer is "BPE"`);
  }
  if (model.end_of_word_suffix != null && model.end_of_word_suffix !== "</w>") {
    throw new Error(
      `${path}: model.end_of_word_suffix is ${JSON.stringify(model.end_of_word_suffix)}; CLIP uses "</w>"`,
    );
  }
  const vocab = checkVocab(model.vocab, `${path}: model.vocab`);
  if (!Array.isArray(model.merges)) throw new Error(`${path}: model.merges must be a list`);
  // Two encodings exist: "a b" strings (tokenizers < 0.20) and ["a", "b"] pairs.
  const merges = model.merges.map((m: unknown, i): [string, string] => {
    const parts = typeof m === "string" ? m.split(" ") : m;
    if (!Array.isArray(parts) || parts.length !== 2 || !parts.every((p) => typeof p === "string" && p !== "")) {
      throw new Error(`${path}: model.merges[${i}] is ${JSON.stringify(m)}; expected "a b" or ["a", "b"]`);
    }
    return parts as [string, string];
  });
  const addedList = json.added_tokens ?? [];
  if (!Array.isArray(addedList)) throw new Error(`${path}: added_tokens must be a list`);
  const added = addedList.map((value: unknown, i) => {
    const token = parseTokenValue(value, `added_tokens[${i}]`, path, false);
    token.id = parseId(isObject(value) ? value.id : undefined, `${path}: added_tokens[${i}].id`);
    return token;
  });
  return { vocab, merges, added };
}
