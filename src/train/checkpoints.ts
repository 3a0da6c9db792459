// Checkpoint folders that are either whole or invisible. A checkpoint is written
// into checkpoint-<step>.partial-<pid>/, every file fsynced, its manifest written
// last, then the folder is renamed to checkpoint-<step>/. A process killed midway
// (even with SIGKILL) leaves only a .partial folder, which `latest` never picks
// and the next run removes. Only the newest `keep` checkpoints are kept. The manifest
// carries a digest of everything in it (the files' hashes and the resume state), so an
// edit to any byte of a checkpoint is found on load.
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join, resolve } from "node:path";

import { fsyncFile, syncDir, writeFileAtomic } from "../io/atomic.js";

const MANIFEST = "manifest.json";
const NAME = /^checkpoint-(\d+)$/;

export interface CheckpointManifest<State> {
  step: number;
  createdAt: string;
  /** file name -> sha256, checked when the checkpoint is loaded. */
  files: Record<string, string>;
  state: State;
  /** sha256 of the manifest's other fields (see manifestDigest). */
  digest: string;
}

/** A checkpoint folder that cannot be used, and why. */
export interface DamagedCheckpoint {
  dir: string;
  reason: string;
}

export interface Checkpoint<State> {
  step: number;
  dir: string;
  manifest: CheckpointManifest<State>;
}

export class CheckpointStore<State> {
  constructor(
    readonly dir: string,
    private readonly keep: number = 3,
  ) {}

  /**
   * Writes a checkpoint: `writeFiles(folder)` writes its files into the partial
   * folder; the manifest (with their hashes and `state`) is written last.
   */
  async save(step: number, state: State, writeFiles: (folder: string) => Promise<void>): Promise<Checkpoint<State>> {
    await mkdir(this.dir, { recursive: true });
    const final = join(this.dir, `checkpoint-${step}`);
    const partial = `${final}.partial-${process.pid}`;
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial, { recursive: true });
    await writeFiles(partial);
    await crashTestPause(step);
    const files: Record<string, string> = {};
    for (const name of (await readdir(partial)).sort()) {
      const path = join(partial, name);
      await fsyncFile(path);
      files[name] = await sha256File(path);
    }
    const body = { step, createdAt: new Date().toISOString(), files, state };
    const manifest: CheckpointManifest<State> = { ...body, digest: manifestDigest(body) };
    await writeFileAtomic(join(partial, MANIFEST), JSON.stringify(manifest, null, 2));
    await syncDir(partial);
    // Replacing an existing checkpoint of the same step: move the old one aside first.
    if (existsSync(final)) await rm(final, { recursive: true, force: true });
    await rename(partial, final);
    await syncDir(this.dir);
    await this.prune();
    return { step, dir: final, manifest };
  }

  /** Complete checkpoints, oldest first. */
  async list(): Promise<{ step: number; dir: string }[]> {
    if (!existsSync(this.dir)) return [];
    const out: { step: number; dir: string }[] = [];
    for (const name of await readdir(this.dir)) {
      const match = NAME.exec(name);
      if (match && existsSync(join(this.dir, name, MANIFEST)))
        out.push({ step: Number(match[1]), dir: join(this.dir, name) });
    }
    return out.sort((a, b) => a.step - b.step);
  }

  /** The newest complete checkpoint whose files match their manifest, or undefined. */
  async latest(): Promise<Checkpoint<State> | undefined> {
    return (await this.newestValid()).checkpoint;
  }

  /**
   * The newest valid checkpoint, and the newer ones passed over as damaged (disk trouble,
   * manual edits), newest first, each with its reason: callers say what they skipped.
   */
  async newestValid(): Promise<{ checkpoint?: Checkpoint<State>; damaged: DamagedCheckpoint[] }> {
    const all = await this.list();
    const damaged: DamagedCheckpoint[] = [];
    for (let i = all.length - 1; i >= 0; i--) {
      try {
        return { checkpoint: await this.load(all[i]!.dir), damaged };
      } catch (error) {
        damaged.push({ dir: all[i]!.dir, reason: (error as Error).message });
      }
    }
    return { damaged };
  }

  /** Loads and verifies one checkpoint folder. */
  async load(dir: string): Promise<Checkpoint<State>> {
    const folder = resolve(dir);
    const manifestPath = join(folder, MANIFEST);
    if (!existsSync(manifestPath)) {
      throw new Error(
        `${folder}: not a complete checkpoint (no ${MANIFEST}); it may have been interrupted while saving`,
      );
    }
    const manifest = await readManifest<State>(manifestPath);
    for (const [name, hash] of Object.entries(manifest.files)) {
      const path = join(folder, name);
      if (!existsSync(path)) throw new Error(`${folder}: checkpoint file ${name} is missing`);
      if ((await sha256File(path)) !== hash)
        throw new Error(`${folder}: checkpoint file ${name} is damaged (hash mismatch)`);
    }
    return { step: manifest.step, dir: folder, manifest };
  }

  /** Removes folders left by interrupted saves (of processes that are gone). */
  async removePartial(): Promise<string[]> {
    if (!existsSync(this.dir)) return [];
    const removed: string[] = [];
    for (const name of await readdir(this.dir)) {
      const match = /^checkpoint-\d+\.partial-(\d+)$/.exec(name);
      if (match && (Number(match[1]) === process.pid || !processAlive(Number(match[1])))) {
        await rm(join(this.dir, name), { recursive: true, force: true });
        removed.push(name);
      }
    }
    return removed;
  }

  /**
   * Sets aside the checkpoints after `step` (resuming from an older one starts a new branch):
   * renamed to checkpoint-N.abandoned-<time>, which `list` and `latest` ignore.
   */
  async abandonAfter(step: number): Promise<string[]> {
    const moved: string[] = [];
    for (const c of await this.list()) {
      if (c.step <= step) continue;
      const target = `${c.dir}.abandoned-${Date.now()}`;
      await rename(c.dir, target);
      moved.push(target);
    }
    return moved;
  }

  private async prune(): Promise<void> {
    if (this.keep <= 0) return;
    const all = await this.list();
    for (const old of all.slice(0, Math.max(0, all.length - this.keep)))
      await rm(old.dir, { recursive: true, force: true });
  }
}

/**
 * SDTUNE_CHECKPOINT_DELAY="STEP:MS" holds the save of checkpoint STEP between its files and
 * its manifest for MS milliseconds: a window in which tests kill the process to prove that a
 * torn save is never used.
 */
async function crashTestPause(step: number): Promise<void> {
  const [at, ms] = (process.env.SDTUNE_CHECKPOINT_DELAY ?? "").split(":").map(Number);
  if (at === step && ms! > 0) await new Promise((r) => setTimeout(r, ms));
}

/** sha256 of a manifest's fields (in the order written), which covers the resume state too. */
function manifestDigest(body: Omit<CheckpointManifest<unknown>, "digest">): string {
  const { step, createdAt, files, state } = body;
  return createHash("sha256").update(JSON.stringify({ step, createdAt, files, state })).digest("hex");
}

/** A manifest whose digest matches its content; throws naming the file otherwise. */
async function readManifest<State>(path: string): Promise<CheckpointManifest<State>> {
  let manifest: CheckpointManifest<State>;
  try {
    manifest = JSON.parse(await readFile(path, "utf8")) as CheckpointManifest<State>;
  } catch (error) {
    throw new Error(`${path}: damaged (${(error as Error).message})`);
  }
  if (!manifest || typeof manifest !== "object" || typeof manifest.digest !== "string") {
    throw new Error(`${path}: damaged or written by an older sdtune (no digest); this checkpoint cannot be verified`);
  }
  const valid =
    typeof manifest.step === "number" &&
    manifest.files !== null &&
    typeof manifest.files === "object" &&
    manifest.state !== null &&
    typeof manifest.state === "object";
  if (!valid || manifestDigest(manifest) !== manifest.digest) {
    throw new Error(`${path}: damaged or edited (its content does not match its digest)`);
  }
  return manifest;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const handle = await open(path, "r");
  try {
    for await (const chunk of handle.createReadStream()) hash.update(chunk as Buffer);
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}
