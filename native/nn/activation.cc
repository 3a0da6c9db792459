#include "nn/activation.h"

#include <stdexcept>

namespace sdtune::nn {

Activation parseActivation(const std::string& name, const std::string& field) {
  if (name.empty() || name == "none") return Activation::None;
  if (name == "silu" || name == "swish") return Activation::SiLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "mish") return Activation::Mish;
  if (name == "relu") return Activation::ReLU;
  throw std::invalid_argument(field + " = \"" + name +
                              "\" is not supported (expected silu, swish, gelu, mish or relu)");
}

std::string activationName(Activation act) {
  switch (act) {
    case Activation::None: return "none";
    case Activation::SiLU: return "silu";
    case Activation::GELU: return "gelu";
    case Activation::Mish: return "mish";
    case Activation::ReLU: return "relu";
  }
  return "none";
}

torch::Tensor activate(Activation act, const torch::Tensor& x) {
  switch (act) {
    case Activation::None: return x;
    case Activation::SiLU: return torch::silu(x);
    case Activation::GELU: return torch::gelu(x);
    case Activation::Mish: return torch::mish(x);
    case Activation::ReLU: return torch::relu(x);
  }
  return x;
}

}  // namespace sdtune::nn
