// The one place that loads the addon.
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NativeAddon } from "./addon.js";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * The prebuilt addons shipped in the package (prebuilds/<platform>-<arch>/*.node, prebuildify's layout).
 * They are built against one libtorch (see README "Installing"); the install hook checks that one loads.
 */
export function prebuildCandidates(root = packageRoot): string[] {
  const dir = join(root, "prebuilds", `${process.platform}-${process.arch}`);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".node"))
    .sort()
    .map((name) => join(dir, name));
}

/** Where the addon is looked for, in order: SDTUNE_ADDON, a source build, then the prebuilds. */
export function addonCandidates(): string[] {
  const candidates: string[] = [];
  if (process.env.SDTUNE_ADDON) candidates.push(process.env.SDTUNE_ADDON);
  candidates.push(join(packageRoot, "build", "Release", "sdtune.node"));
  candidates.push(...prebuildCandidates());
  return candidates;
}

let loaded: { addon: NativeAddon; path: string } | undefined;

/** The addon, loaded on first use. Throws an Error that says how to build it. */
export function native(): NativeAddon {
  return load().addon;
}

/** The file the addon was loaded from. */
export function addonPath(): string {
  return load().path;
}

const howToBuild =
  "In a git checkout run `npm run bootstrap`; where sdtune is an installed dependency run " +
  '`npm rebuild sdtune --build-from-source` (it needs cmake, a C++17 compiler and libtorch; see README "Installing").';

/** The first candidate that loads wins: a prebuild for another libtorch fails here and the next one is tried. */
function load(): { addon: NativeAddon; path: string } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const candidates = addonCandidates();
  const failures: string[] = [];
  for (const path of candidates.filter((candidate) => existsSync(candidate))) {
    try {
      loaded = { addon: require(path) as NativeAddon, path };
      return loaded;
    } catch (error) {
      failures.push(`${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  if (failures.length === 0) {
    throw new Error(`sdtune: the native addon is not built (looked in ${candidates.join(", ")}). ${howToBuild}`);
  }
  throw new Error(`sdtune: cannot load the native addon (${failures.join("; ")}). ${howToBuild}`);
}
