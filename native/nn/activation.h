// The activations diffusers' get_activation() names ("silu"/"swish", "gelu", "mish", "relu").
#pragma once

#include <torch/torch.h>

#include <string>

namespace sdtune::nn {

enum class Activation { None, SiLU, GELU, Mish, ReLU };

// `field` names the config field in the error for an unknown name; "" or "none" -> None.
Activation parseActivation(const std::string& name, const std::string& field);
std::string activationName(Activation act);
torch::Tensor activate(Activation act, const torch::Tensor& x);

}  // namespace sdtune::nn
