#include "train/optimizer.h"

#include <stdexcept>

#include "train/adafactor.h"
#include "train/adamw.h"
#include "train/lion.h"
#include "train/prodigy.h"

namespace sdtune::train {

const torch::Tensor& StateReader::raw(const std::string& key) const {
  auto it = state_.find(key);
  if (it == state_.end()) throw std::runtime_error("optimizer state: missing \"" + key + "\"");
  return it->second;
}

torch::Tensor StateReader::take(const std::string& key, const torch::Tensor& like) const {
  const torch::Tensor& saved = raw(key);
  if (saved.sizes() != like.sizes()) {
    throw std::runtime_error("optimizer state: \"" + key + "\" has shape " + c10::str(saved.sizes()) + ", expected " +
                             c10::str(like.sizes()));
  }
  return saved.to(like.device(), like.scalar_type()).clone();
}

Optimizer::Optimizer(NamedTensorList params) : params_(std::move(params)) {
  torch::NoGradGuard noGrad;
  for (auto& [name, p] : params_) {
    masters_.push_back(p.scalar_type() == torch::kFloat ? torch::Tensor() : p.detach().to(torch::kFloat).clone());
  }
}

torch::Tensor Optimizer::zerosLike(size_t i) const {
  const torch::Tensor& p = params_[i].second;
  return torch::zeros(p.sizes(), p.options().dtype(torch::kFloat));
}

void Optimizer::step(double lr, const std::vector<torch::Tensor>& grads) {
  if (!grads.empty() && grads.size() != params_.size()) {
    throw std::invalid_argument("optimizer step: " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(params_.size()) + " parameters");
  }
  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> weights, floatGrads;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor g = grads.empty() ? params_[i].second.grad() : grads[i];
    weights.push_back(masters_[i].defined() ? masters_[i] : params_[i].second);
    floatGrads.push_back(g.defined() ? g.to(torch::kFloat) : g);
  }
  ++step_;
  update(lr, weights, floatGrads);
  for (size_t i = 0; i < params_.size(); ++i) {
    // Round the master into the half parameter.
    if (masters_[i].defined() && floatGrads[i].defined()) params_[i].second.copy_(masters_[i]);
  }
}

void Optimizer::zeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
}

NamedTensorList Optimizer::stateDict() const {
  NamedTensorList out;
  saveState(out);
  for (size_t i = 0; i < params_.size(); ++i) {
    if (masters_[i].defined()) out.emplace_back(name(i) + ".master", masters_[i]);
  }
  out.emplace_back("__step__", torch::tensor({step_}, torch::kLong));
  return out;
}

void Optimizer::loadStateDict(const std::map<std::string, torch::Tensor>& state) {
  torch::NoGradGuard noGrad;
  StateReader in(state);
  loadState(in);
  for (size_t i = 0; i < params_.size(); ++i) {
    if (masters_[i].defined()) masters_[i] = in.take(name(i) + ".master", masters_[i]);
  }
  step_ = in.raw("__step__").to(torch::kCPU).to(torch::kLong).item<int64_t>();
}

std::unique_ptr<Optimizer> makeOptimizer(NamedTensorList params, const OptimizerOptions& options) {
  switch (options.kind) {
    case OptimizerKind::AdamW: return std::make_unique<AdamW>(std::move(params), options.adamw);
    case OptimizerKind::Prodigy: return std::make_unique<Prodigy>(std::move(params), options.prodigy);
    case OptimizerKind::Adafactor: return std::make_unique<Adafactor>(std::move(params), options.adafactor);
    case OptimizerKind::Lion: return std::make_unique<Lion>(std::move(params), options.lion);
  }
  throw std::invalid_argument("unknown optimizer kind");
}

double clipGradNorm(const std::vector<torch::Tensor>& grads, double maxNorm) {
  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> norms;
  for (const auto& g : grads) {
    if (g.defined()) norms.push_back(g.detach().to(torch::kFloat).norm(2));
  }
  if (norms.empty()) return 0.0;
  torch::Tensor total = torch::stack(norms).norm(2);  // norm of the per-tensor norms, as torch does
  double norm = total.item<double>();
  if (maxNorm > 0.0) {
    // clip_coef = max_norm / (total + 1e-6), clamped to 1, computed as a float32 tensor like torch.
    torch::Tensor coef = torch::clamp_max(maxNorm / (total + 1e-6), 1.0);
    for (const auto& g : grads) {
      if (g.defined()) g.mul_(coef.to(g.scalar_type()));
    }
  }
  return norm;
}

}  // namespace sdtune::train
