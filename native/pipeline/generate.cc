#include "pipeline/generate.h"

#include <torch/cuda.h>

#include <chrono>
#include <stdexcept>

namespace sdtune::pipeline {

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void synchronize(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Puts a module in eval mode for a scope (a model mid-training has dropout on) and back.
template <typename Module>
struct EvalModeGuard {
  explicit EvalModeGuard(Module module) : module_(std::move(module)), wasTraining_(module_->is_training()) {
    if (wasTraining_) module_->eval();
  }
  ~EvalModeGuard() {
    if (wasTraining_) module_->train();
  }
  Module module_;
  bool wasTraining_;
};

// Runs `body` holding a borrowed model's lock, after its beforeUse hook, in eval mode.
template <typename Module, typename Body>
auto withModel(const Borrowed<Module>& model, Body body) -> decltype(body()) {
  std::unique_lock<std::mutex> lock;
  if (model.mutex) lock = std::unique_lock<std::mutex>(*model.mutex);
  if (model.beforeUse) model.beforeUse();
  EvalModeGuard<Module> evalMode(model.module);
  torch::NoGradGuard noGrad;
  return body();
}

// text_encoder(ids)[0], or the clip-skipped hidden state: [P, L] -> [P, L, D] in the UNet's dtype and device.
at::Tensor encode(const Components& m, const at::Tensor& ids, int64_t clipSkip) {
  models::CLIPTextForwardOptions options;
  options.clipSkip = clipSkip;
  models::CLIPTextModel model = m.textEncoder.module;
  at::Tensor embeds = model->forward(ids.to(m.textEncoder.device), options).lastHiddenState;
  return embeds.to(m.unet.device, m.unet.dtype);
}

// diffusers' rescale_noise_cfg (Lin et al. 2023, section 3.4): match the guided prediction's
// per-sample std to the text-conditioned one's, then mix by `rescale`.
at::Tensor rescaleNoiseCfg(const at::Tensor& guided, const at::Tensor& cond, double rescale) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < guided.dim(); ++d) dims.push_back(d);
  at::Tensor stdCond = cond.std(dims, /*unbiased=*/true, /*keepdim=*/true);   // [b, 1, 1, 1]
  at::Tensor stdCfg = guided.std(dims, /*unbiased=*/true, /*keepdim=*/true);  // [b, 1, 1, 1]
  at::Tensor rescaled = guided * (stdCond / stdCfg);
  return rescaled * rescale + guided * (1.0 - rescale);
}

// Per-step tensors recorded for parity tests, stacked at the end.
struct Capture {
  std::vector<at::Tensor> unetInput, noiseRaw, noiseGuided, latents, timesteps, decoded;
  static at::Tensor stack(const std::vector<at::Tensor>& list) {
    std::vector<at::Tensor> cpu;
    for (const auto& t : list) cpu.push_back(t.to(at::kCPU));
    return at::stack(cpu);
  }
};

void checkRequest(const GenerateRequest& r, const Components& m) {
  const auto n = static_cast<int64_t>(r.seeds.size());
  if (n < 1) throw std::invalid_argument("generate: no images requested");
  if (static_cast<int64_t>(r.imagePrompt.size()) != n) {
    throw std::invalid_argument("generate: imagePrompt and seeds must have one entry per image");
  }
  if (!r.promptIds.defined() || r.promptIds.dim() != 2 || r.promptIds.scalar_type() != at::kLong) {
    throw std::invalid_argument("generate: promptIds must be an int64 [prompts, length] tensor");
  }
  for (int64_t p : r.imagePrompt) {
    if (p < 0 || p >= r.promptIds.size(0)) throw std::invalid_argument("generate: imagePrompt out of range");
  }
  if (r.guidanceScale > 1.0 && (!r.negativeIds.defined() || r.negativeIds.sizes() != r.promptIds.sizes())) {
    throw std::invalid_argument("generate: negativeIds must have the shape of promptIds when guidanceScale > 1");
  }
  if (r.steps < 1) throw std::invalid_argument("generate: steps must be >= 1");
  if (r.batchSize < 1) throw std::invalid_argument("generate: batchSize must be >= 1");
  if (r.latentHeight < 1 || r.latentWidth < 1) throw std::invalid_argument("generate: latent size must be positive");
  const int64_t channels = m.unet.module->options.inChannels;
  if (r.latents.defined()) {
    std::vector<int64_t> want{n, channels, r.latentHeight, r.latentWidth};
    if (r.latents.sizes() != at::IntArrayRef(want)) {
      throw std::invalid_argument("generate: latents must be [" + std::to_string(n) + ", " + std::to_string(channels) +
                                  ", " + std::to_string(r.latentHeight) + ", " + std::to_string(r.latentWidth) + "]");
    }
  }
  if (r.capture && r.batchSize < n) throw std::invalid_argument("generate: capture needs every image in one batch");
}

}  // namespace

GenerateResult generate(const Components& m, sched::Sampler& sampler, const GenerateRequest& r, const Hooks& hooks) {
  checkRequest(r, m);
  const auto n = static_cast<int64_t>(r.seeds.size());
  const bool cfg = r.guidanceScale > 1.0;
  auto progress = [&](const char* phase, int64_t step, int64_t total, std::map<std::string, double> values) {
    if (hooks.progress) hooks.progress(phase, step, total, values);
  };
  auto checkCancel = [&] {
    if (hooks.checkCancel) hooks.checkCancel();
  };
  GenerateResult result;
  Capture capture;

  // ---- 1. prompt embeddings, one row per distinct prompt
  checkCancel();
  auto start = Clock::now();
  at::Tensor cond, uncond;  // [P, L, D]
  withModel(m.textEncoder, [&] {
    cond = encode(m, r.promptIds, r.clipSkip);
    if (cfg) uncond = encode(m, r.negativeIds, r.clipSkip);
    return 0;
  });
  result.timings.textEncoder = secondsSince(start);
  if (r.capture) {
    result.captured.emplace_back("prompt_embeds", cond.to(at::kCPU));
    if (cfg) result.captured.emplace_back("negative_prompt_embeds", uncond.to(at::kCPU));
  }

  // ---- 2. denoising, batch by batch
  start = Clock::now();
  sampler.setTimesteps(r.steps);
  const int64_t calls = sampler.numCalls();
  const int64_t batches = (n + r.batchSize - 1) / r.batchSize;
  const int64_t channels = m.unet.module->options.inChannels;
  const auto latentOptions = at::TensorOptions().dtype(m.unet.dtype).device(m.unet.device);
  std::vector<at::Tensor> finals;                     // [b, C, h, w] per batch
  models::UNet2DConditionModel unet = m.unet.module;  // a (non-const) share of the module
  withModel(m.unet, [&] {
    for (int64_t batch = 0; batch < batches; ++batch) {
      const int64_t begin = batch * r.batchSize;
      const int64_t end = std::min(n, begin + r.batchSize);
      const int64_t b = end - begin;
      std::vector<int64_t> rows(r.imagePrompt.begin() + begin, r.imagePrompt.begin() + end);
      at::Tensor index = at::tensor(rows, at::kLong).to(cond.device());
      // diffusers' row order: cat([negative_prompt_embeds, prompt_embeds])
      at::Tensor context = cond.index_select(0, index);                      // [b, L, D]
      if (cfg) context = at::cat({uncond.index_select(0, index), context});  // [2b, L, D]
      std::vector<at::Generator> generators;
      for (int64_t i = begin; i < end; ++i) generators.push_back(at::detail::createCPUGenerator(r.seeds[i]));

      sampler.setTimesteps(r.steps);  // a fresh run: multistep samplers forget the last batch
      at::Tensor latents = r.latents.defined()
                               ? r.latents.slice(0, begin, end).to(m.unet.device, m.unet.dtype)
                               : sched::randnTensor({b, channels, r.latentHeight, r.latentWidth}, latentOptions,
                                                    generators);  // [b, C, h, w]
      latents = latents * sampler.initNoiseSigma();

      for (int64_t i = 0; i < calls; ++i) {
        checkCancel();
        at::Tensor t = sampler.timesteps()[i];  // 0-dim, the sampler's dtype (int64 or float32)
        at::Tensor input = cfg ? at::cat({latents, latents}) : latents;  // [2b or b, C, h, w]
        input = sampler.scaleModelInput(input, i);
        auto unetStart = Clock::now();
        at::Tensor noise = unet->forward(input, t, context);  // [2b or b, C, h, w]
        if (r.syncTimings) synchronize(m.unet.device);
        result.timings.unet += secondsSince(unetStart);
        at::Tensor guided = noise;
        if (cfg) {
          auto halves = noise.chunk(2);  // [b, ...] each: negative prompt, prompt
          guided = halves[0] + (halves[1] - halves[0]) * r.guidanceScale;
          if (r.guidanceRescale > 0) guided = rescaleNoiseCfg(guided, halves[1], r.guidanceRescale);
        }
        latents = sampler.step(guided, i, latents, generators).prevSample;
        if (r.capture) {
          capture.unetInput.push_back(input);
          capture.noiseRaw.push_back(noise);
          capture.noiseGuided.push_back(guided);
          capture.latents.push_back(latents);
          capture.timesteps.push_back(t);
        }
        progress("denoise", batch * calls + i + 1, batches * calls,
                 {{"timestep", t.item<double>()}, {"image", static_cast<double>(begin)}});
      }
      finals.push_back(latents);
    }
    return 0;
  });
  at::Tensor latents = at::cat(finals);  // [N, C, h, w]
  result.timings.denoise = secondsSince(start);
  if (r.capture) {
    result.captured.emplace_back("unet_input", Capture::stack(capture.unetInput));
    result.captured.emplace_back("noise_pred_raw", Capture::stack(capture.noiseRaw));
    result.captured.emplace_back("noise_pred_guided", Capture::stack(capture.noiseGuided));
    result.captured.emplace_back("latents_per_step", Capture::stack(capture.latents));
    result.captured.emplace_back("timesteps", Capture::stack(capture.timesteps));
  }
  if (r.output == Output::Latent || r.returnLatents) result.latents = latents;
  if (r.output == Output::Latent) return result;

  // ---- 3. decode, one image at a time
  start = Clock::now();
  std::vector<at::Tensor> images;
  models::AutoencoderKL vae = m.vae.module;
  withModel(m.vae, [&] {
    const double scaling = m.vae.module->options.scalingFactor;
    at::Tensor z = latents / scaling;  // [N, C, h, w], as the pipeline: latents / scaling_factor
    for (int64_t i = 0; i < n; ++i) {
      checkCancel();
      at::Tensor zi = z.slice(0, i, i + 1).to(m.vae.device, m.vae.dtype);  // [1, C, h, w]
      const bool tiled = r.tileSize > 0 && (zi.size(2) > r.tileSize || zi.size(3) > r.tileSize);
      at::Tensor decoded =
          tiled ? vae->decodeTiled(zi, r.tileSize, r.tileOverlap) : vae->decode(zi);  // [1, 3, H, W] about [-1, 1]
      if (r.capture) capture.decoded.push_back(decoded.squeeze(0));
      // VaeImageProcessor.postprocess: denormalize in the VAE's dtype, then float32 NHWC.
      at::Tensor image = (decoded / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1}).to(at::kCPU, at::kFloat);
      if (r.output == Output::Uint8) image = image.mul(255).round().to(at::kByte);  // numpy_to_pil
      images.push_back(image);                                                      // [1, H, W, 3]
      progress("decode", i + 1, n, {});
    }
    return 0;
  });
  result.images = at::cat(images).contiguous();  // [N, H, W, 3]
  result.timings.decode = secondsSince(start);
  if (r.capture) result.captured.emplace_back("decoded", Capture::stack(capture.decoded));
  return result;
}

}  // namespace sdtune::pipeline
