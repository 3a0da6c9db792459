// What the addon was built against and what it runs on (`sdtune info`).
import { readFileSync } from "node:fs";
import { freemem } from "node:os";

import { formatBytes } from "./io/bytes.js";
import { addonPath, native, type RuntimeInfo } from "./native/index.js";

export interface RuntimeReport {
  /** The addon file that was loaded. */
  addon: string;
  libtorch: string;
  /** Where the build found libtorch (LIBTORCH, Torch_DIR, Python torch or the system). */
  libtorchFrom: string;
  threads: number;
  cores: number;
  /** BLAS libraries mapped into the process. */
  blas: string[];
  /** What was done to BLAS's own thread pool at load (OpenBLAS limited to one thread). */
  blasThreads: RuntimeInfo["blasThreads"];
  /** glibc malloc settings made at load: one arena, 1 GiB mmap and trim thresholds (see README, Runtime). */
  malloc: string[];
  /** sdtune's own CPU kernels: which are on, and the threads they run on (see README, Runtime). */
  cpuKernels: RuntimeInfo["cpuKernels"];
  cuda: RuntimeInfo["cuda"];
  node: string;
}

/** Loads the addon (if not yet loaded) and reports the runtime it sees. */
export function runtimeInfo(): RuntimeReport {
  const info = native().info();
  return {
    addon: addonPath(),
    libtorch: info.libtorchVersion,
    libtorchFrom: info.torchSource,
    threads: info.threads,
    cores: info.cores,
    blas: info.blasLibraries,
    blasThreads: info.blasThreads,
    malloc: info.malloc,
    cpuKernels: info.cpuKernels,
    cuda: info.cuda,
    node: process.version,
  };
}

/** Sets libtorch's intra-op thread count (at load it is the cores this process may use); returns it. */
export function setNumThreads(threads: number): number {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`setNumThreads: threads must be a positive integer (got ${threads})`);
  }
  return native().setNumThreads(threads);
}

/**
 * A device name with "auto" resolved as training resolves it: "cuda:0" when the addon sees a
 * CUDA GPU, else "cpu". Other names are returned as they are.
 */
export function resolveDevice(device: string): string {
  if (device !== "auto") return device;
  return native().info().cuda.available ? "cuda:0" : "cpu";
}

/**
 * Bytes `device` can still give: on the CPU the kernel's MemAvailable, bounded by the
 * container's cgroup limit when there is one; on a GPU its total memory (nothing of sdtune's
 * is on it yet when this is asked). Undefined when it cannot be told.
 */
export function availableMemory(device: string): number | undefined {
  const resolved = resolveDevice(device);
  if (resolved.startsWith("cuda")) {
    const index = Number(resolved.split(":")[1] ?? 0);
    return native().info().cuda.devices[index]?.memoryBytes;
  }
  if (resolved !== "cpu") return undefined;
  const meminfo = readText("/proc/meminfo");
  const kib = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo ?? "");
  let bytes = kib ? Number(kib[1]) * 1024 : freemem();
  const limit = Number(readText("/sys/fs/cgroup/memory.max"));
  const used = Number(readText("/sys/fs/cgroup/memory.current"));
  if (Number.isFinite(limit) && Number.isFinite(used)) bytes = Math.min(bytes, Math.max(0, limit - used));
  return bytes;
}

/** The escape hatch for a machine whose memory is mis-reported (or that swaps on purpose). */
export const MEMORY_CHECK_ENV = "SDTUNE_MEMORY_CHECK";

/**
 * Throws before anything is allocated when `what` needs more than `device` has: the estimate,
 * its parts and what to change. SDTUNE_MEMORY_CHECK=off skips the check.
 */
export function checkMemory(what: string, parts: Record<string, number>, device: string, advice: string): void {
  if (process.env[MEMORY_CHECK_ENV] === "off") return;
  const available = availableMemory(device);
  const need = Object.values(parts).reduce((a, b) => a + b, 0);
  if (available === undefined || need <= available) return;
  const detail = Object.entries(parts)
    .filter(([, bytes]) => bytes > 0)
    .map(([name, bytes]) => `${name} ${formatBytes(bytes)}`)
    .join(", ");
  throw new Error(
    `${what} needs about ${formatBytes(need)} (${detail}), but ${resolveDevice(device)} has ` +
      `${formatBytes(available)} available. ${advice} ` +
      `(${MEMORY_CHECK_ENV}=off skips this estimate if you know better.)`,
  );
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}
