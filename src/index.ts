// The public API of sdtune.
export { native, addonPath } from "./native.js";
export type {
  AnyTypedArray,
  CancelToken,
  DType,
  ProgressEvent,
  RuntimeInfo,
  SafetensorsHeader,
  SafetensorsTensorInfo,
  Tensor,
  TypedArrayOf,
} from "./native.js";
export { tensorFrom, disposeAll, cancelTokenFor } from "./tensor.js";
export { inspectSafetensors, readSafetensors, writeSafetensors } from "./io/safetensors.js";
export type { SafetensorsContents, TensorEntries } from "./io/safetensors.js";
export { UNet, loadUNet } from "./models/unet.js";
export type { UNetDType, UNetLoadOptions } from "./models/unet.js";
export { VAE, loadVAE } from "./models/vae.js";
export type { VAECallOptions, VAEDecodeOptions, VAELoadOptions } from "./models/vae.js";
export {
  ConfigError,
  nativeUNetConfig,
  nativeVAEConfig,
  parseUNetConfig,
  parseVAEConfig,
  unetConfigSchema,
  vaeConfigSchema,
} from "./models/config.js";
export type { UNetConfig, VAEConfig } from "./models/config.js";
export type {
  LatentDistribution,
  NativeUNet,
  NativeUNetConfig,
  NativeVAE,
  NativeVAEConfig,
  ParameterInfo,
  UNetLossAndGradients,
} from "./native.js";
