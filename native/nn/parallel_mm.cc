#include "nn/parallel_mm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace sdtune::nn {

namespace {

// Below this many multiply-adds one call is as fast: the split costs a team wake-up.
constexpr int64_t kMinSplitMacs = int64_t{1} << 21;

// Slice t of n over `size`, in multiples of 16 so every slice but the last keeps whole
// SIMD panels.
std::pair<int64_t, int64_t> slice(int64_t size, int64_t t, int64_t n) {
  int64_t per = (size + n - 1) / n;
  per = (per + 15) / 16 * 16;
  int64_t start = std::min(size, t * per);
  return {start, std::min(size, start + per) - start};
}

}  // namespace

int64_t parallelForThreads() {
  std::mutex lock;
  std::set<int> seen;
  at::parallel_for(0, std::max(at::get_num_threads(), 1), 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> hold(lock);
    seen.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(seen.size());
}

bool kernelSwitchOn(const char* variable) {
  static std::mutex lock;
  static std::map<std::string, bool> read;
  std::lock_guard<std::mutex> hold(lock);
  auto it = read.find(variable);
  if (it == read.end()) {
    const char* value = std::getenv(variable);
    it = read.emplace(variable, !(value && std::strcmp(value, "0") == 0)).first;
  }
  return it->second;
}

bool frozenProductApplies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!kernelSwitchOn("SDTUNE_PARALLEL_GEMM") || !parallelGemmAvailable(x) || weight.requires_grad()) return false;
  if (weight.scalar_type() != torch::kFloat || !weight.device().is_cpu()) return false;
  return !bias.defined() || (!bias.requires_grad() && bias.scalar_type() == torch::kFloat && bias.device().is_cpu());
}

bool parallelGemmAvailable(const torch::Tensor& a) {
  return a.device().is_cpu() && a.scalar_type() == torch::kFloat && at::get_num_threads() > 1 &&
         !at::in_parallel_region();
}

void parallelAddmmInto(torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta, double alpha) {
  TORCH_CHECK(out.dim() == 2 && a.dim() == 2 && b.dim() == 2, "parallelAddmmInto: 2-D tensors only");
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const int64_t threads = at::get_num_threads();
  if (!parallelGemmAvailable(a) || M * N * K < kMinSplitMacs || std::max(M, N) < 32 * threads) {
    at::addmm_out(out, out, a, b, beta, alpha);
    return;
  }
  const bool byRows = M >= N;
  parallelFor(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      auto [start, length] = slice(byRows ? M : N, t, threads);
      if (length <= 0) continue;
      torch::Tensor o = byRows ? out.narrow(0, start, length) : out.narrow(1, start, length);
      const torch::Tensor& x = byRows ? a.narrow(0, start, length) : a;
      const torch::Tensor& y = byRows ? b : b.narrow(1, start, length);
      at::addmm_out(o, o, x, y, beta, alpha);
    }
  });
}

torch::Tensor parallelMmPlus(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& add) {
  torch::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  if (add.defined()) out.copy_(add.expand_as(out));
  parallelAddmmInto(out, a, b, add.defined() ? 1.0 : 0.0, 1.0);
  return out;
}

torch::Tensor parallelMm(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  parallelAddmmInto(out, a, b, 0.0, 1.0);
  return out;
}

}  // namespace sdtune::nn
