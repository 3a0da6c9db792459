// Native surface: data-parallel collectives on libtorch's c10d (native/bindings/process_group_binding.cc).
import type { Tensor } from "./tensor.js";

export interface NativeProcessGroupOptions {
  /** Where rank 0 hosts the TCPStore rendezvous (MASTER_ADDR / MASTER_PORT). */
  masterAddr: string;
  masterPort: number;
  rank: number;
  worldSize: number;
  /** How long a collective or the rendezvous waits for the other ranks (default 30 minutes). */
  timeoutMs?: number;
  /** "gloo" (CPU tensors) or "nccl" (CUDA builds only). Default "gloo". */
  backend?: "gloo" | "nccl";
  /** Gradient all-reduce bucket size in MiB (default 25, as DDP). */
  bucketMb?: number;
  /** The store at masterAddr:masterPort is hosted by a launcher (torchrun's static rendezvous): join it as a client. */
  agentStore?: boolean;
  /** Keys go under this prefix in the store. */
  storePrefix?: string;
}

/** One rank's membership of a c10d process group; every method runs on the addon's executor thread. */
export interface NativeProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  barrier(): Promise<void>;
  /** The mean over ranks of each value. */
  allReduceMean(values: number[]): Promise<number[]>;
  /** In place: each tensor becomes the mean over ranks (bucketed). */
  allReduceTensors(tensors: Tensor[]): Promise<void>;
  /** In place: each tensor becomes rank `root`'s (default 0). */
  broadcastTensors(tensors: Tensor[], root?: number): Promise<void>;
  /** Each rank's 53-bit FNV-1a hash of its tensors' float32 bytes, in rank order. */
  allGatherHash(tensors: Tensor[]): Promise<number[]>;
}
