// A single-file checkpoint -> a diffusers folder: each tensor renamed (and q/k/v split, 1x1
// convolutions squeezed) straight from the mapped file into the component's safetensors file,
// one tensor at a time, then configs, tokenizer and scheduler; written beside `out` and renamed
// into place, so a reader never sees half a folder.
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

import { writeFileAtomic } from "../../io/atomic.js";
import { writeSafetensors } from "../../io/safetensors.js";
import { native, type SafetensorsFile, type Tensor } from "../../native/index.js";
import { replaceFolder } from "../save_model.js";
import { planSingleFile, type ComponentPlan, type SingleFileOptions, type SingleFilePlan } from "./plan.js";
import { castFloat, thirdOf, type FloatDType } from "./tensors.js";

export interface ToDiffusersOptions extends SingleFileOptions {
  /** Weights in this dtype (default: as stored in the file). */
  dtype?: FloatDType;
  /** Called after each component is written. */
  onFile?: (what: string) => void;
}

/** Writes the diffusers folder `out` for `file`; resolves to the plan it followed. */
export async function convertSingleFileToDiffusers(
  file: string,
  out: string,
  options: ToDiffusersOptions = {},
): Promise<SingleFilePlan> {
  const plan = await planSingleFile(file, options);
  const target = resolve(out);
  await mkdir(dirname(target), { recursive: true });
  const temp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    await writePlan(plan, temp, options);
    await replaceFolder(temp, target);
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
  return plan;
}

/** Writes the folder's files into `dir` (which must not exist yet). */
export async function writePlan(plan: SingleFilePlan, dir: string, options: ToDiffusersOptions = {}): Promise<void> {
  const st = await native().safetensors.open(resolve(plan.info.file));
  try {
    for (const component of plan.components) {
      await mkdir(join(dir, component.name), { recursive: true });
      await writeComponent(st, component, join(dir, component.name, `${component.stem}.safetensors`), options.dtype);
      options.onFile?.(`wrote ${component.name}`);
    }
  } finally {
    st.dispose();
  }
  for (const [rel, text] of [...plan.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFileAtomic(join(dir, rel), text);
  }
}

/** One component's weights: views of the mapped file (copies only for dtype casts). */
async function writeComponent(
  st: SafetensorsFile,
  component: ComponentPlan,
  path: string,
  dtype: FloatDType | undefined,
): Promise<void> {
  const taken = new Map<string, Tensor>();
  const made: Tensor[] = [];
  const source = (key: string): Tensor => {
    let t = taken.get(key);
    if (!t) taken.set(key, (t = st.get(key)));
    return t;
  };
  try {
    const entries: [string, Tensor][] = [];
    for (const name of [...component.tensors.keys()].sort()) {
      const src = component.tensors.get(name)!;
      let t = source(src.key);
      if (src.third !== undefined) made.push((t = thirdOf(t, src.third, `${st.path}: ${src.key}`)));
      if (src.squeeze) made.push((t = t.reshape(t.shape.slice(0, 2))));
      const cast = await castFloat(t, dtype);
      if (cast !== t) made.push(cast);
      entries.push([name, cast]);
    }
    await writeSafetensors(path, entries, { format: "pt" });
  } finally {
    for (const t of made) t.dispose();
    for (const t of taken.values()) t.dispose();
  }
}
