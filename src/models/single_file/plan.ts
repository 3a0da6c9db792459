// Reading a single-file checkpoint as a diffusers pipeline: per component, each diffusers tensor's
// source in the file, and the config and side files. Nothing loads: the plan is built from the header.
import type { SafetensorsTensorInfo } from "../../native/index.js";
import { inspectSingleFile, type SingleFileInfo } from "./detect.js";
import { shapeReader, tensorsUnder } from "./shapes.js";
import { configText, readSideFiles, sideFilesFromMetadata, standardSideFiles, type SideFiles } from "./side_files.js";
import { inferTextConfig, TEXT_PREFIX, textToDiffusers } from "./text_keys.js";
import { inferUNetConfig, ldmUnetLayout, mapUnetKey, UNET_PREFIX } from "./unet_keys.js";
import { inferVAEConfig, isVaeAttentionProjection, ldmVaeLevels, VAE_PREFIX, vaeKeyToDiffusers } from "./vae_keys.js";
import { readYamlBeside } from "./yaml.js";

export type PredictionType = "epsilon" | "v_prediction";

export interface SingleFileOptions {
  /** Overrides the .yaml beside the file and the family default (SD 1.x epsilon, SD 2.x v_prediction). */
  predictionType?: PredictionType;
  /** A local diffusers folder whose configs, tokenizer and scheduler to use instead of inferring them. */
  config?: string;
  /** Use the EMA copy of the UNet (model_ema.*) the file holds. */
  ema?: boolean;
}

/** One diffusers tensor's source: a tensor of the file, possibly a third of a fused q/k/v, or squeezed to 2-D. */
export interface TensorSource {
  key: string;
  third?: number;
  squeeze?: boolean;
}

export interface ComponentPlan {
  name: "unet" | "vae" | "text_encoder";
  /** Weight file stem in the diffusers folder. */
  stem: "diffusion_pytorch_model" | "model";
  tensors: Map<string, TensorSource>;
}

export interface SingleFilePlan {
  info: SingleFileInfo;
  components: ComponentPlan[];
  /** Every small file of the diffusers folder (configs, tokenizer, scheduler, model_index.json). */
  files: SideFiles;
  predictionType: PredictionType;
}

/** The plan for reading `file` as a diffusers pipeline; throws naming the file and key on a partial file. */
export async function planSingleFile(file: string, options: SingleFileOptions = {}): Promise<SingleFilePlan> {
  const p = options.predictionType;
  if (p !== undefined && p !== "epsilon" && p !== "v_prediction") {
    throw new TypeError(`predictionType "${String(p)}" must be "epsilon" or "v_prediction"`);
  }
  const info = await inspectSingleFile(file);
  const yaml = readYamlBeside(file);
  const given = options.config ? readSideFiles(options.config) : sideFilesFromMetadata(info.header.metadata, file);
  const givenPrediction = predictionOf(given);
  const predictionType =
    options.predictionType ??
    yaml?.predictionType ??
    givenPrediction ??
    (info.family === "sd2" ? "v_prediction" : "epsilon");
  const vPrediction = predictionType === "v_prediction";

  const unet = planUNet(info, options, { family: info.family, vPrediction, ...yamlHeads(yaml) });
  const vae = planVAE(info, vPrediction);
  const text = planText(info);
  const files: SideFiles = new Map([...standardSideFiles(info.family), ...(given ?? [])]);
  for (const inferred of [unet, vae, text]) {
    const rel = `${inferred.plan.name}/config.json`;
    if (files.has(rel)) continue;
    if (inferred.config instanceof Error) throw inferred.config;
    files.set(rel, configText(inferred.config));
  }
  if (!files.has("model_index.json")) files.set("model_index.json", configText(modelIndex(files)));
  setPredictionType(files, predictionType);
  return { info, components: [unet.plan, vae.plan, text.plan], files, predictionType };
}

/** A component's plan and its config as read off the weights (an Error when they cannot tell). */
type Planned = { plan: ComponentPlan; config: Record<string, unknown> | Error };

function planUNet(
  info: SingleFileInfo,
  options: SingleFileOptions,
  hints: Parameters<typeof inferUNetConfig>[2],
): Planned {
  const tensors = tensorsUnder(info.header, UNET_PREFIX);
  const keys = new Set(tensors.keys());
  const layout = ldmUnetLayout(keys, info.file);
  if (options.ema && !info.hasEma)
    throw new Error(`${info.file}: ema requested, but the file holds no EMA weights (model_ema.*)`);
  const all = new Set(info.header.tensors.map((t) => t.name));
  const map = new Map<string, TensorSource>();
  for (const key of keys) {
    const name = mapUnetKey(key, layout, "ldm");
    if (!name)
      throw new Error(`${info.file}: unexpected UNet tensor "${UNET_PREFIX}${key}" for the layout its blocks show`);
    let source = UNET_PREFIX + key;
    if (options.ema) {
      // LDM's EMA names drop the dots: model.diffusion_model.a.0.b -> model_ema.diffusion_modela0b.
      source = `model_ema.${source.split(".").slice(1).join("")}`;
      if (!all.has(source))
        throw new Error(`${info.file}: missing tensor "${source}" (the EMA copy of ${UNET_PREFIX}${key})`);
    }
    map.set(name, { key: source });
  }
  const config = inferUNetConfig(shapeReader(tensors, UNET_PREFIX, info.file), layout, hints);
  return { plan: { name: "unet", stem: "diffusion_pytorch_model", tensors: map }, config };
}

function planVAE(info: SingleFileInfo, vPrediction: boolean): Planned {
  const tensors = tensorsUnder(info.header, VAE_PREFIX);
  const levels = ldmVaeLevels(tensors.keys());
  const map = new Map<string, TensorSource>();
  for (const [key, t] of tensors) {
    const name = vaeKeyToDiffusers(key, levels);
    if (!name) throw new Error(`${info.file}: unexpected VAE tensor "${VAE_PREFIX}${key}"`);
    map.set(name, { key: VAE_PREFIX + key, squeeze: isVaeAttentionProjection(key) && t.shape.length === 4 });
  }
  const config = inferVAEConfig(shapeReader(tensors, VAE_PREFIX, info.file), new Set(tensors.keys()), vPrediction);
  return { plan: { name: "vae", stem: "diffusion_pytorch_model", tensors: map }, config };
}

function planText(info: SingleFileInfo): Planned {
  const prefix = TEXT_PREFIX[info.textLayout];
  const tensors: Map<string, SafetensorsTensorInfo> = tensorsUnder(info.header, prefix);
  const { map, unknown, layers } = textToDiffusers(info.textLayout, tensors.keys());
  if (unknown.length) throw new Error(`${info.file}: unexpected text encoder tensor "${prefix}${unknown[0]}"`);
  const sources = new Map([...map].map(([name, s]) => [name, { ...s, key: prefix + s.key }]));
  const config = inferTextConfig(info.textLayout, shapeReader(tensors, prefix, info.file), map, layers, info.file);
  return { plan: { name: "text_encoder", stem: "model", tensors: sources }, config };
}

function yamlHeads(yaml: ReturnType<typeof readYamlBeside>): { numHeads?: number; numHeadChannels?: number } {
  const out: { numHeads?: number; numHeadChannels?: number } = {};
  if (yaml?.numHeads !== undefined) out.numHeads = yaml.numHeads;
  if (yaml?.numHeadChannels !== undefined) out.numHeadChannels = yaml.numHeadChannels;
  return out;
}

function predictionOf(files: SideFiles | undefined): PredictionType | undefined {
  const text = files?.get("scheduler/scheduler_config.json");
  if (!text) return undefined;
  const value = (JSON.parse(text) as { prediction_type?: unknown }).prediction_type;
  return value === "v_prediction" || value === "epsilon" ? value : undefined;
}

/** Rewrites the scheduler config only when its prediction type differs, so a carried file stays as it was. */
function setPredictionType(files: SideFiles, predictionType: PredictionType): void {
  const rel = "scheduler/scheduler_config.json";
  const config = JSON.parse(files.get(rel)!) as Record<string, unknown>;
  if (config.prediction_type !== predictionType)
    files.set(rel, configText({ ...config, prediction_type: predictionType }));
}

function modelIndex(files: SideFiles): Record<string, unknown> {
  const scheduler = JSON.parse(files.get("scheduler/scheduler_config.json")!) as { _class_name?: string };
  return {
    _class_name: "StableDiffusionPipeline",
    _diffusers_version: "0.27.2",
    feature_extractor: [null, null],
    image_encoder: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", scheduler._class_name ?? "PNDMScheduler"],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  };
}
