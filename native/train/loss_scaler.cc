#include "train/loss_scaler.h"

namespace sdtune::train {

LossScaler::LossScaler(LossScalerOptions options) : options_(options), scale_(options.initScale) {}

bool allFinite(const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> flags;  // one device-side flag per gradient, read back once
  for (const auto& g : grads) {
    if (g.defined()) flags.push_back(torch::isfinite(g).all().to(torch::kCPU, /*non_blocking=*/false));
  }
  return flags.empty() || torch::stack(flags).all().item<bool>();
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& grads) const {
  if (!options_.enabled) return allFinite(grads);
  torch::NoGradGuard noGrad;
  const double inv = 1.0 / scale_;
  for (const auto& g : grads) {
    if (g.defined()) g.mul_(inv);
  }
  return allFinite(grads);
}

void LossScaler::update(bool overflowed) {
  if (overflowed) ++skipped_;
  if (!options_.enabled) return;
  if (overflowed) {
    scale_ *= options_.backoffFactor;
    goodSteps_ = 0;
    return;
  }
  if (++goodSteps_ >= options_.growthInterval) {
    scale_ *= options_.growthFactor;
    goodSteps_ = 0;
  }
}

torch::Tensor LossScaler::state() const {
  return torch::tensor({scale_, static_cast<double>(goodSteps_), static_cast<double>(skipped_)}, torch::kDouble);
}

void LossScaler::loadState(const torch::Tensor& state) {
  TORCH_CHECK(state.numel() == 3, "loss scaler state must hold 3 values, got ", state.numel());
  auto s = state.to(torch::kCPU, torch::kDouble);
  scale_ = s[0].item<double>();
  goodSteps_ = static_cast<int64_t>(s[1].item<double>());
  skipped_ = static_cast<int64_t>(s[2].item<double>());
}

}  // namespace sdtune::train
