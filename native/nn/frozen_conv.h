// A 2-D convolution whose weight takes no gradient, taken as one matrix product (im2col,
// then weight [O, C*k*k] @ columns) split over the OpenMP team (nn/parallel_mm.h), forward
// and backward (dx = col2im(weight^T @ dy)). Only where it pays (frozen_conv.cc): few output
// positions, where the layer is bound by reading its weight and oneDNN first reorders the whole
// weight into its blocked layout on every call (a read and a write of 59-118 MB on SD's
// 1280-channel layers), and small inputs libtorch gives a one-thread im2col + GEMM.
#pragma once

#include <torch/torch.h>

namespace sdtune::nn {

struct ConvGeometry {
  int64_t kernel = 1, stride = 1, padding = 0;
};

// Whether frozenConv2d takes these: float32 CPU, no gradient for weight and bias, a size
// where it pays (frozen_conv.cc), and SDTUNE_PARALLEL_GEMM not 0.
bool frozenConvApplies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                       const ConvGeometry& geometry);

// F::conv2d(x, weight, bias, stride, padding) for the inputs above; differentiable in x.
torch::Tensor frozenConv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                           const ConvGeometry& geometry);

}  // namespace sdtune::nn
