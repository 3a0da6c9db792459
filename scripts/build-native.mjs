#!/usr/bin/env node
// Builds the addon with cmake-js (the one real build) into build/cmake and places
// the result at build/Release/sdtune.node, where the loader and prebuildify look.
// binding.gyp calls this too, so node-gyp and prebuildify share the same build.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, renameSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cmakeJs = join(root, "node_modules", "cmake-js", "bin", "cmake-js");
if (!existsSync(cmakeJs)) {
  console.error("sdtune: cmake-js is missing; run `npm install` first (or `npm run bootstrap`).");
  process.exit(1);
}
const debug = process.argv.includes("--debug");
const args = [cmakeJs, "compile", "--out", join(root, "build", "cmake")];
if (debug) args.push("--debug");
const result = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
if (result.status !== 0) process.exit(result.status ?? 1);

const built = join(root, "build", "cmake", debug ? "Debug" : "Release", "sdtune.node");
const target = join(root, "build", "Release", "sdtune.node");
mkdirSync(dirname(target), { recursive: true });
// Copy then rename: a process that already loaded the old addon keeps a valid file.
copyFileSync(built, `${target}.tmp`);
renameSync(`${target}.tmp`, target);
