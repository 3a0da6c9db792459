#!/usr/bin/env node
// npm's install hook. In a published package: use a prebuild when one matches,
// otherwise build the addon from source. In a git checkout `npm run bootstrap`
// owns the build, so this does nothing.
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (existsSync(join(root, ".git"))) process.exit(0);
const prebuilds = join(root, "prebuilds", `${process.platform}-${process.arch}`);
if (existsSync(prebuilds) && readdirSync(prebuilds).some((f) => f.endsWith(".node"))) process.exit(0);
if (existsSync(join(root, "build", "Release", "sdtune.node"))) process.exit(0);
const result = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs")], { stdio: "inherit" });
if (result.status !== 0) {
  console.error(
    "sdtune: building the native addon failed. It needs libtorch, cmake and a C++17 compiler:\n" +
      "  Debian/Ubuntu: sudo apt-get install -y libtorch-dev libgloo-dev libopenblas0-pthread cmake g++\n" +
      "  elsewhere: set LIBTORCH to an unpacked libtorch folder, then `npm rebuild sdtune`.",
  );
}
process.exit(result.status ?? 1);
