#include "nn/frozen_linear.h"

#include "nn/parallel_mm.h"

namespace sdtune::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x [..., in] -> [..., out].
torch::Tensor linearForward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  torch::Tensor y = parallelMmPlus(x.reshape({-1, x.size(-1)}), weight.t(), bias);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y.view(sizes);
}

// The weight and bias travel as one non-tensor argument: they take no gradient, and
// libtorch 1.13's Function::apply cannot take an undefined tensor (a layer without bias).
struct FrozenParams {
  torch::Tensor weight, bias;
};

struct FrozenLinearFunction : public torch::autograd::Function<FrozenLinearFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const FrozenParams& params) {
    ctx->saved_data["weight"] = params.weight;
    ctx->saved_data["input_sizes"] = x.sizes().vec();
    return linearForward(x, params.weight, params.bias);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    torch::Tensor weight = ctx->saved_data["weight"].toTensor();
    torch::Tensor dy = grads[0].reshape({-1, weight.size(0)});
    torch::Tensor dx = parallelMm(dy, weight).view(ctx->saved_data["input_sizes"].toIntVector());
    return {dx, torch::Tensor()};
  }
};

}  // namespace

bool frozenLinearApplies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return x.dim() >= 2 && frozenProductApplies(x, weight, bias);
}

torch::Tensor frozenLinear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (torch::GradMode::is_enabled() && x.requires_grad())
    return FrozenLinearFunction::apply(x, FrozenParams{weight, bias});
  return linearForward(x, weight, bias);
}

}  // namespace sdtune::nn
