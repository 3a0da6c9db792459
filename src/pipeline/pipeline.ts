// A loaded Stable Diffusion pipeline: the components of a diffusers StableDiffusionPipeline
// folder, and generate(). Build one with loadPipeline() (src/pipeline/load.ts), or from
// components already in memory (e.g. a trainer's models, for sample images).
import { basename, extname } from "node:path";

import { applyLoraFile, fuseLora, removeLora, setLoraScales, unfuseLora } from "../lora/adapters/apply.js";
import type { TextEncoder } from "../models/text_encoder.js";
import type { UNet } from "../models/unet.js";
import type { VAE } from "../models/vae.js";
import type { SchedulerConfig } from "../sched/config.js";
import type { ClipTokenizer } from "../text/clip_tokenizer.js";
import { generateImages, type GenerateResult } from "./generate.js";
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
    return generateImages(this.context(), options);
  }

  // ---- LoRA adapters (src/lora/adapters.ts): they live inside the models' layers, so
  // generate() needs nothing more; these keep `loras` (the PNG parameters) in step.

  /**
   * Applies a LoRA file (kohya, diffusers or PEFT keys) to the UNet and text encoder as adapter
   * `name` (default: the file's name) at `scale` (default 1), active alongside those already
   * active (diffusers' load_lora_weights). Resolves to the adapter name.
   */
  async loadLora(path: string, options: { name?: string; scale?: number; signal?: AbortSignal } = {}): Promise<string> {
    this.checkLive("loadLora");
    const scale = options.scale ?? 1;
    const name = await applyLoraFile(this.loraModels(), path, {
      name: options.name ?? loraNameOf(path, Object.keys(this.loras)),
      scale,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    this.loras[name] = scale;
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
