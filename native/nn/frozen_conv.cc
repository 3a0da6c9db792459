#include "nn/frozen_conv.h"

#include "nn/parallel_mm.h"

namespace sdtune::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Where the product wins (measured on 2 cores, forward + backward, SD-2's layers): up to 16
// output positions over the batch (SD's deepest level at 32x32 latents: a 1280-channel 3x3
// at 4x4 in 0.56x oneDNN's time, 2560 -> 1280 in 0.85x); from 64 on oneDNN is faster
// (1.2-1.3x at 8x8, 1.6x at 16x16). And wherever libtorch itself would use its one-thread
// im2col + GEMM (batch 1, at most 20480 input values: ATen's ConvParams::use_mkldnn), 0.7x.
constexpr int64_t kMaxPositions = 16;
constexpr int64_t kLibtorchSlowPathValues = 20480;

int64_t outSide(int64_t side, const ConvGeometry& g) {
  return (side + 2 * g.padding - g.kernel) / g.stride + 1;
}

// x [B, C, H, W] -> columns [C*k*k, B*L] (L = output positions per image).
torch::Tensor columns(const torch::Tensor& x, const ConvGeometry& g) {
  const int64_t B = x.size(0);
  torch::Tensor cols;  // [B, C*k*k, L]
  if (g.kernel == 1 && g.stride == 1 && g.padding == 0) {
    cols = x.reshape({B, x.size(1), -1});
  } else {
    cols = at::im2col(x, {g.kernel, g.kernel}, {1, 1}, {g.padding, g.padding}, {g.stride, g.stride});
  }
  return B == 1 ? cols[0] : cols.permute({1, 0, 2}).reshape({cols.size(1), -1});
}

// [O, B*L] -> [B, O, Ho, Wo].
torch::Tensor unbatch(const torch::Tensor& y, int64_t B, int64_t Ho, int64_t Wo) {
  if (B == 1) return y.view({1, y.size(0), Ho, Wo});
  return y.view({y.size(0), B, Ho * Wo}).permute({1, 0, 2}).contiguous().view({B, y.size(0), Ho, Wo});
}

torch::Tensor convForward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                          const ConvGeometry& g) {
  const int64_t B = x.size(0), O = weight.size(0);
  torch::Tensor y = parallelMmPlus(weight.reshape({O, -1}), columns(x, g), bias.defined() ? bias.unsqueeze(1) : bias);
  return unbatch(y, B, outSide(x.size(2), g), outSide(x.size(3), g));
}

// dx for dy [B, O, Ho, Wo]: columns' gradient weight^T @ dy, folded back by col2im.
torch::Tensor convInputGrad(const torch::Tensor& dy, const torch::Tensor& weight, const ConvGeometry& g, int64_t H,
                            int64_t W) {
  const int64_t B = dy.size(0), O = weight.size(0);
  torch::Tensor dy2 = B == 1 ? dy.reshape({O, -1}) : dy.reshape({B, O, -1}).permute({1, 0, 2}).reshape({O, -1});
  torch::Tensor dcols = parallelMm(weight.reshape({O, -1}).t(), dy2);  // [C*k*k, B*L]
  if (B > 1)
    dcols = dcols.view({dcols.size(0), B, -1}).permute({1, 0, 2});
  else
    dcols = dcols.unsqueeze(0);
  const int64_t C = weight.size(1);
  if (g.kernel == 1 && g.stride == 1 && g.padding == 0) return dcols.reshape({B, C, H, W});
  return at::col2im(dcols.contiguous(), {H, W}, {g.kernel, g.kernel}, {1, 1}, {g.padding, g.padding},
                    {g.stride, g.stride});
}

// Weight and bias travel as one non-tensor argument (see frozen_linear.cc).
struct FrozenConvParams {
  torch::Tensor weight, bias;
  ConvGeometry geometry;
};

struct FrozenConvFunction : public torch::autograd::Function<FrozenConvFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const FrozenConvParams& p) {
    ctx->saved_data["weight"] = p.weight;
    ctx->saved_data["geometry"] = std::vector<int64_t>{p.geometry.kernel, p.geometry.stride, p.geometry.padding};
    ctx->saved_data["size"] = std::vector<int64_t>{x.size(2), x.size(3)};
    return convForward(x, p.weight, p.bias, p.geometry);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto geometry = ctx->saved_data["geometry"].toIntVector();
    auto size = ctx->saved_data["size"].toIntVector();
    ConvGeometry g{geometry[0], geometry[1], geometry[2]};
    torch::Tensor dx = convInputGrad(grads[0], ctx->saved_data["weight"].toTensor(), g, size[0], size[1]);
    return {dx, torch::Tensor()};
  }
};

}  // namespace

bool frozenConvApplies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                       const ConvGeometry& g) {
  if (x.dim() != 4 || weight.dim() != 4 || !frozenProductApplies(x, weight, bias)) return false;
  const int64_t positions = x.size(0) * outSide(x.size(2), g) * outSide(x.size(3), g);
  return positions <= kMaxPositions || (x.size(0) == 1 && x.numel() <= kLibtorchSlowPathValues);
}

torch::Tensor frozenConv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                           const ConvGeometry& g) {
  if (torch::GradMode::is_enabled() && x.requires_grad()) {
    return FrozenConvFunction::apply(x, FrozenConvParams{weight, bias, g});
  }
  return convForward(x, weight, bias, g);
}

}  // namespace sdtune::nn
