// Where training runs and in which precision: the T4 rule (float16 with loss
// scaling below compute capability 8.0, bfloat16 from 8.0), float32 on the CPU.
import type { ModelDType } from "../models/options.js";
import { native } from "../native/index.js";
import { resolveDevice } from "../runtime.js";

export interface Placement {
  device: string;
  /** dtype of the frozen weights and of the forward pass. */
  weightDtype: ModelDType;
  /** Dynamic loss scaling (float16 only). */
  lossScaling: boolean;
  mixedPrecision: "no" | "fp16" | "bf16";
}

export function choosePlacement(device: string, mixedPrecision: "auto" | "no" | "fp16" | "bf16"): Placement {
  const info = native().info();
  const resolvedDevice = resolveDevice(device);
  if (resolvedDevice.startsWith("cuda") && !info.cuda.available) {
    throw new Error(
      `device "${device}": CUDA is not available (${info.cuda.built ? "no GPU is visible" : "this build of the addon has no CUDA"}); use device: cpu`,
    );
  }
  const onCpu = resolvedDevice === "cpu";
  let mode = mixedPrecision;
  if (mode === "auto") {
    if (onCpu) mode = "no";
    else {
      const index = Number(resolvedDevice.split(":")[1] ?? 0);
      const capability = Number(info.cuda.devices[index]?.capability ?? "0");
      mode = capability >= 8 ? "bf16" : "fp16";
    }
  }
  if (onCpu && mode === "fp16") {
    throw new Error(
      "mixed_precision fp16 is not available on the CPU (libtorch has no CPU float16 matmul); use bf16 or no",
    );
  }
  const weightDtype: ModelDType = mode === "fp16" ? "float16" : mode === "bf16" ? "bfloat16" : "float32";
  return { device: resolvedDevice, weightDtype, lossScaling: mode === "fp16", mixedPrecision: mode };
}
