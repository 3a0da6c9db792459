// `--nproc-per-node N` / `distributed: { nprocPerNode: N }`: this process starts N copies of
// itself (same script, same arguments) as ranks 0..N-1 of a group on this machine, with the
// variables torchrun sets, and waits for them. Rank 0 reports its progress and result back
// over the IPC channel; a rank that fails makes the launch fail (the others fail at their
// next collective; one that hangs is killed after a grace period).
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { availableParallelism } from "node:os";

import type { DistributedPlan } from "./distributed.js";

type Message =
  | { sdtune: "progress"; event: unknown }
  | { sdtune: "result"; result: unknown }
  | { sdtune: "error"; message: string }
  | { sdtune: "stop" };

/** How long the other ranks get to stop on their own after one failed, before they are killed. */
const GRACE_MS = 30_000;

/** A TCP port free on the loopback now (the local rendezvous). */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolvePort(address.port) : reject(new Error("no port")),
      );
    });
  });
}

export interface LaunchOptions {
  onProgress?: (event: never) => void;
  signal?: AbortSignal;
}

/** Starts the workers and resolves with rank 0's result. */
export async function launchLocal<R>(
  plan: Extract<DistributedPlan, { kind: "launch" }>,
  options: LaunchOptions,
): Promise<R> {
  const port = await freePort();
  const n = plan.nprocPerNode;
  const children: ChildProcess[] = [];
  for (let rank = 0; rank < n; rank++) {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      MASTER_ADDR: "127.0.0.1",
      MASTER_PORT: String(port),
      WORLD_SIZE: String(n),
      RANK: String(rank),
      LOCAL_RANK: String(rank),
      LOCAL_WORLD_SIZE: String(n),
      SDTUNE_LAUNCHED: "1",
      // As torchrun: the ranks share the cores instead of each taking all of them (unless set).
      OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / n))),
      ...(plan.timeoutMs ? { SDTUNE_DIST_TIMEOUT_MS: String(plan.timeoutMs) } : {}),
      ...(plan.backend ? { SDTUNE_DIST_BACKEND: plan.backend } : {}),
    };
    // stdout is the launcher's alone (results are printed once); errors show on stderr.
    children.push(
      spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
        env,
        stdio: ["ignore", "ignore", "inherit", "ipc"],
        serialization: "advanced",
      }),
    );
  }
  return supervise<R>(children, options);
}

function supervise<R>(children: ChildProcess[], options: LaunchOptions): Promise<R> {
  return new Promise<R>((resolveRun, reject) => {
    let result: R | undefined;
    let failure: string | undefined;
    let running = children.length;
    let killer: NodeJS.Timeout | undefined;
    const errors = new Map<number, string>();
    const stop = (): void => children.forEach((c) => c.connected && c.send({ sdtune: "stop" } satisfies Message));
    options.signal?.addEventListener("abort", stop, { once: true });
    children.forEach((child, rank) => {
      child.on("message", (m: Message) => {
        if (m.sdtune === "progress") (options.onProgress as ((e: unknown) => void) | undefined)?.(m.event);
        else if (m.sdtune === "result") result = m.result as R;
        else if (m.sdtune === "error") errors.set(rank, m.message);
      });
      // "close": after the process ended and its IPC channel delivered every message.
      child.on("close", (code, signal) => {
        running--;
        if ((code !== 0 || signal) && failure === undefined) {
          failure =
            `rank ${rank} of ${children.length} ${signal ? `was killed (${signal})` : `exited with code ${code}`}` +
            (errors.has(rank) ? `: ${errors.get(rank)}` : "");
          killer = setTimeout(() => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL")), GRACE_MS);
          killer.unref();
        }
        if (running > 0) return;
        clearTimeout(killer);
        options.signal?.removeEventListener("abort", stop);
        const aborted = options.signal?.aborted && failure !== undefined;
        if (failure !== undefined) {
          // Stopped on request: rank 0's own message says where its checkpoint is.
          const error = new Error(aborted ? (errors.get(0) ?? `training interrupted (${failure})`) : failure);
          if (aborted) Object.assign(error, { name: "AbortError", code: "ABORT_ERR" });
          reject(error);
        } else if (result === undefined) reject(new Error("rank 0 finished without reporting its result"));
        else resolveRun(result);
      });
    });
  });
}

export interface LauncherChannel {
  send(message: Message): void;
  onStop(callback: () => void): void;
  /** Sends the last message (if any), then closes the channel so that it keeps no finished worker alive. */
  close(last?: Message): void;
}

/** In a worker started by launchLocal: the channel back to the launcher (undefined otherwise). */
export function launcherChannel(): LauncherChannel | undefined {
  if (process.env.SDTUNE_LAUNCHED !== "1" || !process.send) return undefined;
  let listener: ((m: Message) => void) | undefined;
  let orphaned: (() => void) | undefined;
  return {
    send: (message) => void process.send?.(message),
    onStop: (callback) => {
      listener = (m) => void (m?.sdtune === "stop" && callback());
      orphaned = callback; // the launcher went away: stop at the next step boundary too
      process.on("message", listener);
      process.on("disconnect", orphaned);
    },
    close: (last) => {
      if (listener) process.off("message", listener);
      if (orphaned) process.off("disconnect", orphaned);
      const disconnect = (): void => void (process.connected && process.disconnect());
      if (last && process.connected) process.send!(last, undefined, {}, disconnect);
      else disconnect();
    },
  };
}
