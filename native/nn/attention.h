// diffusers' Attention module (attention_processor.py) with its checkpoint names:
// to_q / to_k / to_v, to_out.0 (to_out.1 is a parameterless dropout), and for the
// VAE mid-block variant group_norm. The product itself is nn::attend().
#pragma once

#include <torch/torch.h>

#include "nn/linear.h"

namespace sdtune::nn {

struct AttentionOptions {
  int64_t queryDim = 0;
  int64_t heads = 8;
  int64_t dimHead = 64;
  int64_t crossAttentionDim = 0;  // 0: K/V come from the query input (self-attention)
  bool bias = false;              // on to_q / to_k / to_v (false in the UNet, true in the VAE)
  bool outBias = true;            // on to_out.0
  double dropout = 0.0;           // after to_out.0, training only
  bool upcastAttention = false;   // q k^T and the softmax in float32 for half inputs
  // VAE mid-block variant (the old AttentionBlock): GroupNorm first, residual after, output rescaled.
  int64_t normNumGroups = 0;  // 0: no group_norm
  double normEps = 1e-5;
  bool residualConnection = false;
  double rescaleOutputFactor = 1.0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  // x: [B, L, C] tokens, or [B, C, H, W] (flattened to H*W tokens and back).
  // context: [B, Lk, Ck] for cross-attention, or undefined for self-attention.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});

  AttentionOptions options;
  torch::nn::GroupNorm group_norm{nullptr};
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [Linear, Dropout]: keys to_out.0.weight / to_out.0.bias
  Linear out{nullptr};                    // = to_out[0]
};
TORCH_MODULE(Attention);

}  // namespace sdtune::nn
