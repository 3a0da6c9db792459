#include "nn/attention_kernel.h"

#include "nn/attention_cpu.h"

#include <torch/version.h>

#include <algorithm>
#include <cmath>

namespace sdtune::nn {

// scaled_dot_product_attention takes `scale` from libtorch 2.1.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define SDTUNE_HAVE_SDPA 1
#endif

const char* attentionBackend() {
#ifdef SDTUNE_HAVE_SDPA
  return "sdpa";
#else
  return "sliced";
#endif
}

namespace {

// The additive mask as a 3-D tensor broadcastable to [B*H, Lq, Lk] (baddbmm's input):
// a view when it is shared by every batch row and head (causal masks), else a copy.
torch::Tensor flatMask(torch::Tensor mask, int64_t B, int64_t H, int64_t Lq, int64_t Lk, torch::ScalarType dtype) {
  mask = mask.to(dtype);
  while (mask.dim() < 4) mask = mask.unsqueeze(0);
  if (mask.size(0) == 1 && mask.size(1) == 1) return mask[0];
  return mask.expand({B, H, Lq, Lk}).reshape({B * H, Lq, Lk});
}

// softmax(q k^T * scale + mask) v with the scale folded into the score product
// (baddbmm's alpha): no separate pass over the Lq x Lk scores, forward or backward
// (autograd scales the [L, D] gradients of q and k instead of the [Lq, Lk] one).
torch::Tensor manual(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                     double scale, bool upcast) {
  auto dtype = q.scalar_type();
  bool promote = upcast || dtype == torch::kHalf || dtype == torch::kBFloat16;
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2);
  torch::Tensor q3 = (promote ? q.to(torch::kFloat) : q).reshape({B * H, Lq, q.size(3)});
  torch::Tensor k3 = (promote ? k.to(torch::kFloat) : k).reshape({B * H, Lk, k.size(3)});
  torch::Tensor scores;  // [B*H, Lq, Lk]
  if (mask.defined()) {
    scores = at::baddbmm(flatMask(mask, B, H, Lq, Lk, q3.scalar_type()), q3, k3.transpose(1, 2), 1.0, scale);
  } else {
    // beta = 0: the (one-element, broadcast) input is ignored, so nothing is allocated for it.
    torch::Tensor none = at::zeros({1, 1, 1}, q3.options()).expand({B * H, Lq, Lk});
    scores = at::baddbmm(none, q3, k3.transpose(1, 2), 0.0, scale);
  }
  torch::Tensor probs = torch::softmax(scores, -1).to(v.scalar_type());
  return at::bmm(probs, v.reshape({B * H, Lk, v.size(3)})).view({B, H, Lq, v.size(3)});  // [b, h, Lq, D]
}

}  // namespace

torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                     double scale, const AttentionKernelOptions& options) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attend: q, k, v must be [B, H, L, D]");
#ifdef SDTUNE_HAVE_SDPA
  if (!options.forceManual && !(options.upcast && q.scalar_type() != torch::kFloat)) {
    c10::optional<torch::Tensor> m;
    if (mask.defined()) m = mask.to(q.scalar_type());
    return at::scaled_dot_product_attention(q, k, v, m, 0.0, false, scale);
  }
#endif
  if (!options.forceManual && blockedAttentionApplies(q, k, v, mask)) return blockedAttention(q, k, v, scale);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2);
  const int64_t bytesPerRow = Lq * Lk * 4;  // one (batch, head) score matrix in float32
  const int64_t rows = B * H;
  const int64_t perSlice = std::max<int64_t>(1, options.maxScoreBytes / std::max<int64_t>(bytesPerRow, 1));
  if (perSlice >= rows) return manual(q, k, v, mask, scale, options.upcast);
  // Slice over batch*heads: each slice's scores stay under maxScoreBytes.
  auto flat = [&](const torch::Tensor& t) { return t.reshape({rows, 1, t.size(2), t.size(3)}); };
  torch::Tensor qf = flat(q), kf = flat(k), vf = flat(v);
  torch::Tensor mf;
  if (mask.defined()) mf = mask.expand({B, H, Lq, Lk}).reshape({rows, 1, Lq, Lk});
  std::vector<torch::Tensor> outs;
  for (int64_t start = 0; start < rows; start += perSlice) {
    int64_t end = std::min(rows, start + perSlice);
    outs.push_back(manual(qf.slice(0, start, end), kf.slice(0, start, end), vf.slice(0, start, end),
                          mf.defined() ? mf.slice(0, start, end) : torch::Tensor(), scale, options.upcast));
  }
  return torch::cat(outs, 0).reshape({B, H, Lq, v.size(3)});
}

}  // namespace sdtune::nn
