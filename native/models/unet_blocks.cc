#include "models/unet_blocks.h"

#include <stdexcept>

#include "train/recompute.h"

namespace sdtune::models {

namespace {

nn::ResnetBlock2D makeResnet(int64_t in, int64_t out, const BlockCommon& c, double outputScaleFactor = 1.0) {
  nn::ResnetBlock2DOptions o(in, out);
  o.tembChannels = c.tembChannels;
  o.groups = c.groups;
  o.eps = c.eps;
  o.timeNorm = c.timeNorm;
  o.act = c.act;
  o.dropout = c.dropout;
  o.outputScaleFactor = outputScaleFactor;
  return nn::ResnetBlock2D(o);
}

nn::Transformer2DModel makeTransformer(int64_t channels, const BlockCommon& c) {
  if (c.heads <= 0 || channels % c.heads != 0) {
    throw std::invalid_argument("attention_head_dim: " + std::to_string(c.heads) + " heads do not divide " +
                                std::to_string(channels) + " channels");
  }
  nn::Transformer2DOptions o;
  o.heads = c.heads;
  o.dimHead = channels / c.heads;
  o.inChannels = channels;
  o.numLayers = c.transformerLayers;
  o.crossAttentionDim = c.crossAttentionDim;
  o.normNumGroups = c.groups;
  o.useLinearProjection = c.useLinearProjection;
  o.onlyCrossAttention = c.onlyCrossAttention;
  o.upcastAttention = c.upcastAttention;
  return nn::Transformer2DModel(o);
}

torch::Tensor runAttention(const torch::nn::ModuleList& attentions, size_t i, const torch::Tensor& x,
                           const torch::Tensor& context, bool checkpoint) {
  return attentions->ptr<nn::Transformer2DModelImpl>(i)->forward(x, context, checkpoint);
}

}  // namespace

torch::Tensor runResnet(const std::shared_ptr<nn::ResnetBlock2DImpl>& resnet, const torch::Tensor& x,
                        const torch::Tensor& temb, bool checkpoint) {
  return train::block1([resnet](const std::vector<torch::Tensor>& in) { return resnet->forward(in[0], in[1]); },
                       {x, temb}, checkpoint);
}

// ---- down

DownBlockImpl::DownBlockImpl(const DownBlockOptions& o) : options(o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (o.common.attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.numLayers; ++i) {
    resnets->push_back(makeResnet(i == 0 ? o.inChannels : o.outChannels, o.outChannels, o.common));
    if (o.common.attention) attentions->push_back(makeTransformer(o.outChannels, o.common));
  }
  if (o.addDownsample) {
    nn::Downsample2DOptions d;
    d.channels = o.outChannels;
    d.outChannels = o.outChannels;
    d.padding = o.downsamplePadding;
    downsamplers = register_module("downsamplers", torch::nn::ModuleList(nn::Downsample2D(d)));
  }
}

torch::Tensor DownBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context,
                                     std::vector<torch::Tensor>& skips, bool checkpoint) {
  torch::Tensor h = x;
  for (size_t i = 0; i < resnets->size(); ++i) {
    h = runResnet(resnets->ptr<nn::ResnetBlock2DImpl>(i), h, temb, checkpoint);
    if (attentions) h = runAttention(attentions, i, h, context, checkpoint);
    skips.push_back(h);
  }
  if (downsamplers) {
    h = downsamplers->ptr<nn::Downsample2DImpl>(0)->forward(h);  // [B, C, H/2, W/2]
    skips.push_back(h);
  }
  return h;
}

// ---- mid

MidBlockImpl::MidBlockImpl(const MidBlockOptions& o) : options(o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets->push_back(makeResnet(o.channels, o.channels, o.common, o.outputScaleFactor));
  attentions->push_back(makeTransformer(o.channels, o.common));
  resnets->push_back(makeResnet(o.channels, o.channels, o.common, o.outputScaleFactor));
}

torch::Tensor MidBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context,
                                    bool checkpoint) {
  torch::Tensor h = runResnet(resnets->ptr<nn::ResnetBlock2DImpl>(0), x, temb, checkpoint);
  for (size_t i = 0; i < attentions->size(); ++i) {
    h = runAttention(attentions, i, h, context, checkpoint);
    h = runResnet(resnets->ptr<nn::ResnetBlock2DImpl>(i + 1), h, temb, checkpoint);
  }
  return h;
}

// ---- up

UpBlockImpl::UpBlockImpl(const UpBlockOptions& o) : options(o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (o.common.attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.numLayers; ++i) {
    // Resnet i sees the running features concatenated with one skip state along channels.
    const int64_t skipChannels = i == o.numLayers - 1 ? o.inChannels : o.outChannels;
    const int64_t runningChannels = i == 0 ? o.prevOutputChannels : o.outChannels;
    resnets->push_back(makeResnet(runningChannels + skipChannels, o.outChannels, o.common));
    if (o.common.attention) attentions->push_back(makeTransformer(o.outChannels, o.common));
  }
  if (o.addUpsample) {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList(nn::Upsample2D(o.outChannels, o.outChannels)));
  }
}

torch::Tensor UpBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context,
                                   std::vector<torch::Tensor>& skips, const std::vector<int64_t>& upsampleSize,
                                   bool checkpoint) {
  torch::Tensor h = x;
  for (size_t i = 0; i < resnets->size(); ++i) {
    TORCH_CHECK(!skips.empty(), "UNet: ran out of skip connections in an up block");
    torch::Tensor skip = skips.back();
    skips.pop_back();
    h = torch::cat({h, skip}, 1);  // [B, C + Cskip, H, W]
    h = runResnet(resnets->ptr<nn::ResnetBlock2DImpl>(i), h, temb, checkpoint);
    if (attentions) h = runAttention(attentions, i, h, context, checkpoint);
  }
  if (upsamplers) h = upsamplers->ptr<nn::Upsample2DImpl>(0)->forward(h, upsampleSize);
  return h;
}

}  // namespace sdtune::models
