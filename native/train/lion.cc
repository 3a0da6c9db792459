#include "train/lion.h"

namespace sdtune::train {

Lion::Lion(NamedTensorList params, LionOptions options) : Optimizer(std::move(params)), options_(options) {
  for (size_t i = 0; i < this->params().size(); ++i) expAvg_.push_back(zerosLike(i));
}

void Lion::update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) {
  for (size_t i = 0; i < weights.size(); ++i) {
    const torch::Tensor& g = grads[i];
    if (!g.defined()) continue;
    torch::Tensor w = weights[i];
    w.mul_(1.0 - lr * options_.weightDecay);
    torch::Tensor direction = (expAvg_[i] * options_.beta1).add_(g, 1.0 - options_.beta1).sign_();
    w.add_(direction, -lr);
    expAvg_[i].mul_(options_.beta2).add_(g, 1.0 - options_.beta2);
  }
}

void Lion::saveState(NamedTensorList& out) const {
  for (size_t i = 0; i < expAvg_.size(); ++i) out.emplace_back(name(i) + ".exp_avg", expAvg_[i]);
}

void Lion::loadState(const StateReader& in) {
  for (size_t i = 0; i < expAvg_.size(); ++i) expAvg_[i] = in.take(name(i) + ".exp_avg", expAvg_[i]);
}

}  // namespace sdtune::train
