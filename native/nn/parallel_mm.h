// Matrix products split over libtorch's OpenMP team, one BLAS call per thread.
//
// Why: libtorch 1.13 sends float mm/addmm/bmm to the BLAS one call at a time, and the
// BLAS's own pool is held to one thread (runtime.cc: its idle workers spin in sched_yield
// beside OpenMP's), so every GEMM of a step ran on one core of the team. Splitting the
// product into one slice per OpenMP thread gives the GEMMs the whole team without a
// second thread pool.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/torch.h>

namespace sdtune::nn {

// at::parallel_for whose workers run with the calling thread's autograd and dispatch state:
// grad mode and inference mode are per thread, and an OpenMP worker's own grad mode is on
// (out= ops there would refuse inputs that require grad).
template <typename F>
void parallelFor(int64_t begin, int64_t end, int64_t grain, const F& f) {
  const at::ThreadLocalState state;
  at::parallel_for(begin, end, grain, [&](int64_t from, int64_t to) {
    at::ThreadLocalStateGuard guard(state);
    f(from, to);
  });
}

// How many threads parallelFor runs on from this thread (1 where the addon was built without
// OpenMP: at::parallel_for is a header template over `#pragma omp parallel`).
int64_t parallelForThreads();

// Whether the CPU kernel switch `variable` (SDTUNE_PARALLEL_GEMM, SDTUNE_BLOCKED_ATTENTION)
// leaves its kernel on: anything but "0". Read once per variable.
bool kernelSwitchOn(const char* variable);

// out = beta * out + alpha * (a @ b) for 2-D float tensors, out [M, N], a [M, K], b [K, N]
// (any strides BLAS takes: transposed views are fine). The larger of M and N is split, so a
// weight-bound product (few rows, many output features) gives each thread half the weight.
// Small products, other dtypes and non-CPU tensors go to one at::addmm_out.
void parallelAddmmInto(torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta = 0.0,
                       double alpha = 1.0);

// a @ b (2-D) as above, into a new contiguous tensor.
torch::Tensor parallelMm(const torch::Tensor& a, const torch::Tensor& b);

// Whether the products above would split on this thread (float32 CPU, a team of more than one
// thread, not already inside a parallel region).
bool parallelGemmAvailable(const torch::Tensor& a);

// Whether a frozen layer's product may take the split (frozen_linear, frozen_conv): x, weight
// and bias float32 on CPU, neither weight nor bias taking a gradient, and SDTUNE_PARALLEL_GEMM
// not "0".
bool frozenProductApplies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// a @ b + add (add broadcast to [M, N], or undefined) as above, into a new buffer: always a fresh
// one (`.contiguous()` of a one-row broadcast would hand back `add` itself, to be overwritten).
torch::Tensor parallelMmPlus(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& add);

}  // namespace sdtune::nn
