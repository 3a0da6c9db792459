// The addon in several Node environments at once (worker_threads): each keeps its own
// way of returning zero-copy memory to JS, so tensors made on one thread never touch another.
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";

import { addonPath, native } from "../src/native/index.js";
import { tensorFrom } from "../src/tensor.js";

describe("worker threads", () => {
  it("zero-copy tensors made and freed on the main thread while a worker also uses the addon", async () => {
    native(); // loaded here first
    const worker = new Worker(
      `const { parentPort, workerData } = require("node:worker_threads");
       const addon = require(workerData);
       let sum = 0;
       for (let i = 0; i < 200; i++) {
         const t = addon.tensorFromTypedArray(new Float32Array(16).fill(i), [16], "float32");
         sum += t.toTypedArray()[0];
         t.dispose();
       }
       parentPort.postMessage(sum);
       parentPort.once("message", () => process.exit(0));`,
      { eval: true, workerData: addonPath() },
    );
    const fromWorker = await new Promise<number>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    expect(fromWorker).toBe((199 * 200) / 2);
    // While the worker's environment lives, and after it is gone, main-thread tensors release normally.
    const churn = async (): Promise<void> => {
      for (let i = 0; i < 1000; i++) {
        const t = tensorFrom(new Float32Array(8).fill(1), [8]);
        const out = await native().ops.matmul(t.reshape([1, 8]), t.reshape([8, 1]));
        expect((out.toTypedArray() as Float32Array)[0]).toBe(8);
        out.dispose();
        t.dispose();
      }
    };
    await churn();
    worker.postMessage("done");
    await new Promise((resolve) => worker.once("exit", resolve));
    await churn();
  });

  it("a worker's native jobs settle in the worker, and one that exits with jobs still queued leaves the executor working", async () => {
    const side = 128;
    const worker = new Worker(
      `const { parentPort, workerData } = require("node:worker_threads");
       const addon = require(workerData.addon);
       const side = workerData.side;
       const a = addon.tensorFromTypedArray(new Float32Array(side * side).fill(1), [side, side], "float32");
       addon.ops.matmul(a, a).then((first) => {
         parentPort.postMessage(first.toTypedArray()[0]);
         for (let i = 0; i < 30; i++) addon.ops.matmul(a, a); // still queued or running at exit
         process.exit(0);
       });`,
      { eval: true, workerData: { addon: addonPath(), side } },
    );
    const exited = new Promise<number>((resolve) => worker.once("exit", resolve));
    const fromWorker = await new Promise<number>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    expect(fromWorker).toBe(side); // a row of ones times a column of ones
    expect(await exited).toBe(0);
    const before = native().info().executor.jobsRun;
    const t = tensorFrom(new Float32Array(4).fill(2), [2, 2]);
    const out = await native().ops.matmul(t, t);
    expect(Array.from(out.toTypedArray() as Float32Array)).toEqual([8, 8, 8, 8]);
    expect(native().info().executor.jobsRun).toBe(before + 1);
    out.dispose();
    t.dispose();
  });
});
