#!/usr/bin/env node
// One-step setup, run by both README commands: system packages (Debian/Ubuntu;
// with --test also Chromium for the report test), npm dependencies, the native
// addon and the TypeScript. Idempotent, and quick when there is nothing to do
// (it compares timestamps, it does not rebuild).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { debianMissing, have } from "./native-requirements.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const quiet = process.argv.includes("--quiet");
const say = (msg) => quiet || console.log(`[bootstrap] ${msg}`);

// Packages the build needs, with what each is for.
const buildPackages = [
  "libtorch-dev", // libtorch headers and libraries (CPU)
  "libgloo-dev", // headers that libtorch's CMake package requires; c10d's ProcessGroupGloo (data-parallel training)
  "libopenblas0-pthread", // a fast BLAS; the reference BLAS is ~20x slower
  "libjpeg-dev", // libjpeg-turbo: the data pipeline decodes JPEGs at reduced DCT scale (optional; sharp otherwise)
  "cmake",
  "g++",
];
// `--test` (npm test): the eval report test drives headless Chromium through playwright-core.
const wantsBrowser = process.argv.includes("--test") && !process.env.SDTUNE_CHROMIUM;

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, {
    stdio: quiet ? ["ignore", "ignore", "inherit"] : "inherit",
    cwd: root,
    ...options,
  });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function ensureSystemPackages() {
  const ownTorch = Boolean(process.env.LIBTORCH || process.env.Torch_DIR);
  if (ownTorch) say("using libtorch from LIBTORCH/Torch_DIR");
  const browser = wantsBrowser && !have("chromium") ? ["chromium"] : [];
  if (!have("dpkg-query") || !have("apt-get")) {
    const needs = [
      !ownTorch && !(have("cmake") && have("g++")) && "cmake, a C++17 compiler and libtorch (LIBTORCH)",
      browser.length > 0 && "chromium (or SDTUNE_CHROMIUM)",
    ];
    if (needs.some(Boolean)) {
      console.error(`[bootstrap] sdtune needs ${needs.filter(Boolean).join(" and ")}; install them.`);
      process.exit(1);
    }
    return;
  }
  const missing = [...(ownTorch ? [] : debianMissing(buildPackages)), ...browser];
  if (missing.length === 0) return;
  const command = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  if (process.getuid?.() !== 0) {
    console.error(`[bootstrap] missing system packages: ${missing.join(", ")}. Run:\n  sudo sh -c '${command}'`);
    process.exit(1);
  }
  say(`installing ${missing.join(", ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  if (run("sh", ["-c", command], { env }) !== 0) {
    console.error(`[bootstrap] apt-get failed; run it by hand:\n  ${command}`);
    process.exit(1);
  }
}

function newestMtime(paths) {
  let newest = 0;
  const visit = (p) => {
    if (!existsSync(p)) return;
    const st = statSync(p);
    if (st.isDirectory()) for (const entry of readdirSync(p)) visit(join(p, entry));
    else newest = Math.max(newest, st.mtimeMs);
  };
  paths.forEach((p) => visit(join(root, p)));
  return newest;
}

function mtime(path) {
  const full = join(root, path);
  return existsSync(full) ? statSync(full).mtimeMs : 0;
}

function ensureNpmDependencies() {
  const stamp = "node_modules/.package-lock.json";
  if (
    existsSync(join(root, stamp)) &&
    mtime(stamp) >= mtime("package-lock.json") &&
    mtime(stamp) >= mtime("package.json")
  ) {
    return;
  }
  say("installing npm dependencies");
  const args = existsSync(join(root, "package-lock.json")) ? ["ci", "--no-audit", "--no-fund"] : ["install"];
  if (run("npm", args) !== 0) process.exit(1);
}

/**
 * A stamp dated when a successful build *started*: a source edited while the build ran is newer
 * than it, so the next bootstrap builds again (dating it at the end would call that edit built).
 */
function markBuilt(stamp, startedMs) {
  const full = join(root, stamp);
  writeFileSync(full, "");
  utimesSync(full, startedMs / 1000, startedMs / 1000);
}

function ensureAddon() {
  const addon = "build/Release/sdtune.node";
  const stamp = "build/.native-stamp";
  const sources = newestMtime(["native", "CMakeLists.txt"]);
  if (existsSync(join(root, addon)) && mtime(stamp) > sources) return;
  say("building the native addon (cmake-js)");
  const started = Date.now();
  if (run(process.execPath, ["scripts/build-native.mjs"]) !== 0) process.exit(1);
  markBuilt(stamp, started);
}

function ensureTypeScript() {
  const stamp = "dist/.stamp";
  if (mtime(stamp) > newestMtime(["src", "tsconfig.json", "tsconfig.build.json"])) return;
  say("compiling TypeScript");
  const started = Date.now();
  if (run(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"]) !== 0) process.exit(1);
  markBuilt(stamp, started);
}

ensureSystemPackages();
ensureNpmDependencies();
ensureAddon();
ensureTypeScript();
