// A loaded Stable Diffusion pipeline: the components of a diffusers StableDiffusionPipeline
// folder, and generate(). Build one with loadPipeline() (src/pipeline/load.ts), or from
// components already in memory (e.g. a trainer's models, for sample images).
import { basename, extname } from "node:path";

import { modelShortHash, safetensorsDataSha256 } from "../io/hash.js";
import { applyLoraFile, fuseLora, removeLora, setLoraScales, unfuseLora } from "../lora/adapters/apply.js";
import { locateLoraFile } from "../lora/formats/load.js";
import type { TextEncoder } from "../models/text_encoder.js";
import type { UNet } from "../models/unet.js";
import type { VAE } from "../models/vae.js";
import type { SchedulerConfig } from "../sched/config.js";
import type { ClipTokenizer } from "../text/clip_tokenizer.js";
import { generateImages, type GenerateResult } from "./generate.js";
import { applyPromptLoras, type LoraSource } from "./prompt_loras.js";
import type { PipelineIndex } from "./layout.js";
import type { GenerateOptions } from "./options.js";

export interface PipelineComponents {
  unet: UNet;
  vae: VAE;
  textEncoder: TextEncoder;
  tokenizer: ClipTokenizer;
  /** scheduler/scheduler_config.json (readSchedulerConfig): the default sampler and its settings. */
  schedulerConfig: SchedulerConfig;
  /** model_index.json (loadPipeline fills it; a synthesized one otherwise). */
  config?: PipelineIndex;
  /** The model's name in PNG parameters ("Model: ..."): the hub id, or the folder's name. */
  name?: string;
  /** The folder the components came from. */
  path?: string;
  /**
   * The UNet's weight files (loadPipeline fills it): their sha256 is the "Model hash" in PNG
   * parameters. A diffusers folder has no single checkpoint file for A1111's hash; the UNet's
   * weights are what changes between fine-tunes of one base.
   */
  modelFiles?: string[];
}

export class StableDiffusionPipeline {
  readonly unet: UNet;
  readonly vae: VAE;
  readonly textEncoder: TextEncoder;
  readonly tokenizer: ClipTokenizer;
  readonly schedulerConfig: SchedulerConfig;
  readonly config: PipelineIndex;
  readonly name: string | undefined;
  readonly path: string | undefined;
  /**
   * Active LoRA adapters, name -> scale, as written into PNG parameters ("<lora:name:scale>",
   * "Lora scales"). Kept by loadLora / setAdapters (below).
   */
  readonly loras: Record<string, number> = {};
  /** Adapter name -> A1111's AutoV3 short hash of the file it was loaded from ("Lora hashes"). */
  readonly loraHashes: Record<string, string> = {};
  /** Adapter name -> the file it was loaded from, for <lora:...> prompt tags (prompt_loras.ts). */
  private readonly loraSources: Record<string, LoraSource> = {};
  private readonly modelFiles: string[] | undefined;
  private modelHashPromise: Promise<string | undefined> | undefined;
  private isDisposed = false;

  constructor(components: PipelineComponents) {
    this.unet = components.unet;
    this.vae = components.vae;
    this.textEncoder = components.textEncoder;
    this.tokenizer = components.tokenizer;
    this.schedulerConfig = components.schedulerConfig;
    this.config = components.config ?? { _class_name: "StableDiffusionPipeline" };
    this.name = components.name;
    this.path = components.path;
    this.modelFiles = components.modelFiles;
  }

  /**
   * A1111's "Model hash": the first 10 hex digits of the sha256 of the UNet weights file
   * (read from the name of a Hugging Face cache blob, else hashed once per pipeline).
   * Undefined for a pipeline built from components without modelFiles.
   */
  async modelHash(): Promise<string | undefined> {
    if (!this.modelFiles?.length) return undefined;
    this.modelHashPromise ??= modelShortHash(this.modelFiles);
    return this.modelHashPromise;
  }

  /** Image pixels per latent pixel (8 for Stable Diffusion). */
  get vaeScaleFactor(): number {
    return this.vae.scaleFactor;
  }

  get disposed(): boolean {
    return this.isDisposed;
  }

  /**
   * Text to image (diffusers' StableDiffusionPipeline.__call__): see GenerateOptions. The
   * whole loop runs natively off the JS thread; PNGs carry their parameters.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    this.checkLive("generate");
    // <lora:name:weight[:lbw=...]> tags pick the active LoRAs for this call (src/pipeline/prompt_loras.ts).
    const host = { models: this.loraModels(), loras: this.loras, sources: this.loraSources };
    const tagged = await applyPromptLoras(host, options);
    try {
      const context = { ...this.context(), ...(tagged.loras ? { loras: tagged.loras } : {}) };
      return await generateImages({ ...context, modelHash: await this.modelHash() }, tagged.options);
    } finally {
      await tagged.restore();
    }
  }

  // ---- LoRA adapters (src/lora/adapters.ts): they live inside the models' layers, so
  // generate() needs nothing more; these keep `loras` (the PNG parameters) in step.

  /**
   * Applies a LoRA file (kohya, diffusers or PEFT keys) to the UNet and text encoder as adapter
   * `name` (default: the file's name) at `scale` (default 1), active alongside those already
   * active (diffusers' load_lora_weights). `blockWeights`: per-block weights in the syntax of
   * AUTOMATIC1111's LoRA Block Weight extension (a preset such as "OUTALL", or 17 / 26 values).
   * Resolves to the adapter name.
   */
  async loadLora(
    path: string,
    options: { name?: string; scale?: number; blockWeights?: string | number[]; signal?: AbortSignal } = {},
  ): Promise<string> {
    this.checkLive("loadLora");
    const scale = options.scale ?? 1;
    const { file } = locateLoraFile(path);
    const name = await applyLoraFile(this.loraModels(), path, {
      name: options.name ?? loraNameOf(path, Object.keys(this.loras)),
      scale,
      ...(options.blockWeights !== undefined ? { blockWeights: options.blockWeights } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    this.loras[name] = scale;
    this.loraSources[name] = {
      path,
      ...(options.blockWeights !== undefined ? { blockWeights: options.blockWeights } : {}),
    };
    this.loraHashes[name] = (await safetensorsDataSha256(file, options.signal)).slice(0, 12);
    return name;
  }

  /** diffusers' set_adapters: exactly these adapters are active, at these scales (default 1 each). */
  async setAdapters(names: string[], scales?: number[]): Promise<void> {
    this.checkLive("setAdapters");
    if (scales && scales.length !== names.length) {
      throw new RangeError(`setAdapters: ${scales.length} scales for ${names.length} adapters`);
    }
    const entries = names.map((n, i): [string, number] => [n, scales?.[i] ?? 1]);
    await setLoraScales(this.loraModels(), entries);
    for (const key of Object.keys(this.loras)) delete this.loras[key];
    for (const [n, s] of entries) this.loras[n] = s;
  }

  /** Removes adapter `name` from the models. */
  async unloadLora(name: string): Promise<void> {
    this.checkLive("unloadLora");
    await removeLora(this.loraModels(), name);
    delete this.loras[name];
    delete this.loraSources[name];
    delete this.loraHashes[name];
  }

  /** Adds the active adapters into the weights (faster generation); unfuseLora restores them exactly. */
  async fuseLora(options: { scale?: number } = {}): Promise<void> {
    this.checkLive("fuseLora");
    await fuseLora(this.loraModels(), options);
  }

  async unfuseLora(): Promise<void> {
    this.checkLive("unfuseLora");
    await unfuseLora(this.loraModels());
  }

  /** Frees every component (idempotent); running work keeps its models until it ends. */
  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.unet.dispose();
    this.vae.dispose();
    this.textEncoder.dispose();
  }

  private checkLive(what: string): void {
    if (this.isDisposed) throw new Error(`StableDiffusionPipeline: ${what}() after dispose()`);
  }

  private loraModels(): { unet: UNet; textEncoder: TextEncoder } {
    return { unet: this.unet, textEncoder: this.textEncoder };
  }

  /** What generateImages needs (src/pipeline/generate.ts); tests use it for the debug options. */
  context(): Parameters<typeof generateImages>[0] {
    return {
      unet: this.unet,
      vae: this.vae,
      textEncoder: this.textEncoder,
      tokenizer: this.tokenizer,
      schedulerConfig: this.schedulerConfig,
      name: this.name,
      loras: this.loras,
      loraHashes: this.loraHashes,
    };
  }
}

/** A LoRA's adapter name from its file (as AUTOMATIC1111's <lora:name:scale>), unique among `taken`. */
function loraNameOf(path: string, taken: string[]): string {
  const file = basename(path.replace(/[/\\]+$/, ""));
  const stem = file.slice(0, file.length - extname(file).length) || file || "lora";
  let name = stem;
  for (let i = 2; taken.includes(name); i++) name = `${stem}_${i}`;
  return name;
}
