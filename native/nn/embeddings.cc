#include "nn/embeddings.h"

#include <cmath>

namespace sdtune::nn {

torch::Tensor timestepEmbedding(const torch::Tensor& timesteps, const TimestepsOptions& o) {
  TORCH_CHECK(timesteps.dim() == 1, "timestep embedding: timesteps must be 1-D, got ", timesteps.sizes());
  const int64_t half = o.channels / 2;
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(timesteps.device());
  // Same op order as diffusers (exponent scaled before dividing), so float32 results agree bit for bit.
  torch::Tensor exponent = -std::log(o.maxPeriod) * torch::arange(0, half, f32);  // [half]
  exponent = exponent / (static_cast<double>(half) - o.downscaleFreqShift);
  torch::Tensor freqs = torch::exp(exponent);
  torch::Tensor args = timesteps.unsqueeze(1).to(torch::kFloat) * freqs.unsqueeze(0);  // [B, half]
  if (o.scale != 1.0) args = o.scale * args;
  torch::Tensor emb = o.flipSinToCos ? torch::cat({torch::cos(args), torch::sin(args)}, -1)
                                     : torch::cat({torch::sin(args), torch::cos(args)}, -1);  // [B, 2*half]
  if (o.channels % 2 == 1) emb = torch::nn::functional::pad(emb, torch::nn::functional::PadFuncOptions({0, 1}));
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(const TimestepEmbeddingOptions& o) : options(o) {
  const int64_t out = o.outDim > 0 ? o.outDim : o.timeEmbedDim;
  linear_1 = register_module("linear_1", Linear(LinearOptions(o.inChannels, o.timeEmbedDim)));
  linear_2 = register_module("linear_2", Linear(LinearOptions(o.timeEmbedDim, out)));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = linear_2(activate(options.act, linear_1(x)));
  return activate(options.postAct, h);
}

}  // namespace sdtune::nn
