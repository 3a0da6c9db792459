#include "train/adamw.h"

#include <cmath>
#include <stdexcept>

namespace sdtune::train {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  torch::NoGradGuard noGrad;
  for (auto& [name, p] : params_) {
    Slot slot;
    auto f32 = p.options().dtype(torch::kFloat);
    slot.expAvg = torch::zeros(p.sizes(), f32);
    slot.expAvgSq = torch::zeros(p.sizes(), f32);
    if (p.scalar_type() != torch::kFloat) slot.master = p.detach().to(torch::kFloat).clone();
    slots_.push_back(std::move(slot));
  }
}

void AdamW::step(double lr, const std::vector<torch::Tensor>& grads) {
  if (!grads.empty() && grads.size() != params_.size()) {
    throw std::invalid_argument("AdamW.step: " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(params_.size()) + " parameters");
  }
  torch::NoGradGuard noGrad;
  ++step_;
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  const double stepSize = lr / bias1;
  const double bias2Sqrt = std::sqrt(bias2);
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].second;
    torch::Tensor g = grads.empty() ? p.grad() : grads[i];
    if (!g.defined()) continue;
    Slot& s = slots_[i];
    torch::Tensor target = s.master.defined() ? s.master : p;  // float32 weights the update runs on
    g = g.to(torch::kFloat);
    // Same operation order as torch 1.13's single-tensor AdamW.
    target.mul_(1.0 - lr * options_.weightDecay);
    s.expAvg.mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    s.expAvgSq.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    torch::Tensor denom = (s.expAvgSq.sqrt() / bias2Sqrt).add_(options_.eps);
    target.addcdiv_(s.expAvg, denom, -stepSize);
    if (s.master.defined()) p.copy_(s.master);  // round the master into the half parameter
  }
}

void AdamW::zeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::stateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    out.emplace_back(name + ".exp_avg", slots_[i].expAvg);
    out.emplace_back(name + ".exp_avg_sq", slots_[i].expAvgSq);
    if (slots_[i].master.defined()) out.emplace_back(name + ".master", slots_[i].master);
  }
  out.emplace_back("__step__", torch::tensor({step_}, torch::kLong));
  return out;
}

void AdamW::loadStateDict(const std::map<std::string, torch::Tensor>& state) {
  auto take = [&](const std::string& key, const torch::Tensor& like) {
    auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error("optimizer state: missing \"" + key + "\"");
    if (it->second.sizes() != like.sizes()) {
      throw std::runtime_error("optimizer state: \"" + key + "\" has shape " + c10::str(it->second.sizes()) +
                               ", expected " + c10::str(like.sizes()));
    }
    return it->second.to(like.device(), like.scalar_type()).clone();
  };
  torch::NoGradGuard noGrad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    slots_[i].expAvg = take(name + ".exp_avg", slots_[i].expAvg);
    slots_[i].expAvgSq = take(name + ".exp_avg_sq", slots_[i].expAvgSq);
    if (slots_[i].master.defined()) slots_[i].master = take(name + ".master", slots_[i].master);
  }
  auto it = state.find("__step__");
  if (it == state.end()) throw std::runtime_error("optimizer state: missing \"__step__\"");
  step_ = it->second.to(torch::kCPU).to(torch::kLong).item<int64_t>();
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
