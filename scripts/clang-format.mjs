#!/usr/bin/env node
// clang-format over native/ (the npm clang-format package ships the binary).
// --check: report files that differ and exit 1; otherwise rewrite in place.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const files = [];
const visit = (dir) => {
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) visit(full);
    else if (/\.(cc|h|cu|cuh)$/.test(name)) files.push(full);
  }
};
visit(join(root, "native"));
const binary = join(root, "node_modules", "clang-format", "index.js");
const check = process.argv.includes("--check");
const args = check ? ["--dry-run", "--Werror", ...files] : ["-i", ...files];
const result = spawnSync(process.execPath, [binary, "--style=file", ...args], { cwd: root, stdio: "inherit" });
process.exit(result.status ?? 1);
