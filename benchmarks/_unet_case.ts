// One UNet benchmark case, run in its own process by benchmarks/unet.ts so that the
// RSS high-water mark (VmHWM) belongs to this case alone. Prints one JSON line.
import { UNet } from "../src/models/unet.js";
import { native, type Tensor } from "../src/native/index.js";
import { caseMain, mb, median, peakRssBytes, time } from "./_util.js";

export interface UNetCase {
  model: { dir: string } | { config: Record<string, unknown> };
  mode: "forward" | "forward+backward";
  checkpointing: boolean;
  batch: number;
  height: number;
  width: number;
  textLength: number;
  repeats: number;
  threads?: number;
}

const maxRssBytes = peakRssBytes;

async function runCase(c: UNetCase): Promise<Record<string, unknown>> {
  if (c.threads) native().setNumThreads(c.threads);
  const rssStart = process.memoryUsage().rss;
  const unet = "dir" in c.model ? await UNet.load(c.model.dir) : await UNet.fromConfig(c.model.config, { seed: 0 });
  const params = unet.parameterInfo().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  const cross = unet.config.cross_attention_dim;
  const sample = native().ops.randn([c.batch, unet.config.in_channels, c.height, c.width], { seed: 1 });
  const ehs = native().ops.randn([c.batch, c.textLength, Array.isArray(cross) ? cross[0]! : cross], { seed: 2 });
  const target = native().ops.randn([c.batch, unet.config.out_channels, c.height, c.width], { seed: 3 });
  const timestep = 500;
  unet.setGradientCheckpointing(c.checkpointing);
  const rssLoaded = process.memoryUsage().rss;
  const peakBeforeRun = maxRssBytes();

  const step = async (): Promise<void> => {
    if (c.mode === "forward") {
      (await unet.forward(sample, timestep, ehs)).dispose();
    } else {
      const { loss, output, grads } = await unet.lossAndGradients(sample, timestep, ehs, target);
      for (const g of Object.values(grads) as Tensor[]) g.dispose();
      loss.dispose();
      output.dispose();
    }
  };
  const ms = await time(step, c.repeats, 1);
  const peak = maxRssBytes();
  unet.dispose();
  return {
    parameters: params,
    medianMs: Math.round(median(ms) * 10) / 10,
    runsMs: ms.map((x) => Math.round(x * 10) / 10),
    rssBeforeLoadMB: mb(rssStart),
    rssAfterLoadMB: mb(rssLoaded),
    peakRssMB: mb(peak),
    // The high-water mark reached while stepping, above the resident size once the model was loaded.
    peakAboveLoadedMB: mb(Math.max(peak, peakBeforeRun) - rssLoaded),
    peakGrewDuringRun: peak > peakBeforeRun,
  };
}

await caseMain<UNetCase>(runCase);
