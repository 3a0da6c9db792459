import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";

import { addonPath, native } from "../src/native/index.js";
import { cancelTokenFor, tensorFrom } from "../src/tensor.js";

describe("the Tensor handle", () => {
  it("carries dtype, shape and device", () => {
    const t = tensorFrom(new Float32Array(6), [2, 3]);
    expect(t.dtype).toBe("float32");
    expect(t.shape).toEqual([2, 3]);
    expect(t.device).toBe("cpu");
    expect(t.numel).toBe(6);
  });

  it("is created from a typed array without a copy, and read back without one", () => {
    const data = Float32Array.from([1, 2, 3, 4]);
    const t = tensorFrom(data, [4]);
    const view = t.toTypedArray() as Float32Array;
    expect(Array.from(view)).toEqual([1, 2, 3, 4]);
    data[0] = 42; // the tensor shares the array's memory ...
    expect(view[0]).toBe(42); // ... and the view shares the tensor's
    expect(view.buffer).not.toBe(data.buffer); // through an external buffer of its own
  });

  it("accepts every supported dtype with the right typed array, and refuses the wrong one", () => {
    expect(tensorFrom(new Uint16Array(2), [2], "float16").dtype).toBe("float16");
    expect(tensorFrom(new Uint16Array(2), [2], "bfloat16").dtype).toBe("bfloat16");
    expect(tensorFrom(new BigInt64Array(2), [2]).dtype).toBe("int64");
    expect(tensorFrom(new Int32Array(2), [2]).dtype).toBe("int32");
    expect(tensorFrom(new Uint8Array(2), [2]).dtype).toBe("uint8");
    expect(tensorFrom(new Uint8Array(2), [2], "bool").dtype).toBe("bool");
    expect(() => tensorFrom(new Float32Array(2), [2], "int64")).toThrow(/cannot hold dtype int64/);
    expect(() => tensorFrom(new Uint16Array(2), [2])).toThrow(/cannot infer a dtype/);
    expect(() => tensorFrom(new Float32Array(3), [2, 2])).toThrow(/holds 4 elements but the array has 3/);
  });

  it("converts dtype and keeps values", async () => {
    const t = tensorFrom(Float32Array.from([1.5, -2.25]), [2]);
    const h = await t.to({ dtype: "float16" });
    expect(h.dtype).toBe("float16");
    expect(Array.from(h.toTypedArray() as Uint16Array)).toEqual([0x3e00, 0xc080]);
    const back = await h.to({ dtype: "float32" });
    expect(Array.from(back.toTypedArray() as Float32Array)).toEqual([1.5, -2.25]);
  });

  it("dispose() is idempotent and a disposed tensor says so", () => {
    const t = tensorFrom(new Float32Array(4), [4]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toTypedArray()).toThrow(/disposed/);
    // Argument errors of native calls are thrown synchronously, before any work is queued.
    expect(() => native().ops.matmul(t, t)).toThrow(/a is a disposed Tensor/);
  });

  it("frees zero-copy tensors from worker threads without touching JS there", async () => {
    // The result of a worker op over typed-array memory is released on the pool thread.
    const kept: number[] = [];
    for (let i = 0; i < 50; i++) {
      const a = tensorFrom(new Float32Array(64).fill(i), [8, 8]);
      const out = await native().ops.matmul(a, a);
      a.dispose();
      // Every element of (i * ones) @ (i * ones) is 8 * i * i.
      expect(new Set(out.toTypedArray() as Float32Array)).toEqual(new Set([8 * i * i]));
      kept.push((out.toTypedArray() as Float32Array)[0]!);
      out.dispose();
      expect(out.disposed).toBe(true);
    }
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setTimeout(r, 20));
    // The process is still sound after the releases: a fresh op over fresh memory computes.
    const b = tensorFrom(
      Float32Array.from({ length: 4 }, (_, k) => k + 1),
      [2, 2],
    );
    expect(Array.from((await native().ops.matmul(b, b)).toTypedArray() as Float32Array)).toEqual([7, 10, 15, 22]);
    expect(kept).toEqual(Array.from({ length: 50 }, (_, i) => 8 * i * i));
  });
});

describe("native errors", () => {
  it("a libtorch error is a JS Error without the C++ backtrace, with the caller's stack", async () => {
    const a = native().ops.randn([2, 3], { seed: 1 });
    const b = native().ops.randn([4, 5], { seed: 1 });
    async function callerFunctionName(): Promise<unknown> {
      return native().ops.matmul(a, b);
    }
    const error = (await callerFunctionName().catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toMatch(/shapes cannot be multiplied \(2x3 and 4x5\)/);
    expect(error.message).not.toMatch(/Exception raised from|frame #\d/);
    expect(error.stack).toContain("callerFunctionName");
  });

  it("bad arguments throw TypeErrors instead of aborting", () => {
    expect(() => native().ops.maxAbsDiff({} as never, {} as never)).toThrow(/a must be a Tensor/);
    expect(() => native().tensorFromTypedArray([] as never, [0], "float32")).toThrow(/typed array/);
    expect(() => native().ops.randn([2], { dtype: "complex" as never })).toThrow(/unknown dtype "complex"/);
  });
});

describe("off the JS thread", () => {
  let a: ReturnType<typeof native>["ops"] extends { randn(...args: never[]): infer T } ? T : never;
  beforeAll(() => {
    a = native().ops.randn([1536, 1536], { seed: 3 });
  });
  afterAll(() => a.dispose());

  it("the event loop keeps turning during a native op of at least 200 ms", async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const started = performance.now();
    // Chain matmuls until the native work alone has taken 200 ms.
    let nativeTime = 0;
    let rounds = 0;
    while (nativeTime < 200) {
      const t0 = performance.now();
      const out = await native().ops.matmul(a, a);
      nativeTime += performance.now() - t0;
      out.dispose();
      rounds++;
    }
    clearInterval(timer);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(200);
    // A blocked loop would tick about once per round; a free one every ~5 ms.
    expect(ticks).toBeGreaterThan(rounds + 10);
    expect(ticks).toBeGreaterThan(elapsed / 5 / 4);
  });

  it("a cancel token follows an AbortSignal", () => {
    const controller = new AbortController();
    const token = cancelTokenFor(controller.signal)!;
    expect(token.cancelled).toBe(false);
    controller.abort();
    expect(token.cancelled).toBe(true);
  });
});

describe("runtime", () => {
  it("sets threads from the cores available and reports the BLAS", () => {
    const info = native().info();
    expect(info.threads).toBeGreaterThanOrEqual(1);
    const fromEnv = Number(process.env.SDTUNE_NUM_THREADS) || Number(process.env.OMP_NUM_THREADS);
    expect(info.threads).toBe(fromEnv > 0 ? fromEnv : info.cores);
    expect(info.libtorchVersion).toMatch(/^\d+\.\d+/);
    expect(Array.isArray(info.blasLibraries)).toBe(true);
  });

  it("runs its CPU kernels' parallel loops on every thread (an addon built without OpenMP runs them on one)", () => {
    const { cpuKernels, threads } = native().info();
    expect(cpuKernels.parallelForThreads).toBe(threads);
  });

  it("turns its CPU kernels off with SDTUNE_PARALLEL_GEMM=0 and SDTUNE_BLOCKED_ATTENTION=0", () => {
    const script = `const a = require(${JSON.stringify(addonPath())});
      Promise.all([a.ops.kernelParity({ kernel: "linear", shape: [256, 64, 64], seed: 1 }),
        a.ops.kernelParity({ kernel: "attention", shape: [1, 2, 256, 256, 16], seed: 1 })])
        .then(([l, t]) => console.log(JSON.stringify({ kernels: a.info().cpuKernels, used: [l.used, t.used] })));`;
    const env = { ...process.env, SDTUNE_PARALLEL_GEMM: "0", SDTUNE_BLOCKED_ATTENTION: "0" };
    const child = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", env });
    expect(child.status, child.stderr).toBe(0);
    const out = JSON.parse(child.stdout.trim()) as { kernels: Record<string, unknown>; used: boolean[] };
    expect(out.kernels).toMatchObject({ splitProducts: false, blockedAttention: false });
    expect(out.used).toEqual([false, false]);
  });

  it("runs libtorch on a thread that allocates from glibc's main arena, without MALLOC_ARENA_MAX set", () => {
    // A fresh process, as a user's script starts: node's own threads already hold their arenas.
    const script = `const a = require(${JSON.stringify(addonPath())});
      const t = a.tensorFromTypedArray(new Float32Array(4), [2, 2], "float32");
      a.ops.matmul(t, t).then(() => console.log(JSON.stringify(a.info().executor)));`;
    const env = { ...process.env };
    delete env.MALLOC_ARENA_MAX;
    const child = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", env });
    expect(child.status, child.stderr).toBe(0);
    const executor = JSON.parse(child.stdout.trim()) as { started: boolean; mainHeap: boolean };
    expect(executor.started).toBe(true);
    expect(executor.mainHeap).toBe(true);
  });

  it("takes OMP_NUM_THREADS (as torchrun and --nproc-per-node set it), SDTUNE_NUM_THREADS first", () => {
    const threads = (env: Record<string, string>): number => {
      const child = spawnSync(
        process.execPath,
        ["-e", `console.log(require(${JSON.stringify(addonPath())}).info().threads)`],
        { encoding: "utf8", env: { ...process.env, SDTUNE_NUM_THREADS: "", OMP_NUM_THREADS: "", ...env } },
      );
      expect(child.status, child.stderr).toBe(0);
      return Number(child.stdout.trim());
    };
    expect(threads({ OMP_NUM_THREADS: "1" })).toBe(1);
    expect(threads({ OMP_NUM_THREADS: "1", SDTUNE_NUM_THREADS: "3" })).toBe(3);
    expect(threads({})).toBe(native().info().cores);
  });

  it("limits OpenBLAS's own thread pool to one thread unless OPENBLAS_NUM_THREADS is set", () => {
    const { blasThreads } = native().info();
    if (!blasThreads.openblas) {
      expect(blasThreads.setBySdtune).toBe(0);
      expect(blasThreads.note).toMatch(/not loaded/);
      return;
    }
    const fromEnv = Number(process.env.OPENBLAS_NUM_THREADS);
    expect(blasThreads.threads).toBe(fromEnv > 0 ? fromEnv : 1);
    expect(blasThreads.setBySdtune).toBe(fromEnv > 0 ? 0 : 1);
  });

  it("keeps large blocks in one malloc arena unless glibc's own variables say otherwise", () => {
    const mine = native().info().malloc;
    for (const [name, env, value] of [
      ["M_ARENA_MAX", "MALLOC_ARENA_MAX", 1],
      ["M_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_", 1 << 30],
      ["M_TRIM_THRESHOLD", "MALLOC_TRIM_THRESHOLD_", 1 << 30],
    ] as const) {
      const given = process.env[env];
      expect(mine).toContain(given ? `${env}=${given} (left as set)` : `${name}=${value}`);
    }
    // A process started with a glibc variable keeps it.
    const script = `import { native } from "./src/native/index.ts"; console.log(JSON.stringify(native().info().malloc));`;
    const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, MALLOC_ARENA_MAX: "4" },
    });
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout.trim().split("\n").pop()!)).toContain("MALLOC_ARENA_MAX=4 (left as set)");
  });

  it("runs every native job on one long-lived thread, in the order the calls were made", async () => {
    const before = native().info().executor;
    // A large product queued before a tiny one: on a pool of threads the tiny one would finish first.
    const big = tensorFrom(new Float32Array(384 * 384).fill(1), [384, 384]);
    const small = tensorFrom(new Float32Array(4).fill(1), [2, 2]);
    const order: string[] = [];
    const calls: Promise<void>[] = [];
    for (let i = 0; i < 4; i++) {
      for (const [name, t] of [
        ["big", big],
        ["small", small],
      ] as const) {
        calls.push(
          native()
            .ops.matmul(t, t)
            .then((out) => {
              order.push(name);
              out.dispose();
            }),
        );
      }
    }
    await Promise.all(calls);
    expect(order).toEqual(["big", "small", "big", "small", "big", "small", "big", "small"]);
    const after = native().info().executor;
    expect(after.started).toBe(true);
    expect(after.jobsRun - before.jobsRun).toBe(8);
    expect(after.threadId).toBeGreaterThan(0);
    expect(after.threadId).not.toBe(process.pid); // not the JS thread
    if (before.threadId > 0) expect(after.threadId).toBe(before.threadId); // the same thread as before
    big.dispose();
    small.dispose();
  });

  it("seeded randn matches torch.Generator().manual_seed(seed) draws", async () => {
    // golden/scheduler_euler_ancestral stores randn draws from a CPU generator seeded as its README says.
    const { golden, get, goldenNoiseSeed } = await import("./helpers/fixtures.js");
    const g = await golden("scheduler_euler_ancestral");
    const noise = get(g, "steps10.noise");
    const shape = noise.shape.slice(1);
    const first = native().ops.randn(shape, { seed: goldenNoiseSeed() });
    const expected = (noise.toTypedArray() as Float32Array).subarray(0, first.numel);
    expect(Array.from(first.toTypedArray() as Float32Array)).toEqual(Array.from(expected));
  });
});
