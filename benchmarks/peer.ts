// sdtune's LoRA training step against diffusers' own (issue #16), on the same Debian libtorch:
// ../shared/peer/diffusers_lora_step.py (diffusers 0.27.2 + peft 0.10 on python3-torch 1.13)
// and benchmarks/_peer_case.ts (the same step through sdtune's Trainer). Both sides run in
// one benchmark, alternating A B A B, each in a fresh process, with the same thread count;
// the peer gets its best settings: the malloc settings sdtune makes at load (one arena, 1 GiB mmap
// and trim thresholds; with ../shared/peer/README.md's 32 MiB threshold the peer's SD-2-base step
// took twice as long) and OPENBLAS_NUM_THREADS=1.
//   npm run bench -- peer [--unet-config FILE] [--size 32] [--steps 6] [--warmup 2] [--rounds 2] [--threads 2]
// --unet-config: a diffusers UNet config (default: the peer's bench-medium-unet.json). The JSON
// reports each side's median step, forward / backward / clip / optimizer medians and peak RSS
// (the median over rounds of each run's median), the ratios sdtune / peer, and the load average
// before and after (numbers from a loaded machine are not comparable to an idle one's).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { loadavg, homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { machine, median, runCaseProcess } from "./_util.js";
import type { PeerCase } from "./_peer_case.js";
import type { Benchmark } from "./run.js";

const here = dirname(fileURLToPath(import.meta.url));
const peerDir = process.env.SDTUNE_PEER_DIR ?? resolve(here, "..", "..", "shared", "peer");
const PYTHON = process.env.SDTUNE_PEER_PYTHON ?? "/usr/bin/python3";
const REF_SRC = process.env.REFGEN_SRC ?? join(homedir(), ".cache", "refgen", "src");
const REF_NAMES = ["diffusers", "peft", "huggingface_hub", "accelerate", "transformers", "torchmetrics"];
const PHASES = ["forward", "backward", "clip", "optimizer"] as const;

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`${name} needs a positive integer`);
  return value;
}

/** Why the peer cannot run here, with the setup steps; undefined when it can. */
function peerMissing(): string | undefined {
  const script = join(peerDir, "diffusers_lora_step.py");
  const problems: string[] = [];
  if (!existsSync(script)) problems.push(`no ${script} (set SDTUNE_PEER_DIR to the peer folder)`);
  const torch = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  if (torch.status !== 0) problems.push(`${PYTHON} cannot import torch`);
  const missing = REF_NAMES.filter((n) => !existsSync(join(REF_SRC, n)));
  if (missing.length) problems.push(`no reference sources for ${missing.join(", ")} under ${REF_SRC}`);
  if (!problems.length) return undefined;
  return [
    `the diffusers peer is not set up: ${problems.join("; ")}.`,
    `Set it up as ${join(peerDir, "README.md")} says: apt-get install -y python3-torch python3-numpy python3-pil`,
    "python3-requests python3-filelock python3-regex python3-yaml python3-tqdm python3-packaging python3-fsspec",
    "python3-typing-extensions; then export diffusers v0.27.2, peft v0.10.0, huggingface_hub v0.22.2,",
    "accelerate v0.28.0, transformers 11ef35e8, torchmetrics v1.3.2 and lightning_utilities v0.11.0 into",
    `${REF_SRC}/<name> (git --git-dir=<clone>/.git archive <ref> | tar -x -C ${REF_SRC}/<name>).`,
  ].join(" ");
}

function runPeer(c: PeerCase, threads: number): Record<string, unknown> {
  const args = [join(peerDir, "diffusers_lora_step.py"), "--unet-config", c.unetConfig, "--size", String(c.size)];
  args.push("--steps", String(c.steps), "--warmup", String(c.warmup), "--threads", String(threads));
  args.push("--rank", String(c.rank), "--seq", String(c.seq));
  const env = {
    ...process.env,
    MALLOC_ARENA_MAX: "1",
    MALLOC_MMAP_THRESHOLD_: "1073741824",
    MALLOC_TRIM_THRESHOLD_: "1073741824",
    OPENBLAS_NUM_THREADS: "1",
    OMP_NUM_THREADS: String(threads),
  };
  const child = spawnSync(PYTHON, args, { encoding: "utf8", env, maxBuffer: 1 << 20 });
  const line = (child.stdout ?? "").trim().split("\n").pop() ?? "";
  if (child.status !== 0 || !line.startsWith("{")) {
    const tail = (child.stderr ?? "").trim().split("\n").slice(-5).join("\n");
    throw new Error(`the diffusers peer failed (exit ${child.status ?? child.signal}): ${tail}`);
  }
  return { side: "peer", ...(JSON.parse(line) as Record<string, unknown>) };
}

type Run = Record<string, unknown> & { phase_ms_median: Record<string, number> };

/** Per side: medians over rounds of each run's step median, phase medians and peak RSS. */
function summarise(runs: Run[]): Record<string, unknown> {
  const pick = (f: (r: Run) => number): number => Math.round(median(runs.map(f)) * 10) / 10;
  return {
    medianStepMs: pick((r) => r.ms_per_step_median as number),
    phaseMs: Object.fromEntries(PHASES.map((p) => [p, pick((r) => r.phase_ms_median[p] ?? 0)])),
    peakRssMB: pick((r) => r.peak_rss_mb as number),
    runsMedianStepMs: runs.map((r) => r.ms_per_step_median),
  };
}

const ratio = (a: number, b: number): number | null => (b > 0 ? Math.round((a / b) * 1000) / 1000 : null);

export const benchmark: Benchmark = {
  description:
    "LoRA training step (rank 4, to_q/to_k/to_v/to_out.0, clip 1.0, AdamW), sdtune vs diffusers on the same " +
    "libtorch, alternating fresh processes; forward/backward/clip/optimizer split, peak RSS, ratios sdtune/peer",
  async run(args) {
    const i = args.indexOf("--unet-config");
    const unetConfig = resolve(i >= 0 ? args[i + 1]! : join(peerDir, "bench-medium-unet.json"));
    const threads = option(args, "--threads", 2);
    const rounds = option(args, "--rounds", 2);
    const c: PeerCase = {
      unetConfig,
      size: option(args, "--size", 32),
      steps: option(args, "--steps", 6),
      warmup: option(args, "--warmup", 2),
      rank: 4,
      seq: 77,
    };
    const missing = peerMissing();
    if (missing) {
      console.error(`sdtune bench peer: ${missing}`);
      return { error: missing, setup: join(peerDir, "README.md") };
    }
    const loadBefore = loadavg();
    const sdtune: Run[] = [];
    const peer: Run[] = [];
    process.env.SDTUNE_NUM_THREADS = String(threads);
    for (let r = 0; r < rounds; r++) {
      // A B A B: each side in a fresh process, the sides interleaved so drift hits both.
      sdtune.push(runCaseProcess(join(here, "_peer_case.ts"), c, { what: "sdtune side" }) as Run);
      peer.push(runPeer(c, threads) as Run);
    }
    const a = summarise(sdtune);
    const b = summarise(peer);
    const num = (o: Record<string, unknown>, k: string): number => o[k] as number;
    const pa = a.phaseMs as Record<string, number>;
    const pb = b.phaseMs as Record<string, number>;
    return {
      machine: { ...machine(), threadsUsed: threads },
      loadavgBefore: loadBefore.map((x) => Math.round(x * 100) / 100),
      loadavgAfter: loadavg().map((x) => Math.round(x * 100) / 100),
      case: { ...c, unetConfig },
      sdtune: a,
      peer: b,
      ratioSdtuneOverPeer: {
        step: ratio(num(a, "medianStepMs"), num(b, "medianStepMs")),
        ...Object.fromEntries(PHASES.map((p) => [p, ratio(pa[p]!, pb[p]!)])),
        peakRss: ratio(num(a, "peakRssMB"), num(b, "peakRssMB")),
      },
      runs: { sdtune, peer },
    };
  },
};
