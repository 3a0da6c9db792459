// The package as a user gets it: `npm pack` of this checkout (with its prebuilt addon),
// installed into a project outside the repo with npm's cache only (no network, no
// access to the repo's node_modules).
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, delimiter, join } from "node:path";

import { repoRoot } from "./fixtures.js";

/**
 * The environment of a user's shell: without what `npm test` adds (npm_* settings, the
 * repo's node_modules/.bin on PATH), so nothing of this checkout leaks into the project.
 */
export function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(key) || key === "INIT_CWD" || key === "NODE_OPTIONS" || key.startsWith("VITEST")) continue;
    env[key] = value;
  }
  env.PATH = (process.env.PATH ?? "")
    .split(delimiter)
    .filter((dir) => !dir.startsWith(repoRoot) && !dir.includes("node-gyp-bin"))
    .join(delimiter);
  return { ...env, ...extra };
}

export function sh(cmd: string, args: string[], cwd: string, env = userEnv()): SpawnSyncReturns<string> {
  const result = spawnSync(cmd, args, { cwd, env, encoding: "utf8", maxBuffer: 64 << 20 });
  if (result.error) throw result.error;
  return result;
}

/**
 * `npm run prebuild` on the addon as built (`npm test`'s bootstrap built it and dist/ before the
 * suite; rebuilding here would change files other tests are using), then `npm pack`.
 */
export function packTarball(destination: string): { tarball: string; files: string[]; size: number } {
  const prebuild = sh(process.execPath, ["scripts/prebuild.mjs", "--no-build"], repoRoot);
  if (prebuild.status !== 0) throw new Error(`npm run prebuild failed:\n${prebuild.stdout}\n${prebuild.stderr}`);
  const pack = sh("npm", ["pack", "--json", "--pack-destination", destination], repoRoot);
  if (pack.status !== 0) throw new Error(`npm pack failed:\n${pack.stderr}`);
  const [info] = JSON.parse(pack.stdout) as { filename: string; size: number; files: { path: string }[] }[];
  return { tarball: join(destination, info!.filename), files: info!.files.map((f) => f.path), size: info!.size };
}

interface LockEntry {
  dev?: boolean;
  [key: string]: unknown;
}

/**
 * A project depending on the tarball, with a lockfile: npm's cache holds the dependency
 * tarballs (the bootstrap's `npm ci` put them there) but not the registry metadata an
 * unlocked install would resolve versions with. The lock is this repo's, less its
 * development-only packages, so the user's tree is the one the tests ran against.
 */
export function writeProject(dir: string, tarball: string): string {
  mkdirSync(dir, { recursive: true });
  const local = basename(tarball);
  copyFileSync(tarball, join(dir, local));
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as Record<string, unknown>;
  const lock = JSON.parse(readFileSync(join(repoRoot, "package-lock.json"), "utf8")) as {
    packages: Record<string, LockEntry>;
  };
  const spec = `file:${local}`;
  const packages: Record<string, unknown> = {
    "": { name: "sdtune-user", dependencies: { sdtune: spec } },
    "node_modules/sdtune": {
      version: pkg.version,
      resolved: spec,
      license: pkg.license,
      hasInstallScript: true,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path.startsWith("node_modules/") && !entry.dev) packages[path] = entry;
  }
  const manifest = { name: "sdtune-user", private: true, type: "module", dependencies: { sdtune: spec } };
  writeFileSync(join(dir, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  writeFileSync(
    join(dir, "package-lock.json"),
    `${JSON.stringify({ name: "sdtune-user", lockfileVersion: 3, requires: true, packages }, null, 2)}\n`,
  );
  return `./${local}`;
}

/** `npm install --offline <tarball>` in dir, with the install hook's output shown. */
export function installOffline(dir: string, tarball: string, env = userEnv()): SpawnSyncReturns<string> {
  const local = writeProject(dir, tarball);
  const args = ["install", "--offline", "--no-audit", "--no-fund", "--foreground-scripts", local];
  return sh("npm", args, dir, env);
}
