// Exact attention for float32 CPU tensors on libtorch without a fused kernel (< 2.1): the
// score matrix is taken in blocks of query rows spread over the OpenMP team, each block's
// product, softmax and value product done while it is in cache, with its own backward.
// See attention_cpu.cc for the passes it saves.
#pragma once

#include <torch/torch.h>

namespace sdtune::nn {

// Whether blockedAttention takes these inputs: float32 CPU [B, H, L, D] q, k, v with no mask,
// and the kernel not turned off with SDTUNE_BLOCKED_ATTENTION=0.
bool blockedAttentionApplies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& mask);

// softmax(q k^T * scale) v, q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] -> [B, H, Lq, Dv],
// differentiable in q, k and v. The result is a view of a [B, Lq, H, Dv] tensor (heads merge
// back into [B, Lq, H * Dv] without a copy).
torch::Tensor blockedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale);

}  // namespace sdtune::nn
