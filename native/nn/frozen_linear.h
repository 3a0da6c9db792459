// y = x W^T + b for a weight that takes no gradient (every base layer under LoRA, every
// layer at inference), with the products split over the OpenMP team (nn/parallel_mm.h),
// forward and backward (dx = dy W).
#pragma once

#include <torch/torch.h>

namespace sdtune::nn {

// Whether frozenLinear takes these: float32 CPU, weight and bias without gradients, and the
// split not turned off with SDTUNE_PARALLEL_GEMM=0.
bool frozenLinearApplies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// F::linear(x, weight, bias) for the inputs above; differentiable in x.
torch::Tensor frozenLinear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace sdtune::nn
