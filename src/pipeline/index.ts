// Stable Diffusion pipelines: loading, text-to-image generation, saving.
export { loadPipeline } from "./load.js";
export type { LoadPipelineOptions, PipelineLoadEvent } from "./load.js";
export { StableDiffusionPipeline } from "./pipeline.js";
export type { PipelineComponents } from "./pipeline.js";
export { a1111SamplerName } from "./generate.js";
export type { PipelineImage, GenerateResult, GenerateTimings } from "./generate.js";
export { checkGenerateOptions } from "./options.js";
export type { GenerateOptions } from "./options.js";
export { checkPipelineIndex, readPipelineIndex, PipelineLayoutError } from "./layout.js";
export type { PipelineIndex } from "./layout.js";
export { saveModel, savePipeline } from "./save.js";
export type { SaveModelOptions, SavePipelineComponents } from "./save.js";
export { writeImages } from "./write_images.js";
export type { WriteImagesResult, WrittenImage } from "./write_images.js";
export { parsePromptLine, promptBatches, readPromptSpecs } from "./prompts.js";
export type { PromptSpec } from "./prompts.js";
