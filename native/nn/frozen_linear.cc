#include "nn/frozen_linear.h"

#include "nn/parallel_mm.h"

namespace sdtune::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x [..., in] -> [..., out]: the bias broadcast into the output, then x W^T added onto it.
torch::Tensor linearForward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  torch::Tensor x2 = x.reshape({-1, x.size(-1)});
  // A fresh buffer always: .contiguous() of a one-row broadcast would hand back the bias itself.
  torch::Tensor y = at::empty({x2.size(0), weight.size(0)}, x.options());
  if (bias.defined()) y.copy_(bias.unsqueeze(0).expand_as(y));
  parallelAddmmInto(y, x2, weight.t(), bias.defined() ? 1.0 : 0.0, 1.0);
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
  if (!parallelGemmEnabled() || !parallelGemmAvailable(x) || x.dim() < 2 || weight.requires_grad()) return false;
  if (weight.scalar_type() != torch::kFloat || !weight.device().is_cpu()) return false;
  return !bias.defined() || (!bias.requires_grad() && bias.scalar_type() == torch::kFloat);
}

torch::Tensor frozenLinear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (torch::GradMode::is_enabled() && x.requires_grad())
    return FrozenLinearFunction::apply(x, FrozenParams{weight, bias});
  return linearForward(x, weight, bias);
}

}  // namespace sdtune::nn
