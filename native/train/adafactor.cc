#include "train/adafactor.h"

#include <cmath>
#include <stdexcept>

namespace sdtune::train {

namespace {

// The reference's _rms: a float32 0-dim tensor.
torch::Tensor rms(const torch::Tensor& t) {
  return t.norm(2) / std::sqrt(static_cast<double>(t.numel()));
}

}  // namespace

Adafactor::Adafactor(NamedTensorList params, AdafactorOptions options)
    : Optimizer(std::move(params)), options_(options) {
  if (options_.warmupInit && !options_.relativeStep) {
    throw std::invalid_argument("Adafactor: warmup_init needs relative_step");
  }
  for (size_t i = 0; i < this->params().size(); ++i) {
    torch::Tensor zeros = zerosLike(i);
    const bool twoD = zeros.dim() >= 2;
    factored_.push_back(twoD);
    expAvg_.push_back(std::isnan(options_.beta1) ? torch::Tensor() : zeros.clone());
    row_.push_back(twoD ? zeros.select(-1, 0).clone() : torch::Tensor());  // shape[:-1]
    col_.push_back(twoD ? zeros.select(-2, 0).clone() : torch::Tensor());  // shape[:-2] + shape[-1:]
    expAvgSq_.push_back(twoD ? torch::Tensor() : zeros);
  }
}

double Adafactor::stepSize(double lr, const torch::Tensor& weight) const {
  double rel = lr;
  if (options_.relativeStep) {
    const auto step = static_cast<double>(stepCount());
    const double minStep = options_.warmupInit ? 1e-6 * step : 1e-2;
    rel = std::min(minStep, 1.0 / std::sqrt(step));
  }
  if (!options_.scaleParameter) return rel;
  // max(eps2, RMS) * rel: the reference multiplies in float32 when the RMS wins.
  const float r = rms(weight).item<float>();
  return r > options_.eps2 ? static_cast<double>(r * static_cast<float>(rel)) : options_.eps2 * rel;
}

torch::Tensor Adafactor::precondition(size_t i, const torch::Tensor& grad, double beta2t) {
  torch::Tensor sq = grad.pow(2).add_(options_.eps1);
  if (!factored_[i]) {
    expAvgSq_[i].mul_(beta2t).add_(sq, 1.0 - beta2t);
    return expAvgSq_[i].rsqrt().mul_(grad);
  }
  row_[i].mul_(beta2t).add_(sq.mean(-1), 1.0 - beta2t);
  col_[i].mul_(beta2t).add_(sq.mean(-2), 1.0 - beta2t);
  torch::Tensor r = (row_[i] / row_[i].mean(-1, true)).rsqrt_().unsqueeze(-1);
  torch::Tensor c = col_[i].unsqueeze(-2).rsqrt();
  return torch::mul(r, c).mul_(grad);
}

void Adafactor::update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) {
  const double beta2t = 1.0 - std::pow(static_cast<double>(stepCount()), options_.decayRate);
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!grads[i].defined()) continue;
    torch::Tensor w = weights[i];
    const double stepLr = stepSize(lr, w);  // from the weights before this update
    torch::Tensor u = precondition(i, grads[i], beta2t);
    u.div_((rms(u) / options_.clipThreshold).clamp_(1.0));
    u.mul_(stepLr);
    if (expAvg_[i].defined()) {
      expAvg_[i].mul_(options_.beta1).add_(u, 1.0 - options_.beta1);
      u = expAvg_[i];
    }
    if (options_.weightDecay != 0) w.add_(w, -options_.weightDecay * stepLr);
    w.sub_(u);
  }
}

void Adafactor::saveState(NamedTensorList& out) const {
  for (size_t i = 0; i < factored_.size(); ++i) {
    if (expAvg_[i].defined()) out.emplace_back(name(i) + ".exp_avg", expAvg_[i]);
    if (factored_[i]) {
      out.emplace_back(name(i) + ".exp_avg_sq_row", row_[i]);
      out.emplace_back(name(i) + ".exp_avg_sq_col", col_[i]);
    } else {
      out.emplace_back(name(i) + ".exp_avg_sq", expAvgSq_[i]);
    }
  }
}

void Adafactor::loadState(const StateReader& in) {
  for (size_t i = 0; i < factored_.size(); ++i) {
    if (expAvg_[i].defined()) expAvg_[i] = in.take(name(i) + ".exp_avg", expAvg_[i]);
    if (factored_[i]) {
      row_[i] = in.take(name(i) + ".exp_avg_sq_row", row_[i]);
      col_[i] = in.take(name(i) + ".exp_avg_sq_col", col_[i]);
    } else {
      expAvgSq_[i] = in.take(name(i) + ".exp_avg_sq", expAvgSq_[i]);
    }
  }
}

}  // namespace sdtune::train
