#include "nn/attention.h"

#include <cmath>

#include "nn/attention_kernel.h"

namespace sdtune::nn {

namespace F = torch::nn::functional;

AttentionImpl::AttentionImpl(const AttentionOptions& o) : options(o) {
  const int64_t inner = o.heads * o.dimHead;
  const int64_t contextDim = o.crossAttentionDim > 0 ? o.crossAttentionDim : o.queryDim;
  if (o.normNumGroups > 0) {
    group_norm = register_module(
        "group_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.normNumGroups, o.queryDim).eps(o.normEps)));
  }
  to_q = register_module("to_q", Linear(LinearOptions(o.queryDim, inner).bias(o.bias)));
  to_k = register_module("to_k", Linear(LinearOptions(contextDim, inner).bias(o.bias)));
  to_v = register_module("to_v", Linear(LinearOptions(contextDim, inner).bias(o.bias)));
  out = Linear(LinearOptions(inner, o.queryDim).bias(o.outBias));
  to_out = register_module("to_out", torch::nn::ModuleList(out, torch::nn::Dropout(o.dropout)));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const bool spatial = x.dim() == 4;
  torch::Tensor h = x;
  int64_t channels = 0, height = 0, width = 0;
  if (spatial) {
    channels = x.size(1), height = x.size(2), width = x.size(3);
    h = x.reshape({x.size(0), channels, height * width}).transpose(1, 2);  // [B, HW, C]
  }
  if (group_norm) h = group_norm(h.transpose(1, 2)).transpose(1, 2);  // GroupNorm wants channels in dim 1
  const torch::Tensor& kv = context.defined() ? context : h;

  const int64_t batch = h.size(0), length = h.size(1), kvLength = kv.size(1);
  const int64_t heads = options.heads, dim = options.dimHead;
  auto split = [&](const torch::Tensor& t, int64_t len) {
    return t.reshape({batch, len, heads, dim}).transpose(1, 2);  // [B, heads, L, dim]
  };
  torch::Tensor q = split(to_q(h), length);
  torch::Tensor k = split(to_k(kv), kvLength);
  torch::Tensor v = split(to_v(kv), kvLength);

  AttentionKernelOptions kernel;
  kernel.upcast = options.upcastAttention;
  torch::Tensor o = attend(q, k, v, {}, 1.0 / std::sqrt(static_cast<double>(dim)), kernel);  // [B, heads, L, dim]
  o = o.transpose(1, 2).reshape({batch, length, heads * dim});                               // [B, L, inner]
  o = out(o);
  if (options.dropout > 0.0) o = F::dropout(o, F::DropoutFuncOptions().p(options.dropout).training(is_training()));

  if (spatial) o = o.transpose(1, 2).reshape({batch, channels, height, width});  // back to [B, C, H, W]
  if (options.residualConnection) o = o + x;
  if (options.rescaleOutputFactor != 1.0) o = o / options.rescaleOutputFactor;
  return o;
}

}  // namespace sdtune::nn
