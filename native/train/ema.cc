#include "train/ema.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace sdtune::train {

Ema::Ema(const std::vector<std::pair<std::string, torch::Tensor>>& params, EmaOptions options) : options_(options) {
  torch::NoGradGuard noGrad;
  for (const auto& [name, p] : params) shadow_.emplace_back(name, p.detach().to(torch::kFloat).clone());
}

double Ema::decayAt(int64_t optimizationStep) const {
  double step = static_cast<double>(std::max<int64_t>(0, optimizationStep - options_.updateAfterStep - 1));
  if (step <= 0) return 0.0;
  double decay = options_.useWarmup ? 1.0 - std::pow(1.0 + step / options_.invGamma, -options_.power)
                                    : (1.0 + step) / (10.0 + step);
  decay = std::min(decay, options_.decay);
  return std::max(decay, options_.minDecay);
}

void Ema::update(const std::vector<std::pair<std::string, torch::Tensor>>& params, int64_t optimizationStep) {
  if (params.size() != shadow_.size()) throw std::invalid_argument("EMA: parameter count changed");
  torch::NoGradGuard noGrad;
  const double oneMinus = 1.0 - decayAt(optimizationStep);
  for (size_t i = 0; i < params.size(); ++i) {
    auto& shadow = shadow_[i].second;
    shadow.sub_((shadow - params[i].second.to(torch::kFloat)) * oneMinus);
  }
}

void Ema::copyTo(const std::vector<std::pair<std::string, torch::Tensor>>& params) const {
  torch::NoGradGuard noGrad;
  for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(shadow_[i].second);
}

std::vector<std::pair<std::string, torch::Tensor>> Ema::stateDict() const {
  return shadow_;
}

void Ema::loadStateDict(const std::map<std::string, torch::Tensor>& state) {
  torch::NoGradGuard noGrad;
  for (auto& [name, shadow] : shadow_) {
    auto it = state.find(name);
    if (it == state.end()) throw std::runtime_error("EMA state: missing \"" + name + "\"");
    if (it->second.sizes() != shadow.sizes()) throw std::runtime_error("EMA state: \"" + name + "\" has another shape");
    shadow = it->second.to(shadow.device(), torch::kFloat).clone();
  }
}

}  // namespace sdtune::train
