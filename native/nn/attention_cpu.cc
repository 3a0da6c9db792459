#include "nn/attention_cpu.h"

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include "nn/parallel_mm.h"

// What the blocks save against the plain product (baddbmm, softmax, bmm and autograd's
// backward of each), at SD's 64x64 latents (Lq = Lk = 4096, 5 heads: 335 MB of scores):
// - every GEMM runs on the whole OpenMP team (libtorch 1.13 gives bmm's per-head BLAS
//   calls one thread: see nn/parallel_mm.h);
// - the forward writes the scores once (into the softmax kept for the backward) instead of
//   scores, then probabilities, each a full pass to memory and a fresh buffer;
// - the backward reads the kept softmax once and writes nothing of size Lq x Lk: the
//   gradient of the probabilities, softmax's backward and both products through it happen
//   per block in cache, where autograd makes three more Lq x Lk buffers and six passes.
namespace sdtune::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One block of scores is about this many bytes: enough rows that each BLAS call amortises
// packing k's [D, Lk] panel, few enough that the block stays in cache from its product
// through its softmax to its value product.
constexpr int64_t kBlockBytes = int64_t{1} << 21;

// One call's shapes and its cut into tasks: one task is a block of one head's query rows.
struct Plan {
  int64_t B, H, Lq, Lk, Dv;
  int64_t rows = 0;    // query rows per block
  int64_t blocks = 0;  // blocks per head
  int64_t tasks() const { return B * H * blocks; }
  int64_t head(int64_t t) const { return t / blocks; }  // b * H + h
  int64_t first(int64_t t) const { return (t % blocks) * rows; }
  int64_t count(int64_t t) const { return std::min(rows, Lq - first(t)); }
};

Plan makePlan(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  Plan p{q.size(0), q.size(1), q.size(2), k.size(2), v.size(3)};
  int64_t rows = std::max<int64_t>(16, kBlockBytes / (4 * std::max<int64_t>(p.Lk, 1)));
  // At least 8 tasks per thread, so that a few heads still spread evenly over the team.
  const int64_t heads = std::max<int64_t>(1, p.B * p.H);
  const int64_t wantBlocks = (8 * at::get_num_threads() + heads - 1) / heads;
  rows = std::min(rows, (p.Lq + wantBlocks - 1) / wantBlocks);
  p.rows = std::max<int64_t>(1, std::min(rows, p.Lq));
  p.blocks = (p.Lq + p.rows - 1) / p.rows;
  return p;
}

// Head bh of a [B, H, L, D] tensor: an [L, D] view.
torch::Tensor headOf(const torch::Tensor& t, const Plan& p, int64_t bh) {
  return t.select(0, bh / p.H).select(0, bh % p.H);
}

// A [B, H, L, D] tensor laid out as [B, L, H, D]: merging the heads back is then a view.
torch::Tensor newHeadsLast(const Plan& p, int64_t L, int64_t D, const torch::TensorOptions& options) {
  return at::empty({p.B, L, p.H, D}, options).permute({0, 2, 1, 3});
}

// Task t: softmax(scale * q_rows k^T) into `scores` ([count, Lk], contiguous), then
// scores @ v into the task's rows of `out`.
void forwardTask(const Plan& p, int64_t t, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                 double scale, const torch::Tensor& scores, const torch::Tensor& out) {
  const int64_t bh = p.head(t), r0 = p.first(t), n = p.count(t);
  torch::Tensor s = scores.narrow(0, 0, n);
  at::addmm_out(s, s, headOf(q, p, bh).narrow(0, r0, n), headOf(k, p, bh).t(), 0.0, scale);
  at::_softmax_out(s, s, 1, false);  // in place: a contiguous last-dim softmax reads each row before writing it
  torch::Tensor o = headOf(out, p, bh).narrow(0, r0, n);
  at::mm_out(o, s, headOf(v, p, bh));
}

// Every task over the team. `probs` ([B*H, Lq, Lk]) keeps the softmax for the backward;
// undefined (inference), each thread reuses one block of scratch instead.
torch::Tensor forwardAll(const Plan& p, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         double scale, const torch::Tensor& probs) {
  torch::Tensor out = newHeadsLast(p, p.Lq, p.Dv, q.options());
  parallelFor(0, p.tasks(), 1, [&](int64_t begin, int64_t end) {
    torch::Tensor scratch;
    if (!probs.defined()) scratch = at::empty({p.rows, p.Lk}, q.options());
    for (int64_t t = begin; t < end; ++t) {
      torch::Tensor scores = probs.defined() ? probs[p.head(t)].narrow(0, p.first(t), p.count(t)) : scratch;
      forwardTask(p, t, q, k, v, scale, scores, out);
    }
  });
  return out;
}

// What the backward reads: the inputs, the kept softmax, the output's gradient, and per
// query row sum_d dO * O, which equals softmax's backward row sum sum_j P * dP over Lk.
struct Saved {
  torch::Tensor q, k, v, probs, dout, rowDot;
};

// One thread's sums of dK and dV over the tasks it ran, tagged with its first task.
struct PartialSums {
  int64_t firstTask;
  torch::Tensor dk, dv;
};

// Task t's share of the backward, with P the block's softmax and dO its output gradient:
// dV += P^T dO; dS = P * (dO v^T - rowDot); dQ rows = scale * dS k; dK += scale * dS^T q_rows.
void backwardTask(const Plan& p, int64_t t, const Saved& s, double scale, const torch::Tensor& scratch,
                  const torch::Tensor& dq, PartialSums& sums) {
  const int64_t bh = p.head(t), r0 = p.first(t), n = p.count(t);
  torch::Tensor P = s.probs[bh].narrow(0, r0, n);
  torch::Tensor dO = headOf(s.dout, p, bh).narrow(0, r0, n);
  torch::Tensor dv = headOf(sums.dv, p, bh);
  at::addmm_out(dv, dv, P.t(), dO, 1.0, 1.0);
  torch::Tensor dS = scratch.narrow(0, 0, n);
  at::addmm_out(dS, dS, dO, headOf(s.v, p, bh).t(), 0.0, 1.0);
  dS.sub_(s.rowDot[bh].narrow(0, r0, n).unsqueeze(1)).mul_(P);
  torch::Tensor dqRows = headOf(dq, p, bh).narrow(0, r0, n);
  at::addmm_out(dqRows, dqRows, dS, headOf(s.k, p, bh), 0.0, scale);
  torch::Tensor dk = headOf(sums.dk, p, bh);
  at::addmm_out(dk, dk, dS.t(), headOf(s.q, p, bh).narrow(0, r0, n), 1.0, scale);
}

// dQ, dK, dV over the team; dK and dV are summed per thread, then across threads in task
// order (the same order every run: the results do not depend on thread timing).
variable_list backwardAll(const Plan& p, const Saved& s, double scale) {
  const auto options = s.q.options();
  torch::Tensor dq = newHeadsLast(p, p.Lq, s.q.size(3), options);
  std::vector<PartialSums> partial;
  std::mutex lock;
  parallelFor(0, p.tasks(), 1, [&](int64_t begin, int64_t end) {
    PartialSums sums{begin, newHeadsLast(p, p.Lk, s.k.size(3), options).zero_(),
                     newHeadsLast(p, p.Lk, p.Dv, options).zero_()};
    torch::Tensor scratch = at::empty({p.rows, p.Lk}, options);
    for (int64_t t = begin; t < end; ++t) backwardTask(p, t, s, scale, scratch, dq, sums);
    std::lock_guard<std::mutex> hold(lock);
    partial.push_back(std::move(sums));
  });
  std::sort(partial.begin(), partial.end(), [](const auto& a, const auto& b) { return a.firstTask < b.firstTask; });
  torch::Tensor dk = partial.at(0).dk, dv = partial.at(0).dv;
  for (size_t i = 1; i < partial.size(); ++i) {
    dk.add_(partial[i].dk);
    dv.add_(partial[i].dv);
  }
  return {dq, dk, dv};
}

struct BlockedAttentionFunction : public torch::autograd::Function<BlockedAttentionFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale) {
    const Plan p = makePlan(q, k, v);
    torch::Tensor probs = at::empty({p.B * p.H, p.Lq, p.Lk}, q.options());
    torch::Tensor out = forwardAll(p, q, k, v, scale, probs);
    ctx->save_for_backward({q, k, v, out});
    ctx->saved_data["probs"] = probs;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    Saved s{saved[0], saved[1], saved[2], ctx->saved_data["probs"].toTensor(), grads[0]};
    const Plan p = makePlan(s.q, s.k, s.v);
    s.rowDot = (s.dout * saved[3]).sum(-1).reshape({p.B * p.H, p.Lq});
    variable_list g = backwardAll(p, s, ctx->saved_data["scale"].toDouble());
    return {g[0], g[1], g[2], torch::Tensor()};
  }
};

}  // namespace

bool blockedAttentionApplies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& mask) {
  if (mask.defined() || !kernelSwitchOn("SDTUNE_BLOCKED_ATTENTION")) return false;
  for (const torch::Tensor* t : {&q, &k, &v}) {
    if (t->dim() != 4 || !t->device().is_cpu() || t->scalar_type() != torch::kFloat) return false;
  }
  // Tiny products (a text encoder's 77 tokens) are cheaper as the plain path's few calls.
  return q.size(2) * k.size(2) >= 16384;
}

torch::Tensor blockedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale) {
  const bool grad = torch::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (grad) return BlockedAttentionFunction::apply(q, k, v, scale);
  return forwardAll(makePlan(q, k, v), q, k, v, scale, torch::Tensor());
}

}  // namespace sdtune::nn
