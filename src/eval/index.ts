// Evaluation: CLIP score (torchmetrics semantics), CLIP-I / CLIP-T, grids, the HTML report.
export {
  ClipImageProcessor,
  decodeRgb,
  parsePreprocessorConfig,
  CLIP_PROCESSOR_DEFAULTS,
} from "./clip_image_processor.js";
export type { ClipImageProcessorConfig, DecodedImage, ImageInput } from "./clip_image_processor.js";
export {
  ClipScorer,
  ClipScore,
  clipScore,
  aggregateClipScore,
  clipImageSimilarity,
  clipTextSimilarity,
  resolveClipModel,
  setClipModelResolver,
  DEFAULT_CLIP_MODEL,
} from "./clip_score.js";
export type { ClipModelResolver, EmbedOptions, ImageSimilarity, PairScores, TextEmbeddings } from "./clip_score.js";
export { EvalConfigSchema, parseEvalConfig } from "../config/eval.js";
export type { EvalConfig, EvalConfigInput, GenerateConfig } from "../config/eval.js";
export { evaluate } from "./evaluate.js";
export type { EvaluateOptions, EvaluateOutput } from "./evaluate.js";
export { evaluateRun, evalReportHref, runEvalDir } from "./hooks.js";
export type { EvaluateRunOptions } from "./hooks.js";
export { generateVariants, variantPlan, EVAL_KEY_CHUNK } from "./generate.js";
export type { EvalPipeline, GeneratedVariant, GenerateVariantsOptions, LoraSpec, VariantPlan } from "./generate.js";
export { readEvalImages, parseInfotext, readPromptsFile } from "./images.js";
export type { EvalImage } from "./images.js";
export { stat } from "./results.js";
export type {
  EvalResult,
  ImageScore,
  PromptMetrics,
  ReplicateMetrics,
  RunSummary,
  Stat,
  VariantMetrics,
} from "./results.js";
export { makeGrid } from "../pipeline/grid.js";
export type { GridOptions } from "../pipeline/grid.js";
