#!/usr/bin/env node
// Builds the addon with cmake-js (the one real build) into build/cmake and places
// the result at build/Release/sdtune.node, where the loader and prebuild.mjs look.
// binding.gyp calls this too, so node-gyp tooling shares the same build.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

// Module resolution, not a fixed path: in a user's project npm may hoist cmake-js
// out of sdtune's own node_modules.
function cmakeJsBin() {
  const require = createRequire(join(root, "package.json"));
  let manifest;
  try {
    manifest = require.resolve("cmake-js/package.json");
  } catch {
    console.error("sdtune: cmake-js is missing (a dependency of sdtune); run `npm install` first.");
    process.exit(1);
  }
  const { bin } = JSON.parse(readFileSync(manifest, "utf8"));
  return join(dirname(manifest), typeof bin === "string" ? bin : bin["cmake-js"]);
}

const debug = process.argv.includes("--debug");
const args = [cmakeJsBin(), "compile", "--out", join(root, "build", "cmake")];
if (debug) args.push("--debug");
const result = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
if (result.status !== 0) process.exit(result.status ?? 1);

const built = join(root, "build", "cmake", debug ? "Debug" : "Release", "sdtune.node");
const target = join(root, "build", "Release", "sdtune.node");
mkdirSync(dirname(target), { recursive: true });
// Copy then rename: a process that already loaded the old addon keeps a valid file.
copyFileSync(built, `${target}.tmp`);
renameSync(`${target}.tmp`, target);
