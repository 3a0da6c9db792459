#include "nn/resnet.h"

namespace sdtune::nn {

namespace F = torch::nn::functional;

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DOptions& o) : options(o) {
  const int64_t groupsOut = o.groupsOut > 0 ? o.groupsOut : o.groups;
  norm1 =
      register_module("norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.groups, o.inChannels).eps(o.eps)));
  conv1 = register_module("conv1", Conv2d(Conv2dOptions(o.inChannels, o.outChannels, 3).padding(1)));
  if (o.tembChannels > 0) {
    const int64_t projOut = o.timeNorm == TimeEmbeddingNorm::ScaleShift ? 2 * o.outChannels : o.outChannels;
    time_emb_proj = register_module("time_emb_proj", Linear(LinearOptions(o.tembChannels, projOut)));
  }
  norm2 =
      register_module("norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groupsOut, o.outChannels).eps(o.eps)));
  conv2 = register_module("conv2", Conv2d(Conv2dOptions(o.outChannels, o.outChannels, 3).padding(1)));
  if (o.inChannels != o.outChannels) {
    conv_shortcut = register_module("conv_shortcut", Conv2d(Conv2dOptions(o.inChannels, o.outChannels, 1)));
  }
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  torch::Tensor h = conv1(activate(options.act, norm1(x)));  // [B, Cout, H, W]
  torch::Tensor t;
  if (time_emb_proj && temb.defined()) {
    t = time_emb_proj(activate(options.act, temb)).unsqueeze(-1).unsqueeze(-1);  // [B, Cout or 2*Cout, 1, 1]
  }
  if (options.timeNorm == TimeEmbeddingNorm::ScaleShift && t.defined()) {
    auto scaleShift = t.chunk(2, 1);
    h = norm2(h) * (1 + scaleShift[0]) + scaleShift[1];
  } else {
    if (t.defined()) h = h + t;
    h = norm2(h);
  }
  h = activate(options.act, h);
  if (options.dropout > 0.0) h = F::dropout(h, F::DropoutFuncOptions().p(options.dropout).training(is_training()));
  h = conv2(h);
  torch::Tensor shortcut = conv_shortcut ? conv_shortcut(x) : x;
  torch::Tensor out = shortcut + h;
  if (options.outputScaleFactor != 1.0) out = out / options.outputScaleFactor;
  return out;
}

Downsample2DImpl::Downsample2DImpl(const Downsample2DOptions& o) : options(o) {
  const int64_t out = o.outChannels > 0 ? o.outChannels : o.channels;
  conv = register_module("conv", Conv2d(Conv2dOptions(o.channels, out, 3).stride(2).padding(o.padding)));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (options.padding == 0) {
    // Asymmetric: one extra row/column at the bottom/right, as the original LDM encoder.
    return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1})));
  }
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels, int64_t outChannels) {
  conv =
      register_module("conv", Conv2d(Conv2dOptions(channels, outChannels > 0 ? outChannels : channels, 3).padding(1)));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, const std::vector<int64_t>& size) {
  // Nearest upsampling has no bfloat16 kernel on older libtorch: go through float32 as diffusers does.
  const bool viaFloat = x.scalar_type() == torch::kBFloat16;
  torch::Tensor h = viaFloat ? x.to(torch::kFloat) : x;
  auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (size.empty()) {
    opts.scale_factor(std::vector<double>{2.0, 2.0});
  } else {
    opts.size(size);
  }
  h = F::interpolate(h, opts);  // [B, C, 2H, 2W] or [B, C, size...]
  if (viaFloat) h = h.to(x.scalar_type());
  return conv(h);
}

}  // namespace sdtune::nn
