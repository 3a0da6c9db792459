#include "nn/transformer.h"

#include "train/recompute.h"

namespace sdtune::nn {

namespace F = torch::nn::functional;

GEGLUImpl::GEGLUImpl(int64_t dimIn, int64_t dimOut) {
  proj = register_module("proj", Linear(LinearOptions(dimIn, dimOut * 2)));
}

torch::Tensor GEGLUImpl::forward(const torch::Tensor& x) {
  auto halves = proj(x).chunk(2, -1);  // value, gate: [.., dimOut] each
  return halves[0] * torch::gelu(halves[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, double dropout) {
  const int64_t inner = dim * 4;
  geglu = GEGLU(dim, inner);
  drop = torch::nn::Dropout(dropout);
  proj_out = Linear(LinearOptions(inner, dim));
  net = register_module("net", torch::nn::ModuleList(geglu, drop, proj_out));  // keys net.0.proj, net.2
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return proj_out(drop(geglu(x)));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(const BasicTransformerBlockOptions& o) : options(o) {
  auto layerNorm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-5)); };
  AttentionOptions self;
  self.queryDim = o.dim;
  self.heads = o.heads;
  self.dimHead = o.dimHead;
  self.crossAttentionDim = o.onlyCrossAttention ? o.crossAttentionDim : 0;
  self.upcastAttention = o.upcastAttention;
  self.dropout = o.dropout;
  norm1 = register_module("norm1", layerNorm());
  attn1 = register_module("attn1", Attention(self));
  if (o.crossAttentionDim > 0) {
    AttentionOptions cross = self;
    cross.crossAttentionDim = o.crossAttentionDim;
    norm2 = register_module("norm2", layerNorm());
    attn2 = register_module("attn2", Attention(cross));
  }
  norm3 = register_module("norm3", layerNorm());
  ff = register_module("ff", FeedForward(o.dim, o.dropout));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  torch::Tensor h = attn1(norm1(x), options.onlyCrossAttention ? context : torch::Tensor()) + x;
  if (attn2) h = attn2(norm2(h), context) + h;
  return ff(norm3(h)) + h;
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DOptions& o) : options(o) {
  const int64_t c = o.inChannels, inner = o.heads * o.dimHead;
  norm = register_module("norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.normNumGroups, c).eps(1e-6)));
  if (o.useLinearProjection) {
    proj_in_linear = register_module("proj_in", Linear(LinearOptions(c, inner)));
  } else {
    proj_in_conv = register_module("proj_in", Conv2d(Conv2dOptions(c, inner, 1)));
  }
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.numLayers; ++i) {
    BasicTransformerBlockOptions b;
    b.dim = inner;
    b.heads = o.heads;
    b.dimHead = o.dimHead;
    b.crossAttentionDim = o.crossAttentionDim;
    b.onlyCrossAttention = o.onlyCrossAttention;
    b.upcastAttention = o.upcastAttention;
    b.dropout = o.dropout;
    transformer_blocks->push_back(BasicTransformerBlock(b));
  }
  if (o.useLinearProjection) {
    proj_out_linear = register_module("proj_out", Linear(LinearOptions(inner, c)));
  } else {
    proj_out_conv = register_module("proj_out", Conv2d(Conv2dOptions(inner, c, 1)));
  }
}

torch::Tensor Transformer2DModelImpl::forward(const torch::Tensor& x, const torch::Tensor& context, bool checkpoint) {
  const int64_t batch = x.size(0), height = x.size(2), width = x.size(3);
  torch::Tensor h = norm(x);
  auto toTokens = [&](const torch::Tensor& t) {
    return t.permute({0, 2, 3, 1}).reshape({batch, height * width, t.size(1)});  // [B, HW, C]
  };
  auto toMap = [&](const torch::Tensor& t) {
    return t.reshape({batch, height, width, t.size(2)}).permute({0, 3, 1, 2}).contiguous();  // [B, C, H, W]
  };
  h = options.useLinearProjection ? proj_in_linear(toTokens(h)) : toTokens(proj_in_conv(h));  // [B, HW, inner]

  for (size_t i = 0; i < transformer_blocks->size(); ++i) {
    auto block = transformer_blocks->ptr<BasicTransformerBlockImpl>(i);
    h = train::block1([block](const std::vector<torch::Tensor>& in) { return block->forward(in[0], in[1]); },
                      {h, context}, checkpoint);
  }

  h = options.useLinearProjection ? toMap(proj_out_linear(h)) : proj_out_conv(toMap(h));  // [B, C, H, W]
  return h + x;
}

}  // namespace sdtune::nn
