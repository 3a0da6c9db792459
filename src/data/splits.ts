// Split inference as HF `datasets` does it for a folder without a config
// (datasets/data_files.py): first "data/{split}-NNNNN-of-NNNNN*" shards, then
// split keywords in folder names, then in file names, else everything is "train".
// Paths are POSIX and relative to the dataset root.

const KEYWORDS: Record<string, string[]> = {
  train: ["train", "training"],
  validation: ["validation", "valid", "dev", "val"],
  test: ["test", "testing", "eval", "evaluation"],
};
const DEFAULT_ORDER = ["train", "validation", "test"];
/** Characters that delimit a keyword: "-._ 0-9" in datasets' patterns. */
const SEP = "[-._ 0-9]";
const SHARDED = /^data\/([^/]+?)-\d{5}-of-\d{5}[^/]*\.[^/]+$/;
const SPLIT_NAME = /^\w+(\.\w+)*$/;

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A folder name matches when the keyword is the whole name or is delimited by separators. */
const dirMatchers = Object.fromEntries(
  Object.entries(KEYWORDS).map(([split, words]) => [
    split,
    words.map((w) => new RegExp(`^(.*${SEP})?${escape(w)}(${SEP}.*)?$`)),
  ]),
);
/** A file name matches when the keyword starts it or follows a separator, and a separator follows. */
const fileMatchers = Object.fromEntries(
  Object.entries(KEYWORDS).map(([split, words]) => [
    split,
    words.map((w) => new RegExp(`^(.*${SEP})?${escape(w)}${SEP}.*$`)),
  ]),
);

export interface SplitInference {
  /** split name -> files in it (a file may be in several, as with datasets' globs). */
  splits: Map<string, string[]>;
  /** How the splits were found, for error messages. */
  rule: "sharded" | "folder-names" | "file-names" | "all-train";
}

/** Groups `files` (relative POSIX paths) into splits. */
export function inferSplits(files: readonly string[]): SplitInference {
  const sharded = new Map<string, string[]>();
  for (const f of files) {
    const m = SHARDED.exec(f);
    if (m && SPLIT_NAME.test(m[1]!)) push(sharded, m[1]!, f);
  }
  if (sharded.size > 0) {
    // Only the sharded files belong to the dataset in this layout.
    return { splits: ordered(sharded), rule: "sharded" };
  }

  const byDir = new Map<string, string[]>();
  for (const f of files) {
    const dirs = f.split("/").slice(0, -1);
    for (const [split, matchers] of Object.entries(dirMatchers)) {
      if (dirs.some((d) => matchers.some((re) => re.test(d)))) push(byDir, split, f);
    }
  }
  if (byDir.size > 0) return { splits: ordered(byDir), rule: "folder-names" };

  const byName = new Map<string, string[]>();
  for (const f of files) {
    const name = f.slice(f.lastIndexOf("/") + 1);
    for (const [split, matchers] of Object.entries(fileMatchers)) {
      if (matchers.some((re) => re.test(name))) push(byName, split, f);
    }
  }
  if (byName.size > 0) return { splits: ordered(byName), rule: "file-names" };

  return { splits: new Map([["train", [...files]]]), rule: "all-train" };
}

function push(map: Map<string, string[]>, key: string, value: string): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** train, validation, test first, then other names sorted (datasets' order). */
function ordered(map: Map<string, string[]>): Map<string, string[]> {
  const names = [
    ...DEFAULT_ORDER.filter((s) => map.has(s)),
    ...[...map.keys()].filter((s) => !DEFAULT_ORDER.includes(s)).sort(),
  ];
  return new Map(names.map((n) => [n, map.get(n)!]));
}
