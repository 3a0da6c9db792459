// The UNet's down, mid and up blocks (diffusers unet_2d_blocks.py), with their
// checkpoint names: resnets.N, attentions.N, downsamplers.0 / upsamplers.0.
//   DownBlock  = CrossAttnDownBlock2D (attention on) or DownBlock2D (off)
//   MidBlock   = UNetMidBlock2DCrossAttn
//   UpBlock    = CrossAttnUpBlock2D (attention on) or UpBlock2D (off)
#pragma once

#include <torch/torch.h>

#include <vector>

#include "nn/resnet.h"
#include "nn/transformer.h"

namespace sdtune::models {

// What every resnet and transformer of a block shares.
struct BlockCommon {
  int64_t tembChannels = 0;
  int64_t groups = 32;
  double eps = 1e-5;
  nn::TimeEmbeddingNorm timeNorm = nn::TimeEmbeddingNorm::Default;
  nn::Activation act = nn::Activation::SiLU;
  double dropout = 0.0;
  // Attention (only used by the cross-attention blocks).
  bool attention = false;
  int64_t heads = 8;  // head dim = channels / heads
  int64_t crossAttentionDim = 0;
  int64_t transformerLayers = 1;
  bool useLinearProjection = false;
  bool onlyCrossAttention = false;
  bool upcastAttention = false;
};

struct DownBlockOptions {
  int64_t inChannels = 0, outChannels = 0, numLayers = 1;
  bool addDownsample = true;
  int64_t downsamplePadding = 1;
  BlockCommon common;
};

class DownBlockImpl : public torch::nn::Module {
 public:
  explicit DownBlockImpl(const DownBlockOptions& options);
  // Returns the block output; appends one skip state per resnet (and one after the downsampler) to `skips`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips, bool checkpoint);

  DownBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

struct MidBlockOptions {
  int64_t channels = 0;
  double outputScaleFactor = 1.0;  // config "mid_block_scale_factor"
  BlockCommon common;
};

class MidBlockImpl : public torch::nn::Module {
 public:
  explicit MidBlockImpl(const MidBlockOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context,
                        bool checkpoint);

  MidBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MidBlock);

struct UpBlockOptions {
  int64_t inChannels = 0;  // channels of the deepest skip this block takes (its last resnet's skip)
  int64_t outChannels = 0;
  int64_t prevOutputChannels = 0;  // channels coming from the block below
  int64_t numLayers = 2;           // layers_per_block + 1
  bool addUpsample = true;
  BlockCommon common;
};

class UpBlockImpl : public torch::nn::Module {
 public:
  explicit UpBlockImpl(const UpBlockOptions& options);
  // Pops numLayers skip states from the back of `skips`. upsampleSize: {H, W} to upsample to, or empty for x2.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips, const std::vector<int64_t>& upsampleSize, bool checkpoint);

  UpBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

// A resnet call, recomputed in backward when `checkpoint` is set.
torch::Tensor runResnet(const std::shared_ptr<nn::ResnetBlock2DImpl>& resnet, const torch::Tensor& x,
                        const torch::Tensor& temb, bool checkpoint);

}  // namespace sdtune::models
