// What the addon was built against and what it runs on (`sdtune info`).
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
