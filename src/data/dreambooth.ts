// DreamBooth: a few instance photos trained with one instance prompt, plus
// optional class images (prior preservation) with a class prompt. Class images
// that do not exist yet are counted in classImagesNeeded: training generates
// them into classDir and opens the dataset again.
import { stat } from "node:fs/promises";
import { join } from "node:path";

import { captionCandidates, kohyaFolder, normaliseExt } from "./captions.js";
import { isImageFile, walkFiles } from "./files.js";
import type { ReaderResult } from "./imagefolder.js";
import type { Candidate } from "./probe.js";
import { DatasetError, type DatasetIssue, type DatasetSpec, type OpenOptions } from "./types.js";

export async function readDreamBooth(
  root: string,
  spec: DatasetSpec,
  options: OpenOptions,
  report: DatasetIssue[],
): Promise<ReaderResult & { classCandidates: Candidate[] }> {
  const prompt = spec.instancePrompt?.trim();
  if (!prompt) {
    throw new DatasetError(`a dreambooth dataset needs instancePrompt (e.g. "a photo of sks dog") for ${root}`);
  }
  const repeats = spec.repeats ?? 1;
  if (!(Number.isInteger(repeats) && repeats >= 1))
    throw new DatasetError(`repeats must be an integer >= 1, got ${repeats}`);

  const files = await walkFiles(root, options.signal);
  const images = files.filter(isImageFile);
  let candidates: Candidate[];
  if (spec.captionExt !== undefined) {
    // Per-image captions when asked for, the instance prompt where an image has none (kohya's DreamBooth).
    const found = await captionCandidates(
      root,
      images,
      new Set(files),
      normaliseExt(spec.captionExt),
      spec,
      options,
      report,
      "instance",
      prompt,
    );
    candidates = found.filter((c): c is Candidate => c !== undefined);
  } else {
    candidates = images.map((rel) => ({
      name: rel,
      source: { kind: "file", path: join(root, rel) },
      caption: prompt,
      role: "instance",
      repeats: 1,
    }));
  }
  // Without an explicit repeats, a kohya "<N>_<class>" folder gives its images N (captionCandidates did).
  candidates = candidates.map((c) => ({
    ...c,
    repeats: spec.repeats ?? (spec.captionExt !== undefined ? c.repeats : (kohyaFolder(c.name)?.repeats ?? 1)),
  }));
  candidates = candidates.filter((c) => c.repeats >= 1);

  const classCandidates: Candidate[] = [];
  if (spec.classDir !== undefined) {
    const classPrompt = spec.classPrompt?.trim();
    if (!classPrompt)
      throw new DatasetError(`classDir ${spec.classDir} is set but classPrompt is not (e.g. "a photo of a dog")`);
    if (await isDirectory(spec.classDir)) {
      for (const rel of (await walkFiles(spec.classDir, options.signal)).filter(isImageFile)) {
        classCandidates.push({
          name: `class:${rel}`,
          source: { kind: "file", path: join(spec.classDir, rel) },
          caption: classPrompt,
          role: "class",
          repeats: 1,
        });
      }
    }
  }
  const searched = `${root} (dreambooth: ${images.length} instance image files${
    spec.classDir !== undefined ? `; class images in ${spec.classDir}: ${classCandidates.length}` : ""
  })`;
  return { candidates, classCandidates, splits: [], searched };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
