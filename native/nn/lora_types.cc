// Dispatch over the adapter types (nn/lora_types.h); the math is in lora_{dora,loha,lokr}.cc.
#include "nn/lora_types.h"

#include <stdexcept>

#include "nn/lora.h"

namespace sdtune::nn::lora {

namespace F = torch::nn::functional;

torch::Tensor typedOutput(const LoraAdapter& a, const torch::Tensor& x, const torch::Tensor& y,
                          const LayerContext& layer) {
  if (a.type == AdapterType::Dora) return doraOutput(a, x, y, layer);
  // LoHa / LoKr: LyCORIS applies the (scaled) weight delta with the layer's own op.
  const torch::Tensor& first = a.factors.begin()->second;
  torch::Tensor h = x.to(first.scalar_type());
  at::IntArrayRef shape = layer.weight.sizes();
  torch::Tensor delta = (a.type == AdapterType::Loha ? lohaWeight(a.factors, shape) : lokrWeight(a.factors, shape));
  delta = delta * a.scale();
  if (layer.conv) {
    return F::conv2d(h, delta, F::Conv2dFuncOptions().stride(layer.conv->stride()).padding(layer.conv->padding()));
  }
  return F::linear(h, delta);
}

torch::Tensor adapterDelta(const LoraAdapter& a, const torch::Tensor& weight, double fuseScale) {
  switch (a.type) {
    case AdapterType::Lora: return delta(a, weight.sizes(), a.scale() * fuseScale);
    case AdapterType::Dora: return doraDelta(a, weight, a.multiplier * fuseScale);
    case AdapterType::Loha: return lohaWeight(a.factors, weight.sizes()).detach().mul(a.scale() * fuseScale);
    case AdapterType::Lokr: return lokrWeight(a.factors, weight.sizes()).detach().mul(a.scale() * fuseScale);
  }
  throw std::logic_error("unknown adapter type");
}

std::string typedMisfit(AdapterType type, const std::map<std::string, torch::Tensor>& factors, at::IntArrayRef shape,
                        int64_t& dim) {
  for (const auto& [name, t] : factors) {
    if (!t.defined() || !at::isFloatingType(t.scalar_type())) return name + " must be a floating-point tensor";
    if (t.numel() == 0) return name + " is empty";
  }
  switch (type) {
    case AdapterType::Loha: return lohaMisfit(factors, shape, dim);
    case AdapterType::Lokr: return lokrMisfit(factors, shape, dim);
    case AdapterType::Dora: {
      auto it = factors.find("magnitude");
      if (it == factors.end() || factors.size() != 1) return "a DoRA adapter takes exactly one factor, magnitude";
      if (it->second.dim() != 1 || it->second.size(0) != shape[0]) {
        return "DoRA magnitude must be [" + std::to_string(shape[0]) + "] (one per output channel)";
      }
      return "";
    }
    case AdapterType::Lora: return factors.empty() ? "" : "a plain LoRA adapter takes no factors";
  }
  return "unknown adapter type";
}

AdapterType parseAdapterType(const std::string& name) {
  if (name == "lora") return AdapterType::Lora;
  if (name == "dora") return AdapterType::Dora;
  if (name == "loha") return AdapterType::Loha;
  if (name == "lokr") return AdapterType::Lokr;
  throw std::invalid_argument("adapter type \"" + name + "\" must be lora, dora, loha or lokr");
}

std::string adapterTypeName(AdapterType type) {
  switch (type) {
    case AdapterType::Lora: return "lora";
    case AdapterType::Dora: return "dora";
    case AdapterType::Loha: return "loha";
    case AdapterType::Lokr: return "lokr";
  }
  return "lora";
}

}  // namespace sdtune::nn::lora
