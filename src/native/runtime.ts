// Native surface: runtime.

export interface RuntimeInfo {
  libtorchVersion: string;
  torchSource: string;
  threads: number;
  interopThreads: number;
  cores: number;
  blasLibraries: string[];
  /** OpenBLAS's own pool: sdtune sets it to 1 at load unless OPENBLAS_NUM_THREADS is set. */
  blasThreads: { openblas: boolean; threads: number; setBySdtune: number; note: string };
  /** glibc malloc settings made at load ("M_ARENA_MAX=1", ...; a glibc variable that was set is left as set). */
  malloc: string[];
  /**
   * The one native thread that runs every model, trainer and pipeline job; mainHeap: it allocates from
   * glibc's main arena (large blocks are reused, not re-mmapped).
   */
  executor: { started: boolean; jobsRun: number; threadId: number; mainHeap: boolean };
  /**
   * sdtune's CPU kernels: split products for frozen layers (SDTUNE_PARALLEL_GEMM), blocked attention
   * (SDTUNE_BLOCKED_ATTENTION), and the threads their parallel loops run on (1 without an OpenMP build).
   */
  cpuKernels: { splitProducts: boolean; blockedAttention: boolean; parallelForThreads: number };
  parallelInfo: string;
  buildConfig: string;
  cuda: {
    built: boolean;
    available: boolean;
    devices: { index: number; name: string; capability: string; memoryBytes: number }[];
  };
}
