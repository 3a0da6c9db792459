// The attention product softmax(q k^T * scale + mask) v, shared by every model.
// libtorch >= 2.0: scaled_dot_product_attention (flash / memory-efficient kernels).
// Older libtorch: float32 CPU inputs without a mask go to the blocked kernel of
// nn/attention_cpu.h; the rest to an exact manual product, sliced over batch*heads so
// that the score matrix never exceeds a memory bound.
#pragma once

#include <torch/torch.h>

namespace sdtune::nn {

struct AttentionKernelOptions {
  // Compute q k^T and the softmax in float32 even for half inputs (diffusers' upcast_attention).
  bool upcast = false;
  // Upper bound in bytes for one slice of the score matrix (manual path only).
  int64_t maxScoreBytes = int64_t{256} << 20;
  // Force the manual path even where SDPA exists (parity checks, debugging).
  bool forceManual = false;
};

// q: [B, H, Lq, D], k/v: [B, H, Lk, D]; mask: additive, broadcastable to [B, H, Lq, Lk], or undefined.
// Returns [B, H, Lq, D] in q's dtype.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                     double scale, const AttentionKernelOptions& options = {});

// Which implementation `attend` uses on this build ("sdpa" or "sliced").
const char* attentionBackend();

}  // namespace sdtune::nn
