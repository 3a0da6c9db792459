#include "train/trainer.h"

#include <chrono>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <stdexcept>

namespace sdtune::train {

namespace {

namespace F = torch::nn::functional;

// dtype and device of a module's first parameter.
std::pair<at::ScalarType, at::Device> placement(torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return {p.scalar_type(), p.device()};
  return {at::kFloat, at::kCPU};
}

torch::Tensor mseMean(const torch::Tensor& a, const torch::Tensor& b) {
  return F::mse_loss(a.to(torch::kFloat), b.to(torch::kFloat), F::MSELossFuncOptions().reduction(torch::kMean));
}

}  // namespace

Trainer::Trainer(models::UNet2DConditionModel unet, models::CLIPTextModel textEncoder, models::AutoencoderKL vae,
                 double vaeScalingFactor, std::vector<ParamGroup> groups, TrainerOptions options)
    : unet_(std::move(unet)),
      textEncoder_(std::move(textEncoder)),
      vae_(std::move(vae)),
      vaeScalingFactor_(vaeScalingFactor),
      groups_(std::move(groups)),
      options_(options),
      schedule_(options.noise),
      scaler_(options.lossScaling),
      generator_(at::detail::createCPUGenerator(options.seed)) {
  if (options_.gradientAccumulationSteps < 1) throw std::invalid_argument("gradientAccumulationSteps must be >= 1");
  if (options_.trainTextEncoder && !textEncoder_) {
    throw std::invalid_argument("training the text encoder needs a text encoder");
  }
  for (auto& group : groups_) {
    if (group.params.empty()) throw std::invalid_argument("parameter group \"" + group.name + "\" is empty");
    for (auto& [name, p] : group.params) {
      if (!p.is_floating_point()) throw std::invalid_argument("parameter " + name + " is not floating point");
      p.set_requires_grad(true);
    }
    optimizers_.push_back(makeOptimizer(group.params, options_.optimizer));
    if (options_.useEma && group.name == "unet") {
      ema_ = std::make_unique<Ema>(group.params, options_.ema);
      emaGroup_ = optimizers_.size() - 1;
    }
  }
  if (options_.useEma && !ema_) throw std::invalid_argument("EMA needs a \"unet\" parameter group");
}

torch::Tensor Trainer::randn(at::IntArrayRef shape, const torch::Tensor& like) {
  // Drawn on the CPU generator then moved, as diffusers' randn_tensor does: same draws on every device.
  std::vector<int64_t> full(shape.begin(), shape.end());
  if (drawTotal_ > 0) full[0] = drawTotal_;  // data parallel: the global batch's draw, this rank's rows
  torch::Tensor t = at::randn(full, generator_, torch::TensorOptions().dtype(torch::kFloat));
  if (drawTotal_ > 0) t = t.index_select(0, drawRows_);
  return t.to(like.device(), like.scalar_type());
}

torch::Tensor Trainer::randTimesteps(int64_t rows) {
  torch::Tensor t =
      at::randint(0, schedule_.numTrainTimesteps(), {drawTotal_ > 0 ? drawTotal_ : rows}, generator_, torch::kLong);
  return drawTotal_ > 0 ? t.index_select(0, drawRows_) : t;
}

torch::Tensor Trainer::drawLatents(const TrainBatch& batch) {
  if (batch.latents.defined()) return batch.latents;
  torch::Tensor mean, std;
  if (batch.pixels.defined()) {
    if (!vae_) throw std::invalid_argument("pixels given but no VAE loaded (pass cached latents instead)");
    auto [dtype, device] = placement(*vae_);
    torch::NoGradGuard noGrad;
    auto posterior = vae_->encode(batch.pixels.to(device, dtype));
    mean = posterior.mean;
    std = posterior.std;
  } else if (batch.latentMean.defined()) {
    mean = batch.latentMean;
    std = batch.latentStd;
  } else {
    throw std::invalid_argument("a batch needs pixels, cached latents (latentMean/latentStd) or latents");
  }
  if (std::isnan(vaeScalingFactor_)) {
    throw std::invalid_argument(
        "cached latents need the VAE's scaling_factor: pass vaeScalingFactor (vae/config.json)");
  }
  torch::NoGradGuard noGrad;
  torch::Tensor z = mean;
  if (options_.sampleLatents) {
    if (!std.defined()) throw std::invalid_argument("sampling latents needs latentStd");
    z = mean + std * randn(mean.sizes(), mean);  // latent_dist.sample()
  }
  return z * vaeScalingFactor_;
}

torch::Tensor Trainer::encodeText(const TrainBatch& batch) {
  if (batch.encoderHiddenStates.defined()) return batch.encoderHiddenStates;
  if (!batch.inputIds.defined()) throw std::invalid_argument("a batch needs inputIds or encoderHiddenStates");
  if (!textEncoder_) throw std::invalid_argument("inputIds given but no text encoder loaded");
  auto [dtype, device] = placement(*textEncoder_);
  models::CLIPTextForwardOptions forward;
  forward.clipSkip = options_.clipSkip;
  torch::Tensor ids = batch.inputIds.to(device, torch::kLong);
  if (options_.trainTextEncoder) return textEncoder_->forward(ids, forward).lastHiddenState;
  torch::NoGradGuard noGrad;
  return textEncoder_->forward(ids, forward).lastHiddenState;
}

torch::Tensor Trainer::target(const torch::Tensor& latents, const torch::Tensor& noise, const torch::Tensor& t) const {
  switch (options_.predictionType) {
    case sched::PredictionType::Epsilon: return noise;
    case sched::PredictionType::VPrediction: return schedule_.getVelocity(latents, noise, t);
    default: throw std::invalid_argument("training supports prediction_type epsilon and v_prediction");
  }
}

std::vector<torch::Tensor> Trainer::grads() const {
  std::vector<torch::Tensor> out;
  for (const auto& group : groups_) {
    for (const auto& [name, p] : group.params) out.push_back(p.grad());
  }
  return out;
}

StepResult Trainer::step(const TrainBatch& batch, const std::vector<double>& lrs, bool keepPrediction) {
  if (lrs.size() != groups_.size()) {
    throw std::invalid_argument("step: " + std::to_string(lrs.size()) + " learning rates for " +
                                std::to_string(groups_.size()) + " parameter groups");
  }
  // Train mode (dropout) for the step only: whoever uses the models next gets them as they were.
  const bool unetWasTraining = unet_->is_training();
  const bool textWasTraining = textEncoder_ && textEncoder_->is_training();
  auto restoreModes = [&] {
    unet_->train(unetWasTraining);
    if (textEncoder_) textEncoder_->train(textWasTraining);
  };
  unet_->train();
  if (textEncoder_) textEncoder_->train(options_.trainTextEncoder);
  try {
    StepResult result = stepInTrainMode(batch, lrs, keepPrediction);
    restoreModes();
    return result;
  } catch (...) {
    // A failed step (out of memory mid-backward, bad input) leaves no partial gradients behind.
    for (auto& optimizer : optimizers_) optimizer->zeroGrad();
    restoreModes();
    throw;
  }
}

namespace {
using Clock = std::chrono::steady_clock;
double msSince(Clock::time_point& start) {
  auto now = Clock::now();
  double ms = std::chrono::duration<double, std::milli>(now - start).count();
  start = now;
  return ms;
}
}  // namespace

StepResult Trainer::stepInTrainMode(const TrainBatch& batch, const std::vector<double>& lrs, bool keepPrediction) {
  auto [dtype, device] = placement(*unet_);
  auto clock = Clock::now();
  drawRows_ = batch.globalRows.defined() ? batch.globalRows.to(torch::kCPU, torch::kLong) : torch::Tensor();
  drawTotal_ = drawRows_.defined() ? batch.globalBatch : 0;

  // Random draws in diffusers' order: posterior sample, noise, offset noise, timesteps.
  torch::Tensor latents = drawLatents(batch).to(device, dtype);  // [B, 4, h, w]
  const int64_t rows = latents.size(0);
  if (batch.priorRows < 0 || batch.priorRows * 2 > rows) {
    throw std::invalid_argument("priorRows must be between 0 and half the batch");
  }
  torch::Tensor noise = batch.noise.defined() ? batch.noise.to(device, dtype) : randn(latents.sizes(), latents);
  if (!batch.noise.defined() && options_.noiseOffset > 0) {
    noise = noise + options_.noiseOffset * randn({rows, latents.size(1), 1, 1}, latents);
  }
  torch::Tensor t = batch.timesteps.defined() ? batch.timesteps.to(torch::kLong) : randTimesteps(rows);
  torch::Tensor noisy = schedule_.addNoise(latents, noise, t.to(device));
  torch::Tensor context = encodeText(batch).to(device, dtype);
  torch::Tensor pred = unet_->forward(noisy, t.to(device), context);  // [B, 4, h, w]
  torch::Tensor goal = target(latents, noise, t.to(device));

  // The loss, as train_text_to_image_lora.py / train_dreambooth_lora.py compute it.
  const int64_t instanceRows = rows - batch.priorRows;
  torch::Tensor predInstance = pred.narrow(0, 0, instanceRows);
  torch::Tensor goalInstance = goal.narrow(0, 0, instanceRows);
  torch::Tensor instanceLoss;
  if (options_.snrGamma > 0) {
    torch::Tensor snr = schedule_.snr(t.narrow(0, 0, instanceRows)).to(device);  // [b]
    torch::Tensor weights = torch::clamp_max(snr, options_.snrGamma);
    weights = options_.predictionType == sched::PredictionType::VPrediction ? weights / (snr + 1) : weights / snr;
    // Zero terminal SNR (rescale_betas_zero_snr): min(0, gamma) / 0 is NaN; weight such rows 1.
    weights = torch::where(snr == 0, torch::ones_like(weights), weights);
    torch::Tensor perRow = F::mse_loss(predInstance.to(torch::kFloat), goalInstance.to(torch::kFloat),
                                       F::MSELossFuncOptions().reduction(torch::kNone))
                               .mean(std::vector<int64_t>{1, 2, 3});  // [b]
    instanceLoss = (perRow * weights).mean();
  } else {
    instanceLoss = mseMean(predInstance, goalInstance);
  }
  torch::Tensor loss = instanceLoss;
  torch::Tensor priorLoss;
  if (batch.priorRows > 0) {
    priorLoss = mseMean(pred.narrow(0, instanceRows, batch.priorRows), goal.narrow(0, instanceRows, batch.priorRows));
    loss = loss + options_.priorLossWeight * priorLoss;
  }

  StepResult result;
  result.loss = loss.item<double>();
  result.instanceLoss = instanceLoss.item<double>();
  result.priorLoss = priorLoss.defined() ? priorLoss.item<double>() : 0.0;
  if (keepPrediction) result.modelPred = pred.detach();
  result.phaseMs.forward = msSince(clock);
  // accelerate divides by the accumulation count so accumulated gradients average.
  torch::Tensor weighted = batch.lossWeight == 1.0 ? loss : loss * batch.lossWeight;  // data parallel shares
  backward(scaler_.scaleLoss(weighted / static_cast<double>(options_.gradientAccumulationSteps)), result);
  result.phaseMs.backward = msSince(clock);
  ++microStep_;
  if (microStep_ % options_.gradientAccumulationSteps == 0) optimizerBoundary(lrs, result);
  result.lossScale = scaler_.scale();
  result.microStep = microStep_;
  result.optimizerStep = optimizerStep_;
  return result;
}

void Trainer::backward(const torch::Tensor& loss, StepResult& result) {
  // Accumulating micro-steps keep their gradients local (DDP's no_sync); the boundary's backward
  // averages everything accumulated so far. Gradient checkpointing's recomputation runs nested
  // backwards on this thread: the accumulators' hooks fire inside them just the same.
  const bool boundary = (microStep_ + 1) % options_.gradientAccumulationSteps == 0;
  if (boundary && overlappedBackward_) {
    result.gradientsAveraged = true;
    result.gradientsOverlapped = overlappedBackward_(loss);
  } else {
    loss.backward();
  }
}

void Trainer::optimizerBoundary(const std::vector<double>& lrs, StepResult& result) {
  auto clock = Clock::now();
  // Data parallel: the mean over ranks (unless the backward took it already).
  if (gradientReducer_ && !result.gradientsAveraged) gradientReducer_(grads());
  // Unscaled, clipped and applied in float32: unscaling half gradients in place would flush the
  // small ones to zero, which is what the scaling was for (GradScaler refuses fp16 grads too).
  std::vector<torch::Tensor> all;
  for (const auto& g : grads()) all.push_back(g.defined() ? g.to(torch::kFloat) : g);
  bool finite = scaler_.unscale(all);
  result.optimizerStepped = true;
  if (!finite) {
    // An overflow (float16) or a NaN loss: no update; the scaler backs off.
    result.overflow = true;
    result.gradNorm = std::nan("");
  } else {
    result.gradNorm = clipGradNorm(all, options_.maxGradNorm);
    result.phaseMs.clip = msSince(clock);
    size_t offset = 0;
    for (size_t g = 0; g < groups_.size(); ++g) {
      const size_t n = groups_[g].params.size();
      std::vector<torch::Tensor> slice(all.begin() + offset, all.begin() + offset + n);
      optimizers_[g]->step(lrs[g], slice);
      offset += n;
    }
    ++optimizerStep_;
    if (ema_) ema_->update(groups_[emaGroup_].params, optimizerStep_);
  }
  scaler_.update(!finite);
  for (auto& optimizer : optimizers_) optimizer->zeroGrad();
  result.phaseMs.optimizer = msSince(clock);
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::stateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const auto& group = groups_[g];
    for (const auto& [name, p] : group.params) out.emplace_back("param." + group.name + "." + name, p.detach());
    for (auto& [name, t] : optimizers_[g]->stateDict()) out.emplace_back("optim." + group.name + "." + name, t);
  }
  if (ema_) {
    for (auto& [name, t] : ema_->stateDict()) out.emplace_back("ema." + name, t);
  }
  out.emplace_back("scaler", scaler_.state());
  out.emplace_back("generator", generator_.get_state());
  out.emplace_back("counters", torch::tensor({microStep_, optimizerStep_}, torch::kLong));
  return out;
}

void Trainer::loadStateDict(const std::map<std::string, torch::Tensor>& state) {
  auto need = [&](const std::string& key) -> const torch::Tensor& {
    auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error("training state: missing \"" + key + "\"");
    return it->second;
  };
  torch::NoGradGuard noGrad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    auto& group = groups_[g];
    std::map<std::string, torch::Tensor> optim;
    const std::string prefix = "optim." + group.name + ".";
    for (const auto& [key, t] : state) {
      if (key.rfind(prefix, 0) == 0) optim[key.substr(prefix.size())] = t;
    }
    for (auto& [name, p] : group.params) {
      const torch::Tensor& saved = need("param." + group.name + "." + name);
      if (saved.sizes() != p.sizes()) {
        throw std::runtime_error("training state: \"" + name + "\" has shape " + c10::str(saved.sizes()) +
                                 ", the model has " + c10::str(p.sizes()));
      }
      p.copy_(saved);
    }
    optimizers_[g]->loadStateDict(optim);
  }
  if (ema_) {
    std::map<std::string, torch::Tensor> shadow;
    for (const auto& [key, t] : state) {
      if (key.rfind("ema.", 0) == 0) shadow[key.substr(4)] = t;
    }
    ema_->loadStateDict(shadow);
  }
  scaler_.loadState(need("scaler"));
  generator_.set_state(need("generator").to(torch::kCPU).contiguous());
  torch::Tensor counters = need("counters").to(torch::kCPU);
  microStep_ = counters[0].item<int64_t>();
  optimizerStep_ = counters[1].item<int64_t>();
}

void Trainer::copyEmaToModel() {
  if (ema_) ema_->copyTo(groups_[emaGroup_].params);
}

}  // namespace sdtune::train
