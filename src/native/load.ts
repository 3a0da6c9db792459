// The one place that loads the addon.
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NativeAddon } from "./addon.js";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Where the addon is looked for, in order. */
export function addonCandidates(): string[] {
  const candidates: string[] = [];
  if (process.env.SDTUNE_ADDON) candidates.push(process.env.SDTUNE_ADDON);
  candidates.push(join(packageRoot, "build", "Release", "sdtune.node"));
  const prebuilds = join(packageRoot, "prebuilds", `${process.platform}-${process.arch}`);
  if (existsSync(prebuilds)) {
    for (const name of readdirSync(prebuilds).sort()) {
      if (name.endsWith(".node")) candidates.push(join(prebuilds, name));
    }
  }
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

function load(): { addon: NativeAddon; path: string } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const candidates = addonCandidates();
  const path = candidates.find((candidate) => existsSync(candidate));
  if (!path) {
    throw new Error(
      `sdtune: the native addon is not built (looked in ${candidates.join(", ")}). ` +
        "Run `npm run bootstrap` in the sdtune folder: it installs libtorch and builds the addon.",
    );
  }
  try {
    loaded = { addon: require(path) as NativeAddon, path };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `sdtune: cannot load the native addon ${path}: ${message}. ` +
        "If libtorch changed since it was built, rebuild with `npm run build:native`.",
    );
  }
  return loaded;
}
