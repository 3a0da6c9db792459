// `sdtune demo [--quick] [--dir DIR]`: the two-stage DreamBooth LoRA demo on a tiny
// generated model (see src/demo). Prints where the LoRAs, samples and report are.
import { join, relative } from "node:path";

import { runDemo } from "../index.js";
import { parseCommandArgs, type Command } from "./command.js";

export const command: Command = {
  help: [
    "usage: sdtune demo [--quick] [--dir DIR]",
    "",
    "Generates a tiny, randomly initialised Stable-Diffusion-architecture model and a small",
    "image set, then runs a two-stage DreamBooth LoRA training on the CPU: stage 1 learns a",
    "thumbs-up concept, stage 2 a personal subject on top of it. Nothing is downloaded.",
    "",
    "  --quick     a few steps only (smoke test)",
    "  --dir DIR   where everything goes (default ./sdtune-demo)",
  ].join("\n"),
  async run(argv) {
    const { values } = parseCommandArgs(argv, { quick: { type: "boolean" }, dir: { type: "string" } }, false);
    const controller = new AbortController();
    const onSignal = (): void => controller.abort();
    process.once("SIGINT", onSignal);
    const started = performance.now();
    try {
      const result = await runDemo({
        dir: values.dir as string | undefined,
        quick: Boolean(values.quick),
        signal: controller.signal,
        progress: "auto", // a bar on a terminal, plain lines otherwise (src/train/progress_view.ts)
      });
      const here = (p: string): string => relative(process.cwd(), p) || ".";
      console.log(`\ndemo finished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
      for (const stage of result.stages) {
        console.log(
          `  ${stage.name}: LoRA ${here(stage.loraFiles.kohya ?? stage.loraFiles.diffusers ?? "")} (loss ${stage.lastLoss.toFixed(4)})`,
        );
        console.log(`  ${stage.name}: samples ${here(join(result.outputDir, stage.name, "samples"))}`);
      }
      console.log(`  report: ${here(result.report)}`);
      console.log(`  metrics: ${here(join(result.outputDir, "metrics.jsonl"))}`);
      console.log("\nThe demo model is tiny and randomly initialised: its images are noise-like by design.");
      console.log("See the README for the same config on stabilityai/stable-diffusion-2-base.");
      return 0;
    } finally {
      process.off("SIGINT", onSignal);
    }
  },
};
