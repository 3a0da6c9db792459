// What a source build of the addon needs, checked before building so a failure names
// the missing piece (cmake, a C++ compiler, libtorch) instead of blaming libtorch for all.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Whether cmd is on env's PATH. */
export const have = (cmd, env = process.env) =>
  spawnSync("/bin/sh", ["-c", `command -v ${cmd}`], { stdio: "ignore", env }).status === 0;
const torchConfig = (dir) => existsSync(join(dir, "TorchConfig.cmake"));

/** Folders where distributions put libtorch's CMake package (Debian: /usr/lib/<triplet>/cmake/Torch). */
function systemTorchDirs() {
  const dirs = [
    "/usr/share/cmake/Torch",
    "/usr/lib/cmake/Torch",
    "/usr/local/share/cmake/Torch",
    "/usr/local/lib/cmake/Torch",
  ];
  const lib = "/usr/lib";
  if (existsSync(lib)) {
    for (const entry of readdirSync(lib))
      if (entry.endsWith("-linux-gnu")) dirs.push(join(lib, entry, "cmake", "Torch"));
  }
  return dirs;
}

function pythonTorchDir(env) {
  for (const python of ["python3", "python"]) {
    if (!have(python, env)) continue;
    const result = spawnSync(python, ["-c", "import torch.utils; print(torch.utils.cmake_prefix_path)"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    const dir = result.status === 0 ? join(result.stdout.trim(), "Torch") : "";
    if (dir && torchConfig(dir)) return dir;
  }
  return undefined;
}

export function debianMissing(packages, env = process.env) {
  if (!have("dpkg-query", env)) return [];
  const result = spawnSync("dpkg-query", ["-W", "-f=${Package} ${Status}\n", ...packages], { encoding: "utf8" });
  const ok = new Set(
    (result.stdout ?? "")
      .split("\n")
      .filter((line) => line.endsWith("install ok installed"))
      .map((line) => line.split(" ")[0]),
  );
  return packages.filter((p) => !ok.has(p));
}

/**
 * libtorch as CMakeLists.txt looks for it, in its order: LIBTORCH, Torch_DIR, Python torch, the system.
 * Returns { where } when found, { problem, packages } when not.
 */
export function findTorch(env = process.env) {
  if (env.LIBTORCH) {
    const dir = join(env.LIBTORCH, "share", "cmake", "Torch");
    if (torchConfig(dir)) return { where: `LIBTORCH=${env.LIBTORCH}` };
    return {
      problem: `LIBTORCH=${env.LIBTORCH} has no share/cmake/Torch/TorchConfig.cmake (point it at an unpacked libtorch)`,
    };
  }
  if (env.Torch_DIR) {
    if (torchConfig(env.Torch_DIR)) return { where: `Torch_DIR=${env.Torch_DIR}` };
    return {
      problem: `Torch_DIR=${env.Torch_DIR} has no TorchConfig.cmake (point it at <libtorch>/share/cmake/Torch)`,
    };
  }
  const python = pythonTorchDir(env);
  if (python) return { where: `Python torch (${python})` };
  const system = systemTorchDirs().find(torchConfig);
  // Debian's TorchConfig.cmake also needs the gloo headers of libgloo-dev.
  const gloo = system ? debianMissing(["libgloo-dev"], env) : [];
  if (system && gloo.length === 0) return { where: system };
  return {
    problem: system
      ? "libgloo-dev is not installed (Debian's libtorch CMake package needs it)"
      : "libtorch is not installed",
    packages: ["libtorch-dev", "libgloo-dev", "libopenblas0-pthread"],
  };
}

/** The missing build requirements, each { problem, packages } (Debian package names); empty when all are there. */
export function missingBuildRequirements(env = process.env) {
  const missing = [];
  if (!have("cmake", env)) missing.push({ problem: "cmake (3.18 or newer) is not installed", packages: ["cmake"] });
  const compilers = [env.CXX, "c++", "g++", "clang++"].filter(Boolean);
  if (!compilers.some((cxx) => have(cxx, env)))
    missing.push({ problem: "no C++17 compiler (g++ or clang++) is installed", packages: ["g++"] });
  const torch = findTorch(env);
  if (torch.problem) missing.push(torch);
  return missing;
}

/** One message saying what is missing and the one command (or variable) that fixes it. */
export function requirementsMessage(missing) {
  const packages = [...new Set(missing.flatMap((m) => m.packages ?? []))];
  const lines = [`sdtune: cannot build the native addon: ${missing.map((m) => m.problem).join("; ")}.`];
  if (packages.length > 0 && have("apt-get")) {
    const sudo = process.getuid?.() === 0 ? "" : "sudo ";
    lines.push(`Install with:\n  ${sudo}apt-get install -y --no-install-recommends ${packages.join(" ")}`);
  } else if (packages.length > 0) {
    lines.push("Install cmake, a C++17 compiler (g++ or clang++) and libtorch (https://pytorch.org, C++ / LibTorch).");
  }
  lines.push(
    "For a libtorch you unpacked yourself (a CUDA build, say): set LIBTORCH=/path/to/libtorch " +
      "(or Torch_DIR=/path/to/libtorch/share/cmake/Torch), then install sdtune again.",
  );
  return lines.join("\n");
}
