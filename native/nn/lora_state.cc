// Which adapters act on a model: several at once with weights, enabled or not, removed, and folded
// into their layers' weights and back (diffusers' set_adapters / fuse_lora / unfuse_lora).
#include "nn/lora.h"
#include "nn/lora_types.h"

#include <cmath>
#include <map>
#include <set>
#include <stdexcept>

namespace sdtune::nn::lora {

// ---- several adapters

void setActive(torch::nn::Module& root, const std::vector<std::string>& names, const std::vector<double>& weights) {
  if (names.size() != weights.size()) {
    throw std::invalid_argument("setAdapters: " + std::to_string(names.size()) + " names but " +
                                std::to_string(weights.size()) + " weights");
  }
  std::map<std::string, double> wanted;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!std::isfinite(weights[i]))
      throw std::invalid_argument("setAdapters: weight of \"" + names[i] + "\" must be finite");
    if (!wanted.emplace(names[i], weights[i]).second) {
      throw std::invalid_argument("setAdapters: \"" + names[i] + "\" is listed twice");
    }
  }
  auto layers = adaptableLayers(root);
  std::set<std::string> known, fusedChanged;
  for (auto& l : layers) {
    for (auto& [name, a] : l.layer->adapters()) {
      known.insert(name);
      auto it = wanted.find(name);
      bool enabled = it != wanted.end();
      double multiplier = enabled ? it->second : a.multiplier;
      if (a.fused && (enabled != a.enabled || multiplier != a.multiplier)) fusedChanged.insert(name);
    }
  }
  std::vector<std::string> problems;
  for (auto& [name, w] : wanted) {
    if (!known.count(name)) problems.push_back("no LoRA adapter named \"" + name + "\" on this model");
  }
  for (auto& name : fusedChanged) {
    problems.push_back("\"" + name + "\" is fused into the weights: unfuse it before changing its scale or state");
  }
  if (!problems.empty()) fail("setAdapters", problems);
  for (auto& l : layers) {
    for (auto& [name, a] : l.layer->adapters()) {
      auto it = wanted.find(name);
      a.enabled = it != wanted.end();
      if (a.enabled) a.multiplier = it->second;
    }
  }
}

void setEnabled(torch::nn::Module& root, bool enabled) {
  auto layers = adaptableLayers(root);
  if (!enabled) {
    std::set<std::string> fused;
    for (auto& l : layers) {
      for (auto& [name, a] : l.layer->adapters()) {
        if (a.fused) fused.insert(name);
      }
    }
    if (!fused.empty()) {
      std::vector<std::string> problems;
      for (auto& name : fused) problems.push_back("\"" + name + "\" is fused into the weights: unfuse it first");
      fail("cannot disable LoRA adapters", problems);
    }
  }
  for (auto& l : layers) l.layer->adaptersActive = enabled;
}

int64_t remove(torch::nn::Module& root, const std::string& name) {
  auto layers = adaptableLayers(root);
  int64_t count = 0;
  for (auto& l : layers) {
    auto it = l.layer->adapters().find(name);
    if (it == l.layer->adapters().end()) continue;
    if (it->second.fused) {
      throw std::invalid_argument("LoRA \"" + name + "\" is fused into the weights: unfuse it before removing it");
    }
    ++count;
  }
  if (count == 0) throw std::invalid_argument("no LoRA adapter named \"" + name + "\" on this model");
  for (auto& l : layers) l.layer->adapters().erase(name);
  return count;
}

// ---- fuse / unfuse

torch::Tensor delta(const LoraAdapter& adapter, at::IntArrayRef weightShape, double factor) {
  if (adapter.type == AdapterType::Loha) return lohaWeight(adapter.factors, weightShape).detach().mul(factor);
  if (adapter.type == AdapterType::Lokr) return lokrWeight(adapter.factors, weightShape).detach().mul(factor);
  if (adapter.type == AdapterType::Dora) {
    throw std::invalid_argument("a DoRA adapter's delta depends on the base weight: use fuse");
  }
  torch::Tensor up = adapter.up.detach().to(at::kFloat).flatten(1);      // [out, r]
  torch::Tensor down = adapter.down.detach().to(at::kFloat).flatten(1);  // [r, in * kh * kw]
  return up.matmul(down).mul(factor).view(weightShape);                  // peft: (B @ A) * scaling
}

int64_t fuse(torch::nn::Module& root, const FuseOptions& options) {
  if (!std::isfinite(options.scale)) throw std::invalid_argument("fuse: scale must be finite");
  auto layers = adaptableLayers(root);
  std::set<std::string> selected(options.names.begin(), options.names.end());
  std::set<std::string> known;
  bool reversiblyFused = false;
  for (auto& l : layers) {
    reversiblyFused = reversiblyFused || l.layer->unfusedWeight.defined();
    for (auto& [name, a] : l.layer->adapters()) {
      known.insert(name);
      if (options.names.empty() && a.enabled && !a.fused && l.layer->adaptersActive) selected.insert(name);
    }
  }
  std::vector<std::string> problems;
  for (auto& name : options.names) {
    if (!known.count(name)) problems.push_back("no LoRA adapter named \"" + name + "\" on this model");
  }
  if (options.permanent && reversiblyFused) {
    problems.push_back("some adapters are already fused reversibly: unfuse them before a permanent fuse");
  }
  if (!problems.empty()) fail("fuse", problems);

  torch::NoGradGuard noGrad;
  int64_t changed = 0;
  for (auto& l : layers) {
    std::vector<std::string> here;
    for (auto& [name, a] : l.layer->adapters()) {
      if (selected.count(name) && !a.fused) here.push_back(name);
    }
    if (here.empty()) continue;
    torch::Tensor& weight = l.layer->baseWeight();
    if (!options.permanent && !l.layer->unfusedWeight.defined()) {
      l.layer->unfusedWeight = weight.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
    }
    // Sum in float32, round to the weight's dtype once.
    torch::Tensor sum = weight.detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    for (auto& name : here) {
      const LoraAdapter& a = l.layer->adapters().at(name);
      sum.add_(adapterDelta(a, weight, options.scale));
    }
    weight.detach().copy_(sum);
    for (auto& name : here) {
      if (options.permanent) {
        l.layer->adapters().erase(name);
      } else {
        l.layer->adapters().at(name).fused = true;
      }
    }
    ++changed;
  }
  return changed;
}

int64_t unfuse(torch::nn::Module& root) {
  torch::NoGradGuard noGrad;
  int64_t restored = 0;
  for (auto& l : adaptableLayers(root)) {
    if (!l.layer->unfusedWeight.defined()) continue;
    l.layer->baseWeight().detach().copy_(l.layer->unfusedWeight);
    l.layer->unfusedWeight = torch::Tensor();
    for (auto& [name, a] : l.layer->adapters()) a.fused = false;
    ++restored;
  }
  return restored;
}

}  // namespace sdtune::nn::lora
