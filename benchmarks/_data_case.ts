// One timed pass of sdtune's dataset pipeline (openDataset + createBatchStream, as the trainer uses
// them) over a folder of JPEGs, in its own process so that the thread limits hold from the start.
// "One core": UV_THREADPOOL_SIZE=1 (set by the parent in this process's environment),
// sharp.concurrency(1), one torch thread and one image decoded at a time.
import sharp from "sharp";

import { createBatchStream, openDataset } from "../src/data/index.js";
import { runtimeInfo, setNumThreads } from "../src/index.js";
import { caseMain } from "./_util.js";

export interface DataCase {
  dir: string;
  resolution: number;
  oneCore: boolean;
}

await caseMain(async (c: DataCase) => {
  if (c.oneCore) {
    sharp.concurrency(1);
    setNumThreads(1);
  }
  runtimeInfo(); // loads the addon (libtorch) before the clock starts, in both modes
  const dataset = await openDataset({ path: c.dir, type: "imagefolder" });
  const t0 = performance.now();
  const stream = createBatchStream(dataset, {
    resolution: c.resolution,
    batchSize: 4,
    epochs: 1,
    concurrency: c.oneCore ? 1 : 4,
    prefetch: c.oneCore ? 1 : 4,
    seed: 0,
  });
  let images = 0;
  for await (const batch of stream) {
    images += batch.pixels.shape[0]!;
    batch.pixels.dispose();
  }
  return { images, ms: performance.now() - t0, sharpThreads: sharp.concurrency() };
});
