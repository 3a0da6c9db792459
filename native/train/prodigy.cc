#include "train/prodigy.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace sdtune::train {

Prodigy::Prodigy(NamedTensorList params, ProdigyOptions options)
    : Optimizer(std::move(params)), options_(options), d_(options.d0), dMax_(options.d0) {
  if (!(options_.d0 > 0)) throw std::invalid_argument("Prodigy: d0 must be > 0");
  if (options_.sliceP < 1) throw std::invalid_argument("Prodigy: slice_p must be >= 1");
  if (std::isnan(options_.beta3)) options_.beta3 = std::sqrt(options_.beta2);
  for (size_t i = 0; i < this->params().size(); ++i) {
    expAvg_.push_back(options_.beta1 > 0 ? zerosLike(i) : torch::Tensor());
    expAvgSq_.push_back(zerosLike(i));
    s_.push_back(sliced(zerosLike(i)).clone());
    p0_.push_back(s_.back().clone());
    started_.push_back(false);
  }
}

torch::Tensor Prodigy::sliced(const torch::Tensor& t) const {
  return t.flatten().slice(0, 0, c10::nullopt, options_.sliceP);  // flatten()[::slice_p]
}

bool Prodigy::accumulate(double lr, double dlr, const std::vector<torch::Tensor>& weights,
                         const std::vector<torch::Tensor>& grads, double& deltaNumerator, double& dDenom) {
  const ProdigyOptions& o = options_;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!grads[i].defined()) continue;
    torch::Tensor g = grads[i];
    if (o.weightDecay != 0 && !o.decouple) g = g.add(weights[i], o.weightDecay);  // coupled (L2) decay
    if (!started_[i]) {
      p0_[i] = sliced(weights[i]).clone();  // the distance is measured from the weights at the first step
      started_[i] = true;
    }
    if (lr <= 0) continue;
    torch::Tensor gs = sliced(g);
    // d / d0 rather than d keeps the sums away from tiny values (as the reference).
    deltaNumerator += (d_ / o.d0) * dlr * torch::dot(gs, p0_[i] - sliced(weights[i])).item<double>();
    if (expAvg_[i].defined()) expAvg_[i].mul_(o.beta1).add_(g, d_ * (1 - o.beta1));
    expAvgSq_[i].mul_(o.beta2).addcmul_(g, g, d_ * d_ * (1 - o.beta2));
    s_[i].mul_(o.beta3).add_(gs, (d_ / o.d0) * (o.safeguardWarmup ? d_ : dlr));
    dDenom += s_[i].abs().sum().item<double>();
  }
  return dDenom != 0;
}

void Prodigy::update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) {
  const ProdigyOptions& o = options_;
  const double kk = static_cast<double>(k_ + 1);
  const double biasCorrection =
      o.useBiasCorrection ? std::sqrt(1 - std::pow(o.beta2, kk)) / (1 - std::pow(o.beta1, kk)) : 1.0;
  const double dlr = d_ * lr * biasCorrection;
  double deltaNumerator = 0.0, dDenom = 0.0;
  // No progress possible yet (all gradients zero): the reference returns before the update.
  if (!accumulate(lr, dlr, weights, grads, deltaNumerator, dDenom)) return;
  const double dNumerator = dNumerator_ * o.beta3 + deltaNumerator;
  if (lr > 0) {
    const double dHat = o.dCoef * dNumerator / dDenom;
    if (d_ == o.d0) d_ = std::max(d_, dHat);
    dMax_ = std::max(dMax_, dHat);
    d_ = std::min(dMax_, d_ * o.growthRate);
  }
  dNumerator_ = dNumerator;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!grads[i].defined()) continue;
    torch::Tensor w = weights[i];
    torch::Tensor denom = expAvgSq_[i].sqrt().add_(d_ * o.eps);
    if (o.weightDecay != 0 && o.decouple) w.add_(w, -o.weightDecay * dlr);
    if (expAvg_[i].defined()) {
      w.addcdiv_(expAvg_[i], denom, -dlr);
    } else {
      torch::Tensor g = o.decouple || o.weightDecay == 0 ? grads[i] : grads[i].add(w, o.weightDecay);
      w.addcdiv_(g, denom, -dlr * d_);
    }
  }
  ++k_;
}

void Prodigy::saveState(NamedTensorList& out) const {
  std::vector<int64_t> started;
  for (size_t i = 0; i < expAvgSq_.size(); ++i) {
    if (expAvg_[i].defined()) out.emplace_back(name(i) + ".exp_avg", expAvg_[i]);
    out.emplace_back(name(i) + ".exp_avg_sq", expAvgSq_[i]);
    out.emplace_back(name(i) + ".s", s_[i]);
    out.emplace_back(name(i) + ".p0", p0_[i]);
    started.push_back(started_[i] ? 1 : 0);
  }
  out.emplace_back("__prodigy__", torch::tensor({d_, dMax_, dNumerator_, static_cast<double>(k_)}, torch::kDouble));
  out.emplace_back("__prodigy_started__", torch::tensor(started, torch::kLong));
}

void Prodigy::loadState(const StateReader& in) {
  for (size_t i = 0; i < expAvgSq_.size(); ++i) {
    if (expAvg_[i].defined()) expAvg_[i] = in.take(name(i) + ".exp_avg", expAvg_[i]);
    expAvgSq_[i] = in.take(name(i) + ".exp_avg_sq", expAvgSq_[i]);
    s_[i] = in.take(name(i) + ".s", s_[i]);
    p0_[i] = in.take(name(i) + ".p0", p0_[i]);
  }
  torch::Tensor scalars = in.take("__prodigy__", torch::zeros({4}, torch::kDouble));
  d_ = scalars[0].item<double>();
  dMax_ = scalars[1].item<double>();
  dNumerator_ = scalars[2].item<double>();
  k_ = static_cast<int64_t>(scalars[3].item<double>());
  torch::Tensor started =
      in.take("__prodigy_started__", torch::zeros({static_cast<int64_t>(started_.size())}, torch::kLong));
  for (size_t i = 0; i < started_.size(); ++i) started_[i] = started[static_cast<int64_t>(i)].item<int64_t>() != 0;
}

}  // namespace sdtune::train
