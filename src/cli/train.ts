// `sdtune train --config run.yaml [key=value | --key value]... [--resume latest|DIR]`
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import { train, trainConfigJsonSchema, type ProgressMode, type TrainResult } from "../index.js";
import { UsageError, type Command } from "./command.js";

const help = [
  "usage: sdtune train --config run.yaml [--resume latest|CHECKPOINT_DIR] [key=value ...] [--key value ...]",
  "       sdtune train --print-schema [FILE]",
  "",
  "Runs the training the config describes (YAML or JSON; see the README's training section).",
  "Any config key can be overridden: learning_rate=5e-5, --max_train_steps 200, stages.1.lora.rank=8.",
  "",
  "  --config FILE      the run config",
  "  --resume latest    continue the run in output_dir from its newest checkpoint (or a checkpoint folder)",
  "  --print-schema     write the config's JSON Schema (for editors) to FILE or stdout",
  "  --nproc-per-node N data parallel: train with N worker processes on this machine (global batch =",
  "                     train_batch_size x N); under torchrun/Slurm, RANK, WORLD_SIZE, MASTER_ADDR and",
  "                     MASTER_PORT make each process join as that rank instead",
  "  --progress MODE    bar (a terminal's default), plain (one line every --progress-interval seconds:",
  "                     step, epoch, loss, lr, it/s, ETA; the default when stderr is not a terminal) or none",
  "  --progress-interval SECONDS   between plain lines [10]",
  "",
  "Ctrl-C (or SIGTERM) finishes the current step, saves a checkpoint and exits with code 130 (143);",
  "a second Ctrl-C quits at once (saved checkpoints are never torn).",
].join("\n");

export const command: Command = {
  help,
  async run(argv) {
    const args = parseTrainArgs(argv);
    if (args.printSchema) return printSchema(args.printSchema.file);
    const stop = stopOnSignals();
    try {
      const result = await train(args.config, {
        resume: args.resume,
        overrides: args.overrides,
        ...(args.nprocPerNode ? { distributed: { nprocPerNode: args.nprocPerNode } } : {}),
        signal: stop.signal,
        progress: args.progress,
        progressInterval: args.progressInterval,
      });
      printResult(result);
      return 0;
    } catch (error) {
      if ((error as Error).name === "AbortError" && stop.received()) {
        console.error(`sdtune train: ${(error as Error).message}`);
        return stop.received() === "SIGTERM" ? 143 : 130;
      }
      throw error;
    } finally {
      stop.dispose();
    }
  },
};

interface TrainArgs {
  config: string;
  resume?: string;
  overrides: string[];
  printSchema?: { file?: string };
  nprocPerNode?: number;
  progress: ProgressMode;
  progressInterval?: number;
}

const MODES: readonly string[] = ["auto", "bar", "plain", "none"];

function parseTrainArgs(argv: string[]): TrainArgs {
  let config: string | undefined;
  let resume: string | undefined;
  let nproc: string | undefined;
  const overrides: string[] = [];
  let progress: ProgressMode = "auto";
  let progressInterval: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    if (arg === "--config" || arg === "-c") config = value();
    else if (arg.startsWith("--config=")) config = arg.slice(9);
    else if (arg === "--resume") resume = value();
    else if (arg.startsWith("--resume=")) resume = arg.slice(9);
    else if (arg === "--nproc-per-node") nproc = value();
    else if (arg.startsWith("--nproc-per-node=")) nproc = arg.slice(17);
    else if (arg === "--progress" || arg.startsWith("--progress=")) {
      const mode = arg === "--progress" ? value() : arg.slice(11);
      if (!MODES.includes(mode)) throw new UsageError(`--progress: expected bar, plain, none or auto, got "${mode}"`);
      progress = mode as ProgressMode;
    } else if (arg === "--progress-interval" || arg.startsWith("--progress-interval=")) {
      const text = arg === "--progress-interval" ? value() : arg.slice(20);
      progressInterval = Number(text);
      if (!(progressInterval > 0)) throw new UsageError(`--progress-interval: expected seconds > 0, got "${text}"`);
    } else if (arg === "--print-schema") {
      const file = argv[i + 1];
      const printSchema = { file: file && !file.startsWith("-") ? file : undefined };
      return { config: "", overrides, printSchema, progress };
    } else if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      overrides.push(eq > 0 ? arg.slice(2) : `${arg.slice(2)}=${value()}`);
    } else if (arg.includes("=")) overrides.push(arg);
    else throw new UsageError(`unexpected argument "${arg}"`);
  }
  if (!config) throw new UsageError("--config is required");
  const nprocPerNode = nproc === undefined ? undefined : Number(nproc);
  if (nprocPerNode !== undefined && !(Number.isInteger(nprocPerNode) && nprocPerNode >= 1)) {
    throw new UsageError(`--nproc-per-node needs a whole number of processes >= 1, got "${nproc}"`);
  }
  return { config, resume, overrides, nprocPerNode, progress, progressInterval };
}

async function printSchema(file: string | undefined): Promise<number> {
  const schema = `${JSON.stringify(trainConfigJsonSchema(), null, 2)}\n`;
  if (!file) {
    process.stdout.write(schema);
    return 0;
  }
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, schema);
  return 0;
}

/** Ctrl-C / SIGTERM abort the run at the next step boundary (a checkpoint is saved); a second one quits. */
function stopOnSignals(): { signal: AbortSignal; received(): NodeJS.Signals | undefined; dispose(): void } {
  const controller = new AbortController();
  let signalName: NodeJS.Signals | undefined;
  const onSignal = (name: NodeJS.Signals): void => {
    if (signalName) {
      // A second Ctrl-C quits now: checkpoint writes are atomic, so nothing saved is lost.
      process.stderr.write(`\n${name} again: stopping without saving the current step\n`);
      process.exit(name === "SIGTERM" ? 143 : 130);
    }
    signalName = name;
    process.stderr.write(`\n${name}: finishing the current step and saving a checkpoint (again to quit now)...\n`);
    controller.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    signal: controller.signal,
    received: () => signalName,
    dispose: () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}

function printResult(result: TrainResult): void {
  console.log(`run folder: ${result.outputDir}`);
  for (const stage of result.stages) {
    for (const [format, file] of Object.entries(stage.loraFiles))
      console.log(`  ${stage.name}: LoRA (${format}) ${file}`);
    if (stage.fullModel) console.log(`  ${stage.name}: model ${stage.fullModel}`);
  }
}
