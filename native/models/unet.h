// UNet2DConditionModel (diffusers unets/unet_2d_condition.py) for SD 1.x / 2.x, with
// the checkpoint names of a diffusers unet/ folder: conv_in, time_proj (no weights),
// time_embedding.linear_1/2, down_blocks.N, mid_block, up_blocks.N, conv_norm_out, conv_out.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "models/unet_blocks.h"
#include "nn/embeddings.h"
#include "nn/linear.h"

namespace sdtune::models {

// A diffusers unet/config.json with every per-block value spelled out (TypeScript
// resolves ints to lists and the legacy attention_head_dim to head counts).
struct UNetOptions {
  int64_t inChannels = 4;
  int64_t outChannels = 4;
  std::vector<int64_t> blockOutChannels;
  std::vector<std::string> downBlockTypes;               // CrossAttnDownBlock2D | DownBlock2D
  std::vector<std::string> upBlockTypes;                 // CrossAttnUpBlock2D | UpBlock2D
  std::string midBlockType = "UNetMidBlock2DCrossAttn";  // or "" for none
  // Per down block; up blocks use them reversed, the mid block the last one.
  std::vector<int64_t> layersPerBlock;
  std::vector<int64_t> numAttentionHeads;
  std::vector<int64_t> crossAttentionDim;
  std::vector<int64_t> transformerLayersPerBlock;
  std::vector<bool> onlyCrossAttention;
  bool useLinearProjection = false;
  bool upcastAttention = false;
  int64_t normNumGroups = 32;
  double normEps = 1e-5;
  std::string actFn = "silu";
  bool flipSinToCos = true;
  double freqShift = 0;
  std::string resnetTimeScaleShift = "default";  // or "scale_shift"
  bool centerInputSample = false;
  int64_t downsamplePadding = 1;
  double midBlockScaleFactor = 1.0;
  double dropout = 0.0;
  int64_t convInKernel = 3;
  int64_t convOutKernel = 3;
  int64_t timeEmbeddingDim = 0;    // 0: 4 * blockOutChannels[0]
  std::string timeEmbeddingActFn;  // "" for none
  std::string timestepPostAct;     // "" for none

  // Throws std::invalid_argument naming the (diffusers) field and value.
  void validate() const;
};

// Intermediate outputs by module name, for parity checks (diffusers forward-hook names).
using Intermediates = std::map<std::string, torch::Tensor>;

class UNet2DConditionModelImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionModelImpl(const UNetOptions& options);

  // sample: [B, in, H, W]; timestep: 0-dim or [B] (integer or float, any device);
  // context (encoder_hidden_states): [B, L, cross_attention_dim]. Returns [B, out, H, W].
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& context,
                        Intermediates* capture = nullptr);

  // Recompute each resnet and transformer block in backward (when grad mode is on).
  // Atomic: JS may flip it while a worker thread runs forward.
  std::atomic<bool> gradientCheckpointing{false};

  UNetOptions options;
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  nn::TimestepsOptions timeProj;  // "time_proj": no parameters
  nn::TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  MidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};

 private:
  nn::Activation act_ = nn::Activation::SiLU, timeEmbedAct_ = nn::Activation::None;
  int64_t numUpsamplers_ = 0;
};
TORCH_MODULE(UNet2DConditionModel);

}  // namespace sdtune::models
