#include "models/unet.h"

#include <sstream>
#include <stdexcept>

namespace sdtune::models {

namespace {

[[noreturn]] void fail(const std::string& field, const std::string& value, const std::string& why) {
  throw std::invalid_argument("unet config: " + field + " = " + value + " " + why);
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

template <typename T>
void requireLength(const std::vector<T>& values, size_t n, const std::string& field) {
  if (values.size() != n) {
    fail(field, "(" + std::to_string(values.size()) + " entries)",
         "must have one entry per down block (" + std::to_string(n) + ")");
  }
}

nn::TimeEmbeddingNorm timeNormOf(const std::string& name) {
  return name == "scale_shift" ? nn::TimeEmbeddingNorm::ScaleShift : nn::TimeEmbeddingNorm::Default;
}

}  // namespace

void UNetOptions::validate() const {
  const size_t n = blockOutChannels.size();
  if (n == 0) fail("block_out_channels", "[]", "must list at least one block");
  if (downBlockTypes.size() != n) {
    fail("down_block_types", "(" + std::to_string(downBlockTypes.size()) + " entries)",
         "must have as many entries as block_out_channels (" + std::to_string(n) + ")");
  }
  if (upBlockTypes.size() != n) {
    fail("up_block_types", "(" + std::to_string(upBlockTypes.size()) + " entries)",
         "must have as many entries as block_out_channels (" + std::to_string(n) + ")");
  }
  for (const auto& t : downBlockTypes) {
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D") {
      fail("down_block_types", quoted(t), "is not supported (expected CrossAttnDownBlock2D or DownBlock2D)");
    }
  }
  for (const auto& t : upBlockTypes) {
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") {
      fail("up_block_types", quoted(t), "is not supported (expected CrossAttnUpBlock2D or UpBlock2D)");
    }
  }
  if (!midBlockType.empty() && midBlockType != "UNetMidBlock2DCrossAttn") {
    fail("mid_block_type", quoted(midBlockType), "is not supported (expected UNetMidBlock2DCrossAttn or null)");
  }
  requireLength(layersPerBlock, n, "layers_per_block");
  requireLength(numAttentionHeads, n, "attention_head_dim");
  requireLength(crossAttentionDim, n, "cross_attention_dim");
  requireLength(transformerLayersPerBlock, n, "transformer_layers_per_block");
  requireLength(onlyCrossAttention, n, "only_cross_attention");
  if (resnetTimeScaleShift != "default" && resnetTimeScaleShift != "scale_shift") {
    fail("resnet_time_scale_shift", quoted(resnetTimeScaleShift), "is not supported (expected default or scale_shift)");
  }
  if (normNumGroups <= 0) fail("norm_num_groups", std::to_string(normNumGroups), "must be a positive integer");
  for (int64_t c : blockOutChannels) {
    if (c <= 0 || c % normNumGroups != 0) {
      fail("block_out_channels", std::to_string(c), "must be a positive multiple of norm_num_groups");
    }
  }
  if (convInKernel % 2 == 0) fail("conv_in_kernel", std::to_string(convInKernel), "must be odd");
  if (convOutKernel % 2 == 0) fail("conv_out_kernel", std::to_string(convOutKernel), "must be odd");
  nn::parseActivation(actFn, "unet config: act_fn");
  nn::parseActivation(timeEmbeddingActFn, "unet config: time_embedding_act_fn");
  nn::parseActivation(timestepPostAct, "unet config: timestep_post_act");
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetOptions& o) : options(o) {
  o.validate();
  const size_t n = o.blockOutChannels.size();
  act_ = nn::parseActivation(o.actFn, "act_fn");
  timeEmbedAct_ = nn::parseActivation(o.timeEmbeddingActFn, "time_embedding_act_fn");
  const int64_t c0 = o.blockOutChannels[0];
  const int64_t timeEmbedDim = o.timeEmbeddingDim > 0 ? o.timeEmbeddingDim : 4 * c0;

  conv_in = register_module(
      "conv_in", nn::Conv2d(nn::Conv2dOptions(o.inChannels, c0, o.convInKernel).padding((o.convInKernel - 1) / 2)));
  timeProj.channels = c0;
  timeProj.flipSinToCos = o.flipSinToCos;
  timeProj.downscaleFreqShift = o.freqShift;
  nn::TimestepEmbeddingOptions te;
  te.inChannels = c0;
  te.timeEmbedDim = timeEmbedDim;
  te.act = act_;
  te.postAct = nn::parseActivation(o.timestepPostAct, "timestep_post_act");
  time_embedding = register_module("time_embedding", nn::TimestepEmbedding(te));

  auto common = [&](size_t i, bool attention) {
    BlockCommon c;
    c.tembChannels = timeEmbedDim;
    c.groups = o.normNumGroups;
    c.eps = o.normEps;
    c.timeNorm = timeNormOf(o.resnetTimeScaleShift);
    c.act = act_;
    c.dropout = o.dropout;
    c.attention = attention;
    c.heads = o.numAttentionHeads[i];
    c.crossAttentionDim = o.crossAttentionDim[i];
    c.transformerLayers = o.transformerLayersPerBlock[i];
    c.useLinearProjection = o.useLinearProjection;
    c.onlyCrossAttention = o.onlyCrossAttention[i];
    c.upcastAttention = o.upcastAttention;
    return c;
  };

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < n; ++i) {
    DownBlockOptions d;
    d.inChannels = i == 0 ? c0 : o.blockOutChannels[i - 1];
    d.outChannels = o.blockOutChannels[i];
    d.numLayers = o.layersPerBlock[i];
    d.addDownsample = i + 1 < n;
    d.downsamplePadding = o.downsamplePadding;
    d.common = common(i, o.downBlockTypes[i] == "CrossAttnDownBlock2D");
    down_blocks->push_back(DownBlock(d));
  }

  if (!o.midBlockType.empty()) {
    MidBlockOptions m;
    m.channels = o.blockOutChannels.back();
    m.outputScaleFactor = o.midBlockScaleFactor;
    m.common = common(n - 1, true);
    m.common.onlyCrossAttention = false;  // UNetMidBlock2DCrossAttn has no only_cross_attention
    mid_block = register_module("mid_block", MidBlock(m));
  }

  // Up blocks mirror the down blocks: per-block values are read reversed.
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  int64_t outputChannels = o.blockOutChannels.back();
  for (size_t i = 0; i < n; ++i) {
    const size_t mirror = n - 1 - i;
    UpBlockOptions u;
    u.prevOutputChannels = outputChannels;
    outputChannels = o.blockOutChannels[mirror];
    u.outChannels = outputChannels;
    u.inChannels = o.blockOutChannels[mirror == 0 ? 0 : mirror - 1];
    u.numLayers = o.layersPerBlock[mirror] + 1;
    u.addUpsample = i + 1 < n;
    u.common = common(mirror, o.upBlockTypes[i] == "CrossAttnUpBlock2D");
    up_blocks->push_back(UpBlock(u));
    if (u.addUpsample) ++numUpsamplers_;
  }

  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.normNumGroups, c0).eps(o.normEps)));
  conv_out = register_module(
      "conv_out", nn::Conv2d(nn::Conv2dOptions(c0, o.outChannels, o.convOutKernel).padding((o.convOutKernel - 1) / 2)));
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sampleIn, const torch::Tensor& timestep,
                                                const torch::Tensor& context, Intermediates* capture) {
  TORCH_CHECK(sampleIn.dim() == 4, "unet: sample must be [B, C, H, W], got ", sampleIn.sizes());
  TORCH_CHECK(sampleIn.size(1) == options.inChannels, "unet: sample has ", sampleIn.size(1),
              " channels but the model takes in_channels = ", options.inChannels);
  TORCH_CHECK(context.dim() == 3 && context.size(0) == sampleIn.size(0), "unet: encoder_hidden_states must be [",
              sampleIn.size(0), ", L, D], got ", context.sizes());
  const int64_t batch = sampleIn.size(0);
  auto keep = [&](const char* name, const torch::Tensor& t) {
    if (capture) (*capture)[name] = t;
  };
  const bool checkpoint = gradientCheckpointing && torch::GradMode::is_enabled();

  // Sizes not divisible by 2^upsamplers: upsample to each skip's exact size instead of x2.
  const int64_t factor = int64_t{1} << numUpsamplers_;
  const bool forwardUpsampleSize = sampleIn.size(2) % factor != 0 || sampleIn.size(3) % factor != 0;
  torch::Tensor sample = options.centerInputSample ? 2 * sampleIn - 1.0 : sampleIn;

  // Time: a scalar is broadcast to the batch; the sinusoids are float32, then cast to the sample's dtype.
  torch::Tensor t = timestep.to(sample.device()).reshape({-1});
  TORCH_CHECK(t.numel() == 1 || t.numel() == batch, "unet: timestep must be a scalar or hold one value per sample (",
              batch, "), got shape ", timestep.sizes());
  t = t.expand({batch});
  torch::Tensor tEmb = nn::timestepEmbedding(t, timeProj).to(sample.scalar_type());  // [B, C0]
  keep("time_proj", tEmb);
  torch::Tensor emb = time_embedding(tEmb);  // [B, 4*C0]
  keep("time_embedding", emb);
  emb = nn::activate(timeEmbedAct_, emb);

  torch::Tensor h = conv_in(sample);  // [B, C0, H, W]
  keep("conv_in", h);
  std::vector<torch::Tensor> skips{h};
  for (size_t i = 0; i < down_blocks->size(); ++i) {
    h = down_blocks->ptr<DownBlockImpl>(i)->forward(h, emb, context, skips, checkpoint);
    if (capture) (*capture)["down_blocks." + std::to_string(i)] = h;
  }
  if (mid_block) {
    h = mid_block->forward(h, emb, context, checkpoint);
    keep("mid_block", h);
  }
  for (size_t i = 0; i < up_blocks->size(); ++i) {
    auto block = up_blocks->ptr<UpBlockImpl>(i);
    std::vector<int64_t> upsampleSize;
    const size_t remaining = skips.size() - static_cast<size_t>(block->options.numLayers);
    if (block->options.addUpsample && forwardUpsampleSize && remaining > 0) {
      upsampleSize = {skips[remaining - 1].size(2), skips[remaining - 1].size(3)};  // the next block's skip size
    }
    h = block->forward(h, emb, context, skips, upsampleSize, checkpoint);
    if (capture) (*capture)["up_blocks." + std::to_string(i)] = h;
  }
  h = conv_norm_out(h);
  keep("conv_norm_out", h);
  return conv_out(nn::activate(act_, h));  // [B, out, H, W]
}

}  // namespace sdtune::models
