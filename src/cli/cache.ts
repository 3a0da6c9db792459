// `sdtune cache info|prune`: what the latent / text-embedding cache holds, and removing stale parts.
import { cacheInfo, formatBytes, pruneCache, resolveCacheDir, type CacheNamespaceInfo } from "../index.js";
import { parseCommandArgs, UsageError, type Command } from "./command.js";

export const command: Command = {
  help: [
    "usage: sdtune cache info [DIR] [--json]",
    "       sdtune cache prune [DIR] [--unused-days N] [--dry-run] [--json]",
    "",
    "DIR: the cache folder (default $SDTUNE_CACHE_DIR, else $XDG_CACHE_HOME/sdtune, i.e. ~/.cache/sdtune).",
    "Latents are keyed by image content, VAE weights, dtype, bucket, crop and flip; text embeddings by",
    "caption, text encoder weights, tokenizer, dtype and clip skip. A change simply misses: old entries",
    "stay until pruned.",
    "",
    "info   one line per namespace (a VAE or text encoder + dtype): entries, size, last use.",
    "prune  removes unreadable shards and temp files left by interrupted runs; with --unused-days N",
    "       also every shard no run has read or written for N days. Converted single-file checkpoints",
    "       (single-file/) go when their file is gone or changed, or (with --unused-days) unused that long.",
    "       --dry-run lists without removing.",
  ].join("\n"),
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === "info") return info(rest);
    if (sub === "prune") return prune(rest);
    throw new UsageError(sub ? `unknown subcommand "${sub}"` : "expected a subcommand: info or prune");
  },
};

function folder(positionals: string[]): string {
  if (positionals.length > 1) throw new UsageError("expected at most one cache folder");
  return resolveCacheDir(positionals[0]);
}

async function info(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { json: { type: "boolean" } });
  const dir = folder(positionals);
  const namespaces = await cacheInfo(dir);
  if (values.json) {
    console.log(JSON.stringify({ dir, namespaces }, null, 2));
    return 0;
  }
  console.log(`cache ${dir}: ${namespaces.length} namespace(s)`);
  for (const ns of namespaces) console.log(`  ${describe(ns)}`);
  return 0;
}

async function prune(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, {
    "unused-days": { type: "string" },
    "dry-run": { type: "boolean" },
    json: { type: "boolean" },
  });
  const raw = values["unused-days"] as string | undefined;
  const unusedDays = raw === undefined ? undefined : Number(raw);
  if (unusedDays !== undefined && !(Number.isFinite(unusedDays) && unusedDays >= 0)) {
    throw new UsageError(`--unused-days must be a non-negative number, got "${raw}"`);
  }
  const dir = folder(positionals);
  const dryRun = values["dry-run"] === true;
  const result = await pruneCache(dir, { unusedDays, dryRun });
  if (values.json) {
    console.log(JSON.stringify({ dir, dryRun, ...result }, null, 2));
    return 0;
  }
  for (const path of result.removed) console.log(`${dryRun ? "would remove" : "removed"} ${path}`);
  console.log(
    `${dryRun ? "would free" : "freed"} ${formatBytes(result.freedBytes)} in ${result.removed.length} file(s) under ${dir}`,
  );
  return 0;
}

function describe(ns: CacheNamespaceInfo): string {
  const d = ns.descriptor ?? {};
  const source = (d.vaeDir ?? d.textEncoderDir ?? "?") as string;
  const extra = ns.kind === "text" ? `, clip skip ${String(d.clipSkip ?? "?")}` : "";
  const used = ns.lastUsed ? ns.lastUsed.toISOString().slice(0, 10) : "never";
  const bad = ns.unreadable.length ? `, ${ns.unreadable.length} unreadable shard(s)` : "";
  return (
    `${ns.kind} ${ns.namespace}: ${ns.entries} entries in ${ns.shards} shard(s), ${formatBytes(ns.bytes)}, ` +
    `${String(d.dtype ?? "?")}${extra}, from ${source}, last used ${used}${bad}`
  );
}
