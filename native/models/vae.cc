#include "models/vae.h"

#include <algorithm>
#include <stdexcept>

namespace sdtune::models {

namespace {

constexpr double kVaeEps = 1e-6;

[[noreturn]] void fail(const std::string& field, const std::string& value, const std::string& why) {
  throw std::invalid_argument("vae config: " + field + " = " + value + " " + why);
}

nn::ResnetBlock2D makeResnet(int64_t in, int64_t out, int64_t groups, nn::Activation act) {
  nn::ResnetBlock2DOptions o(in, out);
  o.groups = groups;
  o.eps = kVaeEps;
  o.act = act;
  return nn::ResnetBlock2D(o);
}

}  // namespace

void VAEOptions::validate() const {
  const size_t n = blockOutChannels.size();
  if (n == 0) fail("block_out_channels", "[]", "must list at least one block");
  if (downBlockTypes.size() != n || upBlockTypes.size() != n) {
    fail("down_block_types / up_block_types",
         "(" + std::to_string(downBlockTypes.size()) + " / " + std::to_string(upBlockTypes.size()) + " entries)",
         "must each have as many entries as block_out_channels (" + std::to_string(n) + ")");
  }
  for (const auto& t : downBlockTypes) {
    if (t != "DownEncoderBlock2D")
      fail("down_block_types", "\"" + t + "\"", "is not supported (expected DownEncoderBlock2D)");
  }
  for (const auto& t : upBlockTypes) {
    if (t != "UpDecoderBlock2D")
      fail("up_block_types", "\"" + t + "\"", "is not supported (expected UpDecoderBlock2D)");
  }
  if (layersPerBlock <= 0) fail("layers_per_block", std::to_string(layersPerBlock), "must be positive");
  if (normNumGroups <= 0) fail("norm_num_groups", std::to_string(normNumGroups), "must be positive");
  for (int64_t c : blockOutChannels) {
    if (c <= 0 || c % normNumGroups != 0) {
      fail("block_out_channels", std::to_string(c), "must be a positive multiple of norm_num_groups");
    }
  }
  nn::parseActivation(actFn, "vae config: act_fn");
}

// ---- blocks

VAEMidBlockImpl::VAEMidBlockImpl(int64_t channels, int64_t groups, nn::Activation act, bool addAttention) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(makeResnet(channels, channels, groups, act));
  if (addAttention) {
    nn::AttentionOptions a;
    a.queryDim = channels;
    a.heads = 1;  // attention_head_dim = channels
    a.dimHead = channels;
    a.bias = true;
    a.normNumGroups = groups;
    a.normEps = kVaeEps;
    a.residualConnection = true;
    attentions = register_module("attentions", torch::nn::ModuleList(nn::Attention(a)));
  }
  resnets->push_back(makeResnet(channels, channels, groups, act));
}

torch::Tensor VAEMidBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = resnets->ptr<nn::ResnetBlock2DImpl>(0)->forward(x);
  if (attentions) h = attentions->ptr<nn::AttentionImpl>(0)->forward(h);  // [B, C, H, W], residual inside
  return resnets->ptr<nn::ResnetBlock2DImpl>(1)->forward(h);
}

VAEBlockImpl::VAEBlockImpl(Kind k, int64_t in, int64_t out, int64_t numLayers, bool resample, int64_t groups,
                           nn::Activation act)
    : kind(k) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < numLayers; ++i) resnets->push_back(makeResnet(i == 0 ? in : out, out, groups, act));
  if (!resample) return;
  if (k == Kind::Down) {
    nn::Downsample2DOptions d;
    d.channels = out;
    d.outChannels = out;
    d.padding = 0;  // pad (0, 1, 0, 1), then stride-2 conv without padding
    downsamplers = register_module("downsamplers", torch::nn::ModuleList(nn::Downsample2D(d)));
  } else {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList(nn::Upsample2D(out, out)));
  }
}

torch::Tensor VAEBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x;
  for (size_t i = 0; i < resnets->size(); ++i) h = resnets->ptr<nn::ResnetBlock2DImpl>(i)->forward(h);
  if (downsamplers) h = downsamplers->ptr<nn::Downsample2DImpl>(0)->forward(h);
  if (upsamplers) h = upsamplers->ptr<nn::Upsample2DImpl>(0)->forward(h);
  return h;
}

// ---- encoder / decoder

EncoderImpl::EncoderImpl(const VAEOptions& o) : act(nn::parseActivation(o.actFn, "act_fn")) {
  const auto& boc = o.blockOutChannels;
  const size_t n = boc.size();
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(o.inChannels, boc[0], 3).padding(1)));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < n; ++i) {
    down_blocks->push_back(VAEBlock(VAEBlockImpl::Kind::Down, i == 0 ? boc[0] : boc[i - 1], boc[i], o.layersPerBlock,
                                    i + 1 < n, o.normNumGroups, act));
  }
  mid_block = register_module("mid_block", VAEMidBlock(boc.back(), o.normNumGroups, act, o.midBlockAddAttention));
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.normNumGroups, boc.back()).eps(kVaeEps)));
  conv_out = register_module(
      "conv_out", nn::Conv2d(nn::Conv2dOptions(boc.back(), 2 * o.latentChannels, 3).padding(1)));  // double_z
}

torch::Tensor EncoderImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = conv_in(x);
  for (const auto& block : *down_blocks) h = block->as<VAEBlockImpl>()->forward(h);
  h = mid_block(h);
  return conv_out(nn::activate(act, conv_norm_out(h)));
}

DecoderImpl::DecoderImpl(const VAEOptions& o) : act(nn::parseActivation(o.actFn, "act_fn")) {
  const auto& boc = o.blockOutChannels;
  const size_t n = boc.size();
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(o.latentChannels, boc.back(), 3).padding(1)));
  mid_block = register_module("mid_block", VAEMidBlock(boc.back(), o.normNumGroups, act, o.midBlockAddAttention));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev = boc[n - (i == 0 ? 1 : i)];  // reversed[i - 1], reversed[0] for the first
    up_blocks->push_back(
        VAEBlock(VAEBlockImpl::Kind::Up, prev, boc[n - 1 - i], o.layersPerBlock + 1, i + 1 < n, o.normNumGroups, act));
  }
  conv_norm_out = register_module(
      "conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.normNumGroups, boc[0]).eps(kVaeEps)));
  conv_out = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(boc[0], o.outChannels, 3).padding(1)));
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& z) {
  torch::Tensor h = mid_block(conv_in(z));
  for (const auto& block : *up_blocks) h = block->as<VAEBlockImpl>()->forward(h);
  return conv_out(nn::activate(act, conv_norm_out(h)));
}

// ---- AutoencoderKL

AutoencoderKLImpl::AutoencoderKLImpl(const VAEOptions& o) : options(o) {
  o.validate();
  encoder = register_module("encoder", Encoder(o));
  decoder = register_module("decoder", Decoder(o));
  quant_conv =
      register_module("quant_conv", nn::Conv2d(nn::Conv2dOptions(2 * o.latentChannels, 2 * o.latentChannels, 1)));
  post_quant_conv =
      register_module("post_quant_conv", nn::Conv2d(nn::Conv2dOptions(o.latentChannels, o.latentChannels, 1)));
}

int64_t AutoencoderKLImpl::scaleFactor() const {
  return int64_t{1} << (options.blockOutChannels.size() - 1);
}

LatentDistribution AutoencoderKLImpl::encode(const torch::Tensor& images, const ImageCallback& onImage) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == options.inChannels, "vae.encode: images must be [B, ",
              options.inChannels, ", H, W], got ", images.sizes());
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < images.size(0); ++i) {
    parts.push_back(quant_conv(encoder(images.slice(0, i, i + 1))));
    if (onImage) onImage(i + 1, images.size(0));
  }
  LatentDistribution d;
  d.moments = torch::cat(parts, 0);  // [B, 2*latent, h, w]
  auto halves = d.moments.chunk(2, 1);
  d.mean = halves[0];
  d.logvar = halves[1].clamp(-30.0, 20.0);
  d.std = torch::exp(0.5 * d.logvar);
  return d;
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& latents, const ImageCallback& onImage) {
  TORCH_CHECK(latents.dim() == 4 && latents.size(1) == options.latentChannels, "vae.decode: latents must be [B, ",
              options.latentChannels, ", h, w], got ", latents.sizes());
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < latents.size(0); ++i) {
    parts.push_back(decoder(post_quant_conv(latents.slice(0, i, i + 1))));
    if (onImage) onImage(i + 1, latents.size(0));
  }
  return torch::cat(parts, 0);  // [B, 3, h*f, w*f]
}

namespace {

// Linear cross-fade of b's first `extent` rows (dim 2) or columns (dim 3) from a's last ones, in place.
void blend(const torch::Tensor& a, torch::Tensor& b, int64_t extent, int64_t dim) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  for (int64_t y = 0; y < extent; ++y) {
    const double w = static_cast<double>(y) / static_cast<double>(extent);
    torch::Tensor bSlice = b.select(dim, y);
    bSlice.copy_(a.select(dim, a.size(dim) - extent + y) * (1 - w) + bSlice * w);
  }
}

}  // namespace

torch::Tensor AutoencoderKLImpl::decodeTiled(const torch::Tensor& latents, int64_t tileLatentSize, double overlap) {
  TORCH_CHECK(tileLatentSize > 0 && overlap >= 0 && overlap < 1, "vae.decodeTiled: bad tile size or overlap");
  const int64_t tileSampleSize = tileLatentSize * scaleFactor();
  const int64_t stride = static_cast<int64_t>(tileLatentSize * (1 - overlap));
  const int64_t blendExtent = static_cast<int64_t>(tileSampleSize * overlap);
  const int64_t rowLimit = tileSampleSize - blendExtent;
  TORCH_CHECK(stride > 0, "vae.decodeTiled: the tile is too small for this overlap");
  // Decode overlapping tiles, then cross-fade each with its upper and left neighbours.
  std::vector<std::vector<torch::Tensor>> rows;
  for (int64_t i = 0; i < latents.size(2); i += stride) {
    std::vector<torch::Tensor> row;
    for (int64_t j = 0; j < latents.size(3); j += stride) {
      torch::Tensor tile = latents.slice(2, i, i + tileLatentSize).slice(3, j, j + tileLatentSize);
      row.push_back(decode(tile));
    }
    rows.push_back(std::move(row));
  }
  std::vector<torch::Tensor> resultRows;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<torch::Tensor> resultRow;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      torch::Tensor& tile = rows[i][j];
      if (i > 0) blend(rows[i - 1][j], tile, blendExtent, 2);
      if (j > 0) blend(rows[i][j - 1], tile, blendExtent, 3);
      resultRow.push_back(tile.slice(2, 0, rowLimit).slice(3, 0, rowLimit));
    }
    resultRows.push_back(torch::cat(resultRow, 3));
  }
  return torch::cat(resultRows, 2);
}

}  // namespace sdtune::models
