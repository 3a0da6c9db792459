#!/usr/bin/env node
// npm's install hook. In an installed package: keep the prebuilt addon when it loads
// here (it needs the libtorch it was built against), otherwise check what a source
// build needs, then build. Any failure exits non-zero, so npm rolls the install back.
// In a git checkout `npm run bootstrap` owns the build, so this does nothing.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { missingBuildRequirements, requirementsMessage, findTorch } from "./native-requirements.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (existsSync(join(root, ".git"))) process.exit(0);

/** Loads an addon in a child process: a mismatched libtorch must not take this process down. */
function loadError(file) {
  const result = spawnSync(process.execPath, ["-e", "require(process.argv[1])", file], { encoding: "utf8" });
  if (result.status === 0) return undefined;
  const lines = `${result.stderr ?? ""}`.split("\n").filter((line) => /Error|error:/.test(line));
  return lines[0]?.trim() ?? `exit status ${result.status}`;
}

function fromSourceReason() {
  if (process.env.npm_config_build_from_source === "true") return "--build-from-source";
  if (process.env.SDTUNE_BUILD_FROM_SOURCE === "1") return "SDTUNE_BUILD_FROM_SOURCE=1";
  // A libtorch the user named (CUDA, another version) is the one to build against.
  if (process.env.LIBTORCH) return "LIBTORCH is set";
  if (process.env.Torch_DIR) return "Torch_DIR is set";
  return undefined;
}

const reason = fromSourceReason();
if (reason) {
  console.log(`sdtune: building the native addon from source (${reason}).`);
} else {
  const { prebuildCandidates } = await import(pathToFileURL(join(root, "dist", "native", "load.js")).href);
  for (const file of prebuildCandidates(root)) {
    const error = loadError(file);
    if (!error) {
      console.log(`sdtune: using the prebuilt addon ${relative(root, file)}.`);
      process.exit(0);
    }
    console.log(
      `sdtune: the prebuilt addon ${relative(root, file)} does not load here (${error}); building from source.`,
    );
  }
}

const missing = missingBuildRequirements();
if (missing.length > 0) {
  console.error(requirementsMessage(missing));
  process.exit(1);
}
const build = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs")], { stdio: "inherit" });
if (build.status !== 0) {
  console.error(
    `sdtune: the source build failed (output above) with cmake, a C++ compiler and libtorch from ${findTorch().where} present.` +
      " Run `npm rebuild sdtune --build-from-source --foreground-scripts` to see it again.",
  );
  process.exit(build.status ?? 1);
}
const error = loadError(join(root, "build", "Release", "sdtune.node"));
if (error) {
  console.error(`sdtune: the addon built but does not load: ${error}`);
  process.exit(1);
}
