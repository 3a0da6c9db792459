// Computing latents: render the planned images (decoding the next group while the VAE
// encodes this one), encode one bucket size per VAE call, and store each posterior
// (mean and std) under its key. Images that fail to decode are recorded in the store
// and the dataset report, so later runs skip them.
import { native, type ProgressEvent } from "../native/index.js";
import type { VAE } from "../models/vae.js";
import { tensorFrom } from "../tensor.js";
import { Limiter, type BatchOptions } from "../data/batches.js";
import { abortError } from "../data/files.js";
import { parseBackground, renderImage } from "../data/image.js";
import { DATA_DEFAULTS, type Dataset, type DatasetIssue } from "../data/types.js";
import type { PlannedLatent } from "./latent_plan.js";
import { tensorBytes, type Entry, type ShardStore } from "./store.js";

export interface EnsureOptions {
  /** The VAE the cache was opened for (same folder, same dtype). */
  vae: VAE;
  /** Called after each encoded group ("cache.latents", step = latents done). */
  onProgress?: (event: ProgressEvent) => void;
  /** Stops between groups; what was computed so far is kept. */
  signal?: AbortSignal;
  /** Images encoded per VAE call (default 4). */
  batchSize?: number;
  /** Images decoded at once (default 4). */
  concurrency?: number;
}

type Rendered = Uint8Array | Error;
type Decoded = { p: PlannedLatent; bytes: Uint8Array };

/**
 * Renders, encodes and stores every latent of `todo` (the VAE already checked, `todo`
 * not empty); what was computed is flushed also when cancelled or failed.
 */
export async function computeLatents(
  store: ShardStore,
  dataset: Dataset,
  options: BatchOptions,
  todo: readonly PlannedLatent[],
  run: EnsureOptions,
): Promise<{ computed: number; failed: DatasetIssue[] }> {
  const failed: DatasetIssue[] = [];
  const groups = groupByBucket(todo, run.batchSize ?? 4);
  const render = renderer(dataset, options, run.concurrency ?? 4);
  let computed = 0;
  let done = 0;
  // Decoding of the next group overlaps the VAE on this one.
  let ahead: Promise<Rendered[]> | undefined = render(groups[0]!);
  try {
    for (let g = 0; g < groups.length; g++) {
      if (run.signal?.aborted) throw abortError();
      const group = groups[g]!;
      const rendered = await ahead!;
      ahead = g + 1 < groups.length ? render(groups[g + 1]!) : undefined;
      const ok = decodedOrRecorded(store, dataset, options, group, rendered, failed);
      if (ok.length > 0) computed += await encodeGroup(store, ok, run);
      done += group.length;
      run.onProgress?.({ phase: "cache.latents", step: done, total: todo.length });
    }
  } finally {
    void ahead?.catch(() => undefined);
    await store.flush(); // keep what was computed, also when cancelled or failed
  }
  return { computed, failed };
}

/** Groups of one bucket size, at most `batchSize` each, so each VAE call gets one tensor. */
function groupByBucket(todo: readonly PlannedLatent[], batchSize: number): PlannedLatent[][] {
  const byBucket = new Map<string, PlannedLatent[]>();
  for (const p of todo) {
    const id = `${p.bucket.width}x${p.bucket.height}`;
    byBucket.set(id, [...(byBucket.get(id) ?? []), p]);
  }
  const groups: PlannedLatent[][] = [];
  for (const list of byBucket.values()) {
    for (let i = 0; i < list.length; i += batchSize) groups.push(list.slice(i, i + batchSize));
  }
  return groups;
}

/** Renders a group's images (at most `concurrency` at once); a failure becomes its Error. */
function renderer(
  dataset: Dataset,
  options: BatchOptions,
  concurrency: number,
): (group: PlannedLatent[]) => Promise<Rendered[]> {
  const limiter = new Limiter(concurrency);
  const background = parseBackground(options.background);
  return (group) =>
    Promise.all(
      group.map((p) =>
        limiter
          .run(() =>
            renderImage({
              source: p.item.source,
              bucket: p.bucket,
              fit: p.fit,
              left: p.left,
              top: p.top,
              flip: p.flip,
              background,
              kernel: options.kernel ?? "lanczos3",
              maxPixels: dataset.spec.maxPixels ?? DATA_DEFAULTS.maxPixels,
            }),
          )
          .catch((error: unknown) => (error instanceof Error ? error : new Error(String(error)))),
      ),
    );
}

/** The decoded images of a group; each new decode failure is recorded (store, report, onIssue, `failed`). */
function decodedOrRecorded(
  store: ShardStore,
  dataset: Dataset,
  options: BatchOptions,
  group: PlannedLatent[],
  rendered: Rendered[],
  failed: DatasetIssue[],
): Decoded[] {
  const ok: Decoded[] = [];
  rendered.forEach((r, i) => {
    const p = group[i]!;
    if (r instanceof Error) {
      if (store.failure(p.item.key)) return;
      const issue: DatasetIssue = {
        file: p.item.name,
        code: "decode-failed",
        reason: `the image failed to decode while caching latents and is skipped: ${r.message}`,
        skipped: true,
      };
      store.putFailure(p.item.key, issue.reason);
      dataset.report.push(issue);
      options.onIssue?.(issue);
      failed.push(issue);
    } else ok.push({ p, bytes: r });
  });
  return ok;
}

/** Encodes one group (one bucket size) and stores each latent; resolves to the number stored. */
async function encodeGroup(store: ShardStore, ok: Decoded[], run: EnsureOptions): Promise<number> {
  const { width, height } = ok[0]!.p.bucket;
  const stride = width * height * 3;
  const hwc = new Uint8Array(ok.length * stride);
  ok.forEach((o, i) => hwc.set(o.bytes, i * stride));
  const bytes = tensorFrom(hwc, [ok.length, height, width, 3], "uint8");
  const pixels = await native()
    .data.pixelsToTensor(bytes)
    .finally(() => bytes.dispose());
  let dist;
  try {
    dist = await run.vae.encode(pixels, { signal: run.signal });
  } finally {
    pixels.dispose();
  }
  try {
    const shape = dist.mean.shape.slice(1); // [C, h, w]
    const dtype = dist.mean.dtype;
    const mean = tensorBytes(dist.mean);
    const std = tensorBytes(dist.std);
    const per = mean.byteLength / ok.length;
    for (let i = 0; i < ok.length; i++) {
      const { p } = ok[i]!;
      const entry: Entry = new Map([
        ["mean", { dtype, shape, bytes: mean.slice(i * per, (i + 1) * per) }],
        ["std", { dtype, shape, bytes: std.slice(i * per, (i + 1) * per) }],
      ]);
      await store.put(p.key, entry, {
        item: p.item.name,
        itemKey: p.item.key,
        bucket: [p.bucket.width, p.bucket.height],
        resized: [p.fit.resizedWidth, p.fit.resizedHeight],
        crop: [p.left, p.top],
        flip: p.flip,
      });
    }
  } finally {
    for (const t of [dist.moments, dist.mean, dist.logvar, dist.std]) t.dispose();
  }
  return ok.length;
}
