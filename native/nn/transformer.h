// diffusers' spatial transformer (transformer_2d.py, attention.py) with its checkpoint
// names: Transformer2DModel = norm, proj_in, transformer_blocks.N, proj_out;
// BasicTransformerBlock = norm1/attn1, norm2/attn2, norm3/ff (GEGLU: ff.net.0.proj, ff.net.2).
#pragma once

#include <torch/torch.h>

#include "nn/attention.h"
#include "nn/linear.h"

namespace sdtune::nn {

struct BasicTransformerBlockOptions {
  int64_t dim = 0;
  int64_t heads = 8;
  int64_t dimHead = 64;
  int64_t crossAttentionDim = 0;    // 0: no attn2
  bool onlyCrossAttention = false;  // attn1 attends to the context too
  bool upcastAttention = false;
  double dropout = 0.0;
};

// GEGLU: proj to 2*inner, the second half gates the first through GELU.
class GEGLUImpl : public torch::nn::Module {
 public:
  GEGLUImpl(int64_t dimIn, int64_t dimOut);
  torch::Tensor forward(const torch::Tensor& x);  // [.., dimIn] -> [.., dimOut]
  Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

// FeedForward: net = [GEGLU, Dropout, Linear].
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList net{nullptr};
  GEGLU geglu{nullptr};
  torch::nn::Dropout drop{nullptr};
  Linear proj_out{nullptr};
};
TORCH_MODULE(FeedForward);

class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  explicit BasicTransformerBlockImpl(const BasicTransformerBlockOptions& options);
  // x: [B, L, dim]; context: [B, Lk, crossAttentionDim] or undefined. Returns [B, L, dim].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

  BasicTransformerBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DOptions {
  int64_t heads = 8;
  int64_t dimHead = 64;
  int64_t inChannels = 0;
  int64_t numLayers = 1;
  int64_t crossAttentionDim = 0;
  int64_t normNumGroups = 32;
  bool useLinearProjection = false;  // Linear [C, C] on tokens (SD 2) instead of a 1x1 conv (SD 1)
  bool onlyCrossAttention = false;
  bool upcastAttention = false;
  double dropout = 0.0;
};

class Transformer2DModelImpl : public torch::nn::Module {
 public:
  explicit Transformer2DModelImpl(const Transformer2DOptions& options);
  // x: [B, C, H, W]; context: [B, Lk, Ck]. Returns [B, C, H, W].
  // checkpoint: recompute each transformer block in backward instead of keeping its activations.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, bool checkpoint = false);

  Transformer2DOptions options;
  torch::nn::GroupNorm norm{nullptr};
  // proj_in / proj_out: Linear [C, C] with use_linear_projection, else Conv2d [C, C, 1, 1].
  Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2DModel);

}  // namespace sdtune::nn
