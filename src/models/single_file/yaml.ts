// The original LDM config (.yaml) that A1111 and ComfyUI keep beside a checkpoint with the same
// stem (v2-inference-v.yaml renamed to model.yaml). Only the few settings weights cannot show are
// read, with line patterns rather than a YAML parser: the parameterization (v-prediction) and the
// UNet's attention heads.
import { existsSync, readFileSync } from "node:fs";

export interface LdmYamlHints {
  path: string;
  /** parameterization: "v" -> v_prediction; "eps" (or absent) -> epsilon. */
  predictionType?: "epsilon" | "v_prediction";
  numHeads?: number;
  numHeadChannels?: number;
}

/** The .yaml beside `file` (same name, .yaml or .yml), or undefined. */
export function readYamlBeside(file: string): LdmYamlHints | undefined {
  const stem = file.replace(/\.safetensors$/i, "");
  const path = [`${stem}.yaml`, `${stem}.yml`].find((p) => existsSync(p));
  if (!path) return undefined;
  return parseLdmYaml(readFileSync(path, "utf8"), path);
}

export function parseLdmYaml(text: string, path: string): LdmYamlHints {
  const hints: LdmYamlHints = { path };
  const value = (key: string): string | undefined => {
    const m = new RegExp(`^\\s*${key}\\s*:\\s*["']?([^"'#\\s]+)["']?\\s*(#.*)?$`, "m").exec(text);
    return m?.[1];
  };
  const parameterization = value("parameterization");
  if (parameterization === "v") hints.predictionType = "v_prediction";
  else if (parameterization === "eps" || parameterization === "epsilon") hints.predictionType = "epsilon";
  else if (parameterization !== undefined) {
    throw new Error(`${path}: parameterization "${parameterization}" is not supported (expected "v" or "eps")`);
  }
  const int = (key: string): number | undefined => {
    const v = value(key);
    return v !== undefined && /^-?\d+$/.test(v) && Number(v) > 0 ? Number(v) : undefined;
  };
  const heads = int("num_heads");
  const channels = int("num_head_channels");
  if (heads !== undefined) hints.numHeads = heads;
  if (channels !== undefined) hints.numHeadChannels = channels;
  return hints;
}
