// Data parallel settings: torchrun's variables, the API's settings, --nproc-per-node, and the
// errors that name what is missing; and a global batch with class images split across ranks.
import { describe, expect, it } from "vitest";

import { shardBatch } from "../src/data/plan.js";
import { resolveDistributed } from "../src/train/distributed.js";

const torchrun = { MASTER_ADDR: "10.1.2.3", MASTER_PORT: "29500", WORLD_SIZE: "4", RANK: "2", LOCAL_RANK: "0" };

describe("distributed settings", () => {
  it("joins as the rank the environment names, before launching anything", () => {
    expect(resolveDistributed({ nprocPerNode: 2 }, torchrun)).toEqual({
      kind: "join",
      rank: 2,
      worldSize: 4,
      localRank: 0,
      masterAddr: "10.1.2.3",
      masterPort: 29500,
      timeoutMs: undefined,
      backend: undefined,
      verifyEvery: 0,
    });
    const api = resolveDistributed({ rank: 1, worldSize: 2, masterAddr: "h", masterPort: 1234, timeoutMs: 5000 }, {});
    expect(api).toMatchObject({ kind: "join", rank: 1, worldSize: 2, localRank: 1, timeoutMs: 5000 });
    expect(resolveDistributed({ nprocPerNode: 3 }, {})).toMatchObject({ kind: "launch", nprocPerNode: 3 });
    expect(resolveDistributed(undefined, {})).toEqual({ kind: "single" });
    expect(resolveDistributed({ nprocPerNode: 1 }, { WORLD_SIZE: "1" })).toEqual({ kind: "single" });
  });

  it("names what is missing or wrong", () => {
    expect(() => resolveDistributed(undefined, { ...torchrun, RANK: undefined })).toThrow(/RANK is not set/);
    expect(() => resolveDistributed(undefined, { ...torchrun, RANK: "4" })).toThrow(/RANK 4 is not below WORLD_SIZE 4/);
    expect(() => resolveDistributed(undefined, { ...torchrun, MASTER_ADDR: undefined })).toThrow(/MASTER_ADDR/);
    expect(() => resolveDistributed(undefined, { ...torchrun, MASTER_PORT: "x" })).toThrow(/MASTER_PORT/);
    expect(() => resolveDistributed({ nprocPerNode: 1.5 }, {})).toThrow(/nprocPerNode/);
    expect(() => resolveDistributed({ backend: "mpi" as "gloo" }, {})).toThrow(/backend must be "gloo" or "nccl"/);
  });

  it("splits instance and class examples alike; their rows follow the global batch's layout", () => {
    const global = { bucket: 0, entries: [10, 11, 12, 13, 14], classEntries: [20, 21, 22, 23, 24] };
    const a = shardBatch(global, { rank: 0, worldSize: 2 })!;
    const b = shardBatch(global, { rank: 1, worldSize: 2 })!;
    expect([a.entries, a.classEntries, a.slots]).toEqual([
      [10, 11, 12],
      [20, 21, 22],
      [0, 1, 2, 5, 6, 7],
    ]);
    expect([b.entries, b.classEntries, b.slots]).toEqual([
      [13, 14],
      [23, 24],
      [3, 4, 8, 9],
    ]);
    expect(a.globalRows).toBe(10);
    expect(shardBatch({ bucket: 0, entries: [1], classEntries: [] }, { rank: 0, worldSize: 2 })).toBeUndefined();
  });
});
