#!/usr/bin/env node
// `npm run prebuild`: packs the built addon with prebuildify (through the
// binding.gyp shim, which hands the build to cmake-js), then checks that no
// libtorch library slipped into prebuilds/: users get libtorch from their system.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const prebuildify = join(root, "node_modules", "prebuildify", "bin.js");
const result = spawnSync(
  process.execPath,
  [prebuildify, "--napi", "--strip", "--target", process.versions.node, "--name", "sdtune"],
  {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, npm_config_nodedir: process.env.npm_config_nodedir ?? "/usr" },
  },
);
if (result.status !== 0) process.exit(result.status ?? 1);

const files = [];
const visit = (dir) => {
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) visit(full);
    else files.push(full);
  }
};
visit(join(root, "prebuilds"));
const bundled = files.filter((f) => /lib(torch|c10|caffe2|gomp|cudart|nvrtc)[^/]*\.so/.test(f));
if (bundled.length) {
  console.error(`prebuild: libtorch libraries must not be bundled, found: ${bundled.join(", ")}`);
  process.exit(1);
}
console.log(`prebuild: ${files.map((f) => f.slice(root.length + 1)).join(", ")}`);
