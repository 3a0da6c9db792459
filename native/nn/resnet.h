// diffusers' resnet.py building blocks with their checkpoint names:
// ResnetBlock2D (norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut),
// Downsample2D (conv) and Upsample2D (conv).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "nn/activation.h"
#include "nn/linear.h"

namespace sdtune::nn {

// How the time embedding enters a ResnetBlock2D (config "resnet_time_scale_shift").
enum class TimeEmbeddingNorm {
  Default,     // h = norm2(h + proj(temb))
  ScaleShift,  // scale, shift = proj(temb).chunk(2); h = norm2(h) * (1 + scale) + shift
};

struct ResnetBlock2DOptions {
  ResnetBlock2DOptions(int64_t in, int64_t out) : inChannels(in), outChannels(out) {}
  int64_t inChannels;
  int64_t outChannels;
  int64_t tembChannels = 0;  // 0: no time embedding (VAE)
  int64_t groups = 32;
  int64_t groupsOut = 0;  // 0: same as groups
  double eps = 1e-6;
  TimeEmbeddingNorm timeNorm = TimeEmbeddingNorm::Default;
  double outputScaleFactor = 1.0;
  double dropout = 0.0;
  Activation act = Activation::SiLU;
};

class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetBlock2DOptions& options);
  // x: [B, Cin, H, W]; temb: [B, tembChannels] or undefined. Returns [B, Cout, H, W].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

  ResnetBlock2DOptions options;
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr};
  Linear time_emb_proj{nullptr};
  Conv2d conv_shortcut{nullptr};  // 1x1, only when the channel count changes
};
TORCH_MODULE(ResnetBlock2D);

struct Downsample2DOptions {
  int64_t channels = 0;
  int64_t outChannels = 0;  // 0: same as channels
  // 1: conv3x3 stride 2 padding 1 (UNet). 0: pad (0, 1, 0, 1) then conv3x3 stride 2 padding 0 (VAE encoder).
  int64_t padding = 1;
};

class Downsample2DImpl : public torch::nn::Module {
 public:
  explicit Downsample2DImpl(const Downsample2DOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, H, W] -> [B, Cout, ceil(H/2), ceil(W/2)]

  Downsample2DOptions options;
  Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

class Upsample2DImpl : public torch::nn::Module {
 public:
  Upsample2DImpl(int64_t channels, int64_t outChannels);
  // Nearest x2, or nearest to `size` ({H, W}) when given (odd skip sizes), then conv3x3.
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& size = {});

  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace sdtune::nn
