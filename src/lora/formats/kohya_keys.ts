// kohya sd-scripts keys (lora_unet_*, lora_te*_*): LoRA halves and alpha, DoRA's
// dora_scale and LyCORIS LoHa/LoKr factors, each name resolved to a module path.
import type { Tensor } from "../../native/index.js";
import { SD_UNET_LAYOUT, SDXL_UNET_LAYOUT } from "../../models/ldm.js";
import { readScalar, type ModuleCollector } from "./collector.js";
import { type LycorisCollector, lycorisKey, lycorisNames } from "./lycoris.js";
import { kohyaResolver, type BaseModuleNames } from "./names.js";

const KOHYA_KEY = /^([^.]+)\.(lora_down\.weight|lora_up\.weight|alpha)$/;
const UNSUPPORTED_SUFFIX: [RegExp, string][] = [
  [/\.lora_mid\.weight$/, "LoCon/Tucker (lora_mid) is not supported"],
  [/\.(hada_t[12]|lokr_t[12])$/, "Tucker-decomposed LoHa/LoKr (use_tucker) is not supported"],
  [/\.(hada_|lokr_)/, "unknown LoHa/LoKr tensor"],
];
const DORA_KEY = /^([^.]+)\.dora_scale$/;

export async function collectKohya(
  tensors: Map<string, Tensor>,
  metadata: Record<string, string>,
  into: { modules: ModuleCollector; lycoris: LycorisCollector },
  problems: string[],
  baseModuleNames: BaseModuleNames | undefined,
): Promise<void> {
  const { modules, lycoris } = into;
  const factored = lycorisNames(tensors.keys());
  const sdxl =
    [...tensors.keys()].some((k) => k.startsWith("lora_te2_")) ||
    (metadata.ss_base_model_version ?? "").startsWith("sdxl");
  const resolver = kohyaResolver(baseModuleNames, sdxl ? SDXL_UNET_LAYOUT : SD_UNET_LAYOUT);
  const resolved = new Map<string, string | undefined>();
  for (const [fileKey, tensor] of tensors) {
    const ly = lycorisKey(fileKey);
    const dora = DORA_KEY.exec(fileKey);
    const m = ly || dora ? ([fileKey, (ly?.name ?? dora![1])!, "lycoris"] as const) : KOHYA_KEY.exec(fileKey);
    if (!m) {
      const known = UNSUPPORTED_SUFFIX.find(([re]) => re.test(fileKey));
      problems.push(
        `"${fileKey}": ${known ? known[1] : "unknown key (expected <name>.lora_down.weight, .lora_up.weight or .alpha)"}`,
      );
      continue;
    }
    const [, name, suffix] = m as unknown as [string, string, string];
    if (!resolved.has(name)) {
      const r = resolver.resolve(name);
      if ("error" in r) problems.push(r.error);
      resolved.set(name, "key" in r ? r.key : undefined);
    }
    const module = resolved.get(name);
    if (!module) continue;
    if (ly) {
      lycoris.add(module, name, ly.factor, tensor, problems);
      continue;
    }
    if (dora) {
      modules.add(module, "magnitude", tensor, fileKey, {
        down: `${name}.lora_down.weight`,
        up: `${name}.lora_up.weight`,
      });
      continue;
    }
    if (suffix === "alpha" && factored.has(name)) {
      const value = await readScalar(tensor, fileKey, problems);
      if (value !== undefined) lycoris.setAlpha(module, name, value);
      continue;
    }
    const part = suffix === "alpha" ? "alpha" : suffix.startsWith("lora_down") ? "down" : "up";
    modules.add(module, part, tensor, fileKey, {
      down: `${name}.lora_down.weight`,
      up: `${name}.lora_up.weight`,
    });
  }
  problems.push(...modules.duplicates);
}
