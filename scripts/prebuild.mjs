#!/usr/bin/env node
// `npm run prebuild`: puts the addon built by the bootstrap (against this machine's
// libtorch) into prebuilds/<platform>-<arch>/ with prebuildify, stripped, for the
// package. prebuildify's own step would run `node-gyp rebuild`, which wipes build/
// (and with it the cmake-js build tree) and moves the addon away; instead it gets a
// staged copy and `true` as its compiler. No libtorch library is bundled: users get
// libtorch from their system, and the install hook checks that the prebuild loads.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = (args, options = {}) => spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", ...options });

// The addon and the TypeScript, rebuilt only when their sources changed. `--no-build`
// (the package test, inside a test run that the bootstrap prepared) packs them as they are.
if (!process.argv.includes("--no-build") && run(["scripts/bootstrap.mjs", "--quiet"]).status !== 0) process.exit(1);

const stage = mkdtempSync(join(tmpdir(), "sdtune-prebuild-"));
mkdirSync(join(stage, "build", "Release"), { recursive: true });
copyFileSync(join(root, "build", "Release", "sdtune.node"), join(stage, "build", "Release", "sdtune.node"));

const out = join(root, "prebuilds", `${process.platform}-${process.arch}`);
rmSync(out, { recursive: true, force: true }); // no stale prebuild from another build
const prebuildify = join(root, "node_modules", "prebuildify", "bin.js");
const args = [prebuildify, "--napi", "--strip", "--tag-libc", "--name", "sdtune", "--target", process.versions.node];
const env = { ...process.env, PREBUILD_NODE_GYP: "true" };
const result = run([...args, "--cwd", stage, "--out", root], { env });
rmSync(stage, { recursive: true, force: true });
if (result.status !== 0) process.exit(result.status ?? 1);

const files = readdirSync(out).map((name) => join(out, name));
const bundled = files.filter((f) => /lib(torch|c10|caffe2|gomp|cudart|nvrtc)[^/]*\.so/.test(f));
if (bundled.length || files.length !== 1) {
  console.error(`prebuild: expected one addon and no libtorch libraries, found: ${files.join(", ")}`);
  process.exit(1);
}
console.log(`prebuild: ${files.map((f) => f.slice(root.length + 1)).join(", ")}`);
