// Timestep embeddings (diffusers embeddings.py): the sinusoidal Timesteps
// projection (no parameters) and TimestepEmbedding (linear_1 -> act -> linear_2).
#pragma once

#include <torch/torch.h>

#include "nn/activation.h"
#include "nn/linear.h"

namespace sdtune::nn {

struct TimestepsOptions {
  int64_t channels = 0;
  bool flipSinToCos = true;       // true: [cos, sin]; false: [sin, cos]
  double downscaleFreqShift = 0;  // config "freq_shift"
  double scale = 1.0;
  double maxPeriod = 10000.0;
};

// timesteps: [B] (any real or integer dtype). Returns [B, channels] in float32.
torch::Tensor timestepEmbedding(const torch::Tensor& timesteps, const TimestepsOptions& options);

struct TimestepEmbeddingOptions {
  int64_t inChannels = 0;
  int64_t timeEmbedDim = 0;
  int64_t outDim = 0;  // 0: timeEmbedDim
  Activation act = Activation::SiLU;
  Activation postAct = Activation::None;  // config "timestep_post_act"
};

class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  explicit TimestepEmbeddingImpl(const TimestepEmbeddingOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [B, in] -> [B, out]

  TimestepEmbeddingOptions options;
  Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace sdtune::nn
