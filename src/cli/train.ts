// `sdtune train --config run.yaml [key=value | --key value]... [--resume latest|DIR]`
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import { trainConfigJsonSchema } from "../config/train.js";
import { train } from "../train/run.js";
import type { StageProgress } from "../train/stage.js";
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
  "",
  "Ctrl-C (or SIGTERM) finishes the current step, saves a checkpoint and exits with code 130 (143);",
  "a second Ctrl-C quits at once (saved checkpoints are never torn).",
].join("\n");

export const command: Command = {
  help,
  async run(argv) {
    let config: string | undefined;
    let resume: string | undefined;
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
      else if (arg === "--print-schema") {
        const schema = `${JSON.stringify(trainConfigJsonSchema(), null, 2)}\n`;
        const file = argv[i + 1];
        if (file && !file.startsWith("-")) {
          await mkdir(dirname(file), { recursive: true });
          await writeFile(file, schema);
        } else process.stdout.write(schema);
        return 0;
      } else if (arg.startsWith("--")) {
        const eq = arg.indexOf("=");
        overrides.push(eq > 0 ? arg.slice(2) : `${arg.slice(2)}=${value()}`);
      } else if (arg.includes("=")) overrides.push(arg);
      else throw new UsageError(`unexpected argument "${arg}"`);
    }
    if (!config) throw new UsageError("--config is required");

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
    let bar: ProgressBar | undefined;
    let barKey = "";
    let downloading = false;
    const PHASES: Record<string, string> = {
      train: "training",
      "class-images": "class images",
      cache: "caching latents",
      evaluate: "evaluation",
    };
    try {
      const result = await train(config, {
        resume,
        overrides,
        signal: controller.signal,
        onProgress: (event) => {
          if (event.phase === "notice") {
            // Damaged checkpoints passed over, the dataset report...: on its own lines, between bars.
            bar?.done();
            bar = undefined;
            console.error(`${event.stage ? `${event.stage}: ` : ""}${String(event.message)}`);
            return;
          }
          if (event.phase === "download") {
            const e = event as { fileBytes?: number; file?: string };
            if (process.stderr.isTTY && e.file) {
              process.stderr.write(`\rdownloading ${e.file} ${formatBytes(e.fileBytes ?? 0)}   `);
              downloading = true;
            }
            return;
          }
          const e = event as StageProgress;
          const phase = PHASES[e.phase];
          if (!phase || typeof e.step !== "number" || typeof e.total !== "number") return;
          const key = `${e.stage} ${phase}`;
          if (downloading) {
            process.stderr.write("\n");
            downloading = false;
          }
          if (!bar || barKey !== key) {
            bar?.done();
            if (!process.stderr.isTTY) console.error(`${key}...`);
            barKey = key;
            const unit = e.phase === "train" ? "step" : "img";
            bar = new ProgressBar({ label: key, total: e.total, unit, initial: e.phase === "train" ? e.step : 0 });
          }
          bar.update(e.step, e.loss === undefined ? {} : { loss: e.loss, lr: e.lr ?? 0 });
        },
      });
      bar?.done();
      console.log(`run folder: ${result.outputDir}`);
      for (const stage of result.stages) {
        for (const [format, file] of Object.entries(stage.loraFiles))
          console.log(`  ${stage.name}: LoRA (${format}) ${file}`);
        if (stage.fullModel) console.log(`  ${stage.name}: model ${stage.fullModel}`);
      }
      return 0;
    } catch (error) {
      bar?.done();
      if ((error as Error).name === "AbortError" && signalName) {
        console.error(`sdtune train: ${(error as Error).message}`);
        return signalName === "SIGTERM" ? 143 : 130;
      }
      throw error;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  },
};
