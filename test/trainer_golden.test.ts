// The training step against diffusers' training scripts (golden/lora_train and
// golden/dreambooth): loss, gradient norm and LoRA weights after 1 and 3 AdamW
// steps, the min-SNR loss, and DreamBooth with prior preservation, text-encoder
// LoRA and gradient clipping.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";

import { applyLora, loraParameters } from "../src/lora/index.js";
import { TextEncoder } from "../src/models/text_encoder.js";
import { UNet } from "../src/models/unet.js";
import type { Tensor } from "../src/native/index.js";
import { Trainer } from "../src/train/trainer.js";
import { expectClose, fixture, get, golden, goldenAdamW, goldenReadmeNumber, TOL, values } from "./helpers/fixtures.js";

const SD = fixture("tiny-sd");
const schedulerConfig = JSON.parse(readFileSync(join(SD, "scheduler", "scheduler_config.json"), "utf8")) as Record<
  string,
  unknown
>;

// The scripts' hyperparameters, as golden/README.md records them for each reference.
const LORA_TRAIN = {
  alpha: goldenReadmeNumber("lora_train", /lora_alpha=([\d.]+)/),
  snrGamma: goldenReadmeNumber("lora_train", /min-SNR-gamma\(([\d.]+)\)/),
  adamw: goldenAdamW("lora_train"),
};
const DREAMBOOTH = {
  alpha: goldenReadmeNumber("dreambooth", /\br=\d+ alpha=([\d.]+)/),
  adamw: goldenAdamW("dreambooth"),
};

/** LoraWeights from golden "<prefix><component-free path>.lora_A/B.weight" tensors (copies). */
function weightsFrom(map: Map<string, Tensor>, prefix: string, component: string, alpha: number) {
  const adapters = new Map<string, { down: Tensor; up: Tensor; alpha: number; rank: number }>();
  for (const key of map.keys()) {
    if (!key.startsWith(prefix) || !key.endsWith(".lora_A.weight")) continue;
    const path = key.slice(prefix.length, -".lora_A.weight".length);
    const down = get(map, `${prefix}${path}.lora_A.weight`).clone();
    adapters.set(`${component}.${path}`, {
      down,
      up: get(map, `${prefix}${path}.lora_B.weight`).clone(),
      alpha,
      rank: down.shape[0]!,
    });
  }
  return { format: "peft" as const, adapters, metadata: {}, warnings: [] };
}

async function scalar(t: Tensor): Promise<number> {
  return (await values(t))[0]!;
}

describe("text-to-image LoRA (train_text_to_image_lora.py)", () => {
  let g: Map<string, Tensor>;
  beforeAll(async () => {
    g = await golden("lora_train");
  });

  for (const variant of ["random_init", "gaussian_init"] as const) {
    it(`${variant}: losses, grad norms and LoRA weights after 1 and 3 steps`, async () => {
      const unet = await UNet.load(join(SD, "unet"));
      const lora = weightsFrom(g, `${variant}.init.`, "unet", LORA_TRAIN.alpha);
      const name = await applyLora({ unet }, lora, { trainable: true });
      const params = await loraParameters(unet, name);
      const { lr, ...adamw } = LORA_TRAIN.adamw;
      const trainer = await Trainer.create({
        unet,
        groups: [{ name: "unet", params }],
        noiseScheduleConfig: schedulerConfig,
        maxGradNorm: 0, // the script's clip_grad_norm_ gets an exhausted iterator: no clipping
        adamw,
      });
      const batch = {
        latents: get(g, "latents"),
        noise: get(g, "noise"),
        timesteps: get(g, "timesteps"),
        encoderHiddenStates: get(g, "encoder_hidden_states"),
      };
      const losses = await values(get(g, `${variant}.losses`));
      const norms = await values(get(g, `${variant}.grad_norms`));
      for (let step = 0; step < 3; step++) {
        const r = await trainer.step(batch, { unet: lr });
        expect(Math.abs(r.loss - losses[step]!), `loss ${step}`).toBeLessThan(1e-4 + 1e-3 * losses[step]!);
        expect(Math.abs(r.gradNorm - norms[step]!), `grad norm ${step}`).toBeLessThan(1e-4 + 1e-3 * norms[step]!);
        if (step === 0 || step === 2) {
          const after = `${variant}.after_step${step + 1}.`;
          for (const [n, p] of params)
            await expectClose(p, get(g, `${after}${n}`), { atol: 0.2 * lr, rtol: 0 }, `${after}${n}`);
        }
      }
    });

    it(`${variant}: the min-SNR-gamma loss`, async () => {
      const unet = await UNet.load(join(SD, "unet"));
      const lora = weightsFrom(g, `${variant}.init.`, "unet", LORA_TRAIN.alpha);
      const name = await applyLora({ unet }, lora, { trainable: true });
      const trainer = await Trainer.create({
        unet,
        groups: [{ name: "unet", params: await loraParameters(unet, name) }],
        noiseScheduleConfig: schedulerConfig,
        snrGamma: LORA_TRAIN.snrGamma,
      });
      const r = await trainer.step(
        {
          latents: get(g, "latents"),
          noise: get(g, "noise"),
          timesteps: get(g, "timesteps"),
          encoderHiddenStates: get(g, "encoder_hidden_states"),
        },
        { unet: 0 },
      );
      const expected = await scalar(get(g, `${variant}.minsnr.loss`));
      expect(Math.abs(r.loss - expected)).toBeLessThan(1e-4 + 1e-4 * Math.abs(expected));
    });
  }
});

describe("DreamBooth LoRA with prior preservation (train_dreambooth_lora.py)", () => {
  it("instance and prior losses, clipped gradients and weights after one step, text encoder included", async () => {
    const g = await golden("dreambooth");
    const unet = await UNet.load(join(SD, "unet"));
    const textEncoder = await TextEncoder.load(join(SD, "text_encoder"));
    const unetLora = weightsFrom(g, "init.unet.", "unet", DREAMBOOTH.alpha);
    const teLora = weightsFrom(g, "init.text_encoder.", "text_encoder", DREAMBOOTH.alpha);
    const unetName = await applyLora({ unet }, unetLora, { trainable: true });
    const teName = await applyLora({ textEncoder }, teLora, { trainable: true });
    const unetParams = await loraParameters(unet, unetName);
    const teParams = await loraParameters(textEncoder, teName);
    const maxGradNorm = await scalar(get(g, "max_grad_norm"));
    const { lr, ...hyper } = DREAMBOOTH.adamw;
    const trainer = await Trainer.create({
      unet,
      textEncoder,
      groups: [
        { name: "unet", params: unetParams },
        { name: "text_encoder", params: teParams },
      ],
      noiseScheduleConfig: schedulerConfig,
      priorLossWeight: await scalar(get(g, "prior_loss_weight")),
      maxGradNorm,
      adamw: hyper,
    });
    const r = await trainer.step(
      {
        latents: get(g, "model_input"),
        noise: get(g, "noise"),
        timesteps: get(g, "timesteps"),
        inputIds: get(g, "input_ids"),
        priorRows: get(g, "model_input").shape[0]! / 2, // [instance rows, class rows] (collate order)
      },
      { unet: lr, text_encoder: lr },
      { keepPrediction: true },
    );
    await expectClose(r.modelPred!, get(g, "model_pred"), TOL.forward, "model_pred");
    for (const [field, key] of [
      ["instanceLoss", "loss_instance"],
      ["priorLoss", "loss_prior"],
      ["loss", "loss_total"],
      ["gradNorm", "grad_norm_before_clip"],
    ] as const) {
      const expected = await scalar(get(g, key));
      expect(Math.abs(r[field] - expected), field).toBeLessThan(1e-4 + 1e-3 * Math.abs(expected));
    }
    for (const [component, params] of [
      ["unet", unetParams],
      ["text_encoder", teParams],
    ] as const) {
      for (const [n, p] of params) {
        await expectClose(p, get(g, `after_step1.${component}.${n}`), { atol: 0.2 * lr, rtol: 0 }, `${component}.${n}`);
      }
    }
  });
});
