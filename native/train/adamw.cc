#include "train/adamw.h"

#include <cmath>

namespace sdtune::train {

AdamW::AdamW(NamedTensorList params, AdamWOptions options) : Optimizer(std::move(params)), options_(options) {
  for (size_t i = 0; i < this->params().size(); ++i) {
    expAvg_.push_back(zerosLike(i));
    expAvgSq_.push_back(zerosLike(i));
  }
}

void AdamW::update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) {
  const auto step = static_cast<double>(stepCount());
  const double bias1 = 1.0 - std::pow(options_.beta1, step);
  const double bias2 = 1.0 - std::pow(options_.beta2, step);
  const double stepSize = lr / bias1;
  const double bias2Sqrt = std::sqrt(bias2);
  for (size_t i = 0; i < weights.size(); ++i) {
    const torch::Tensor& g = grads[i];
    if (!g.defined()) continue;
    torch::Tensor w = weights[i];
    // Same operation order as torch 1.13's single-tensor AdamW.
    w.mul_(1.0 - lr * options_.weightDecay);
    expAvg_[i].mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    expAvgSq_[i].mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    torch::Tensor denom = (expAvgSq_[i].sqrt() / bias2Sqrt).add_(options_.eps);
    w.addcdiv_(expAvg_[i], denom, -stepSize);
  }
}

void AdamW::saveState(NamedTensorList& out) const {
  for (size_t i = 0; i < expAvg_.size(); ++i) {
    out.emplace_back(name(i) + ".exp_avg", expAvg_[i]);
    out.emplace_back(name(i) + ".exp_avg_sq", expAvgSq_[i]);
  }
}

void AdamW::loadState(const StateReader& in) {
  for (size_t i = 0; i < expAvg_.size(); ++i) {
    expAvg_[i] = in.take(name(i) + ".exp_avg", expAvg_[i]);
    expAvgSq_[i] = in.take(name(i) + ".exp_avg_sq", expAvgSq_[i]);
  }
}

}  // namespace sdtune::train
