// Text-to-image generation: the whole of diffusers' StableDiffusionPipeline.__call__
// (v0.27.2) after tokenization, in one native call:
//
//   prompt embeddings     text_encoder(ids)[0] (or clip-skipped), prompt and negative prompt
//   initial latents       given, or randn from one CPU generator per image (randn_tensor), * init_noise_sigma
//   denoising loop        per step: cat([latents] * 2) -> scale_model_input -> ONE UNet call on
//                         [negative rows; prompt rows] -> uncond + g * (cond - uncond)
//                         (-> guidance rescale) -> sampler step
//   decode                vae.decode(latents / scaling_factor), one image at a time (tiled if asked),
//                         (x / 2 + 0.5).clamp(0, 1) -> uint8 HWC (round(x * 255)) or float HWC
//
// Images are denoised in batches of `batchSize`; each image has its own generator, so an
// image depends only on its seed (not on the batch it ran in). No N-API here: the bindings
// hand in the models and their locks.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "sched/sampler.h"

namespace sdtune::pipeline {

// A model borrowed from its holder, with the lock that guards it and where it lives.
template <typename Module>
struct Borrowed {
  Module module{nullptr};
  std::mutex* mutex = nullptr;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  std::function<void()> beforeUse;  // runs under the lock before the model (e.g. the text encoder's sync())
};

struct Components {
  Borrowed<models::CLIPTextModel> textEncoder;
  Borrowed<models::UNet2DConditionModel> unet;
  Borrowed<models::AutoencoderKL> vae;
};

enum class Output { Uint8, Float, Latent };

struct GenerateRequest {
  at::Tensor promptIds;              // [P, L] int64, one row per distinct prompt
  at::Tensor negativeIds;            // [P, L] int64 (row p: the negative prompt of prompt p); used only with CFG
  std::vector<int64_t> imagePrompt;  // [N]: the prompt row of each image
  std::vector<uint64_t> seeds;       // [N]: each image's generator seed
  at::Tensor latents;                // optional [N, C, h, w]: initial latents (before init_noise_sigma)
  int64_t latentHeight = 0, latentWidth = 0;
  int64_t steps = 50;
  double guidanceScale = 7.5;    // CFG when > 1
  double guidanceRescale = 0.0;  // diffusers' rescale_noise_cfg when > 0 (with CFG)
  int64_t clipSkip = 0;          // diffusers' clip_skip, applied to prompt and negative prompt alike
  int64_t batchSize = 1;         // images per denoising batch
  Output output = Output::Uint8;
  bool returnLatents = false;  // also return the final latents
  int64_t tileSize = 0;        // > 0: tiled VAE decode with tiles of this many latent pixels
  double tileOverlap = 0.25;
  bool capture = false;      // record per-step tensors (tests; one batch only)
  bool syncTimings = false;  // synchronize CUDA around UNet calls so unetSeconds is real
};

struct Timings {
  double textEncoder = 0, denoise = 0, unet = 0, decode = 0;
};

struct GenerateResult {
  at::Tensor images;   // Uint8: [N, H, W, 3] uint8; Float: [N, H, W, 3] float32 in [0, 1]; CPU
  at::Tensor latents;  // [N, C, h, w] final latents (Latent output or returnLatents)
  Timings timings;
  std::vector<std::pair<std::string, at::Tensor>> captured;  // with `capture`
};

struct Hooks {
  // (phase, step, total, values): "denoise" per sampler step, "decode" per image.
  std::function<void(const std::string&, int64_t, int64_t, const std::map<std::string, double>&)> progress;
  // Throws to stop (cancellation); called between steps and images.
  std::function<void()> checkCancel;
};

// Runs the whole generation; `sampler` is reused batch after batch (setTimesteps resets it).
GenerateResult generate(const Components& models, sched::Sampler& sampler, const GenerateRequest& request,
                        const Hooks& hooks);

}  // namespace sdtune::pipeline
