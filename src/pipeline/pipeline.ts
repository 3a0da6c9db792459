// A loaded Stable Diffusion pipeline: the components of a diffusers StableDiffusionPipeline
// folder, and generate(). Build one with loadPipeline() (src/pipeline/load.ts), or from
// components already in memory (e.g. a trainer's models, for sample images).
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
    if (this.isDisposed) throw new Error("StableDiffusionPipeline: generate() after dispose()");
    return generateImages(this.context(), options);
  }

  // ---- LoRA adapters
  // loadLora(file, {name, scale}) attaches a LoRA file's adapters to this.unet / this.textEncoder,
  // setAdapters(names, scales) chooses the active ones (and fuse/unfuse merge them into the
  // weights); they keep this.loras in step. Generation needs nothing more: the adapters live
  // inside the models' layers. Wired to src/lora's native adapter functions at merge.

  /** Frees every component (idempotent); running work keeps its models until it ends. */
  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.unet.dispose();
    this.vae.dispose();
    this.textEncoder.dispose();
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
