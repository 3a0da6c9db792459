// `sdtune train --config run.yaml [key=value | --key value]... [--resume latest|DIR]`
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import { train, trainConfigJsonSchema, type StageProgress, type TrainProgress, type TrainResult } from "../index.js";
import { UsageError, type Command } from "./command.js";
import { formatBytes, ProgressBar } from "./progress.js";

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
    const progress = new TrainProgressView();
    try {
      const result = await train(args.config, {
        resume: args.resume,
        overrides: args.overrides,
        ...(args.nprocPerNode ? { distributed: { nprocPerNode: args.nprocPerNode } } : {}),
        signal: stop.signal,
        onProgress: (event) => progress.show(event),
      });
      progress.done();
      printResult(result);
      return 0;
    } catch (error) {
      progress.done();
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
}

function parseTrainArgs(argv: string[]): TrainArgs {
  let config: string | undefined;
  let resume: string | undefined;
  let nproc: string | undefined;
  const overrides: string[] = [];
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
    else if (arg === "--print-schema") {
      const file = argv[i + 1];
      return { config: "", overrides, printSchema: { file: file && !file.startsWith("-") ? file : undefined } };
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
  return { config, resume, overrides, nprocPerNode };
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

const PHASES: Record<string, string> = {
  train: "training",
  "class-images": "class images",
  cache: "caching latents",
  evaluate: "evaluation",
};

/** One progress bar per stage and phase; download lines in between. */
class TrainProgressView {
  private bar: ProgressBar | undefined;
  private barKey = "";
  private downloading = false;

  show(event: TrainProgress): void {
    if (event.phase === "notice") {
      // Damaged checkpoints passed over, the dataset report...: on their own lines, between bars.
      this.done();
      console.error(`${event.stage ? `${event.stage}: ` : ""}${String(event.message)}`);
      return;
    }
    if (event.phase === "download") {
      const e = event as { fileBytes?: number; file?: string };
      if (process.stderr.isTTY && e.file) {
        process.stderr.write(`\rdownloading ${e.file} ${formatBytes(e.fileBytes ?? 0)}   `);
        this.downloading = true;
      }
      return;
    }
    const e = event as StageProgress;
    const phase = PHASES[e.phase];
    if (!phase || typeof e.step !== "number" || typeof e.total !== "number") return;
    const key = `${e.stage} ${phase}`;
    if (this.downloading) {
      process.stderr.write("\n");
      this.downloading = false;
    }
    if (!this.bar || this.barKey !== key) {
      this.bar?.done();
      if (!process.stderr.isTTY) console.error(`${key}...`);
      this.barKey = key;
      const unit = e.phase === "train" ? "step" : "img";
      this.bar = new ProgressBar({ label: key, total: e.total, unit, initial: e.phase === "train" ? e.step : 0 });
    }
    this.bar.update(e.step, e.loss === undefined ? {} : { loss: e.loss, lr: e.lr ?? 0 });
  }

  done(): void {
    this.bar?.done();
    this.bar = undefined;
  }
}

function printResult(result: TrainResult): void {
  console.log(`run folder: ${result.outputDir}`);
  for (const stage of result.stages) {
    for (const [format, file] of Object.entries(stage.loraFiles))
      console.log(`  ${stage.name}: LoRA (${format}) ${file}`);
    if (stage.fullModel) console.log(`  ${stage.name}: model ${stage.fullModel}`);
  }
}
