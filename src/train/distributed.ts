// Data-parallel training: which rank this process is, and the collectives the run uses
// (libtorch's c10d through the addon: TCPStore rendezvous, ProcessGroupGloo on CPU).
// The settings come from TrainOptions.distributed or, as torchrun, Slurm and Kubernetes
// launchers set them, from MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK.
import { native, type NativeProcessGroup, type Tensor } from "../native/index.js";

export interface DistributedSettings {
  /** Start this many worker processes on this machine (ranks 0..N-1) and wait for them. */
  nprocPerNode?: number;
  /** Join an existing group as this rank (default: the RANK environment variable). */
  rank?: number;
  worldSize?: number;
  localRank?: number;
  masterAddr?: string;
  masterPort?: number;
  /** How long a rank waits for the others at a collective before failing (default 30 minutes). */
  timeoutMs?: number;
  backend?: "gloo" | "nccl";
  /**
   * Every this many optimizer steps, check that all ranks hold identical weights and optimizer
   * state (a hash per rank, recorded in metrics.jsonl as rank_hashes); 0: never. Default 0
   * (env SDTUNE_DIST_VERIFY_EVERY).
   */
  verifyEvery?: number;
}

/** What this process does: train alone, launch local workers, or join a group as one rank. */
export type DistributedPlan =
  | { kind: "single" }
  | { kind: "launch"; nprocPerNode: number; timeoutMs?: number; backend?: "gloo" | "nccl"; verifyEvery: number }
  | {
      kind: "join";
      rank: number;
      worldSize: number;
      localRank: number;
      masterAddr: string;
      masterPort: number;
      timeoutMs?: number;
      backend?: "gloo" | "nccl";
      verifyEvery: number;
    };

function intFrom(value: string | number | undefined, name: string, min: number): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

/** The plan from `settings`, filled in from the environment (torchrun's variables win over nprocPerNode). */
export function resolveDistributed(
  settings: DistributedSettings | undefined,
  env: NodeJS.ProcessEnv = process.env,
): DistributedPlan {
  const s = settings ?? {};
  const worldSize = intFrom(s.worldSize ?? env.WORLD_SIZE, "WORLD_SIZE (distributed.worldSize)", 1);
  const rank = intFrom(s.rank ?? env.RANK, "RANK (distributed.rank)", 0);
  const timeoutMs = intFrom(s.timeoutMs ?? env.SDTUNE_DIST_TIMEOUT_MS, "distributed.timeoutMs", 1);
  const backend = s.backend ?? (env.SDTUNE_DIST_BACKEND as DistributedSettings["backend"]);
  if (backend !== undefined && backend !== "gloo" && backend !== "nccl") {
    throw new Error(`distributed backend must be "gloo" or "nccl", got ${JSON.stringify(backend)}`);
  }
  const verifyEvery = intFrom(s.verifyEvery ?? env.SDTUNE_DIST_VERIFY_EVERY, "distributed.verifyEvery", 0) ?? 0;
  const common = { timeoutMs, backend, verifyEvery };
  if (worldSize !== undefined && worldSize > 1) {
    if (rank === undefined)
      throw new Error(`WORLD_SIZE is ${worldSize} but RANK is not set: every process needs its rank`);
    if (rank >= worldSize) throw new Error(`RANK ${rank} is not below WORLD_SIZE ${worldSize}`);
    const masterAddr = s.masterAddr ?? env.MASTER_ADDR;
    const masterPort = intFrom(s.masterPort ?? env.MASTER_PORT, "MASTER_PORT (distributed.masterPort)", 1);
    if (!masterAddr || masterPort === undefined) {
      throw new Error(
        `rank ${rank} of ${worldSize}: MASTER_ADDR and MASTER_PORT must say where rank 0 hosts the rendezvous`,
      );
    }
    const localRank = intFrom(s.localRank ?? env.LOCAL_RANK, "LOCAL_RANK (distributed.localRank)", 0) ?? rank;
    return { kind: "join", rank, worldSize, localRank, masterAddr, masterPort, ...common };
  }
  const nproc = intFrom(s.nprocPerNode, "nprocPerNode (--nproc-per-node)", 1);
  if (nproc !== undefined && nproc > 1) return { kind: "launch", nprocPerNode: nproc, ...common };
  return { kind: "single" };
}

/**
 * One rank's view of the group. Rank 0 is the main rank: it alone writes the run folder; the
 * others wait for it at barriers. Every method is a collective: all ranks must call it, in order.
 */
export class DataParallel {
  private constructor(
    readonly group: NativeProcessGroup,
    readonly localRank: number,
    /** See DistributedSettings.verifyEvery. */
    readonly verifyEvery: number,
  ) {}

  static async connect(plan: Extract<DistributedPlan, { kind: "join" }>): Promise<DataParallel> {
    const group = await native().ProcessGroup.connect({
      masterAddr: plan.masterAddr,
      masterPort: plan.masterPort,
      rank: plan.rank,
      worldSize: plan.worldSize,
      timeoutMs: plan.timeoutMs,
      backend: plan.backend,
      // torchrun's static rendezvous hosts the store (as torch.distributed does under it).
      ...(process.env.TORCHELASTIC_USE_AGENT_STORE === "True"
        ? { agentStore: true, storePrefix: `/worker/attempt_${process.env.TORCHELASTIC_RESTART_COUNT ?? "0"}` }
        : {}),
    });
    return new DataParallel(group, plan.localRank, plan.verifyEvery);
  }

  get rank(): number {
    return this.group.rank;
  }
  get worldSize(): number {
    return this.group.worldSize;
  }
  get isMain(): boolean {
    return this.group.rank === 0;
  }

  barrier(): Promise<void> {
    return this.group.barrier();
  }

  /**
   * Whether this rank makes the cache entry or file keyed by `key` (a hex digest), when every
   * rank makes its share of what is missing: by the key, so the shares never depend on when
   * a rank looked.
   */
  owns(key: string): boolean {
    return Number.parseInt(key.slice(0, 8), 16) % this.worldSize === this.rank;
  }

  /** The mean over ranks of each value. */
  mean(values: number[]): Promise<number[]> {
    return this.group.allReduceMean(values);
  }

  /** Each rank's hash of `tensors` (equal weights, equal hashes), in rank order. */
  hashes(tensors: Tensor[]): Promise<number[]> {
    return this.group.allGatherHash(tensors);
  }
}

/** Runs `write` on the main rank (or alone), then every rank meets at a barrier. */
export async function mainThenBarrier<T>(
  dp: DataParallel | undefined,
  write: () => Promise<T>,
): Promise<T | undefined> {
  if (!dp) return write();
  let out: T | undefined;
  // A main-rank failure reaches the others as a failed barrier (its connections close).
  if (dp.isMain) out = await write();
  await dp.barrier();
  return out;
}
