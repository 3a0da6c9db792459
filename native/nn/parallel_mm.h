// Matrix products split over libtorch's OpenMP team, one BLAS call per thread.
//
// Why: libtorch 1.13 sends float mm/addmm/bmm to the BLAS one call at a time, and the
// BLAS's own pool is held to one thread (runtime.cc: its idle workers spin in sched_yield
// beside OpenMP's), so every GEMM of a step ran on one core of the team. Splitting the
// product into one slice per OpenMP thread gives the GEMMs the whole team without a
// second thread pool.
#pragma once

#include <torch/torch.h>

namespace sdtune::nn {

// out = beta * out + alpha * (a @ b) for 2-D float tensors, out [M, N], a [M, K], b [K, N]
// (any strides BLAS takes: transposed views are fine). The larger of M and N is split, so a
// weight-bound product (few rows, many output features) gives each thread half the weight.
// Small products, other dtypes and non-CPU tensors go to one at::addmm_out.
void parallelAddmmInto(torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double beta = 0.0,
                       double alpha = 1.0);

// a @ b (2-D) as above, into a new contiguous tensor.
torch::Tensor parallelMm(const torch::Tensor& a, const torch::Tensor& b);

// Whether SDTUNE_PARALLEL_GEMM leaves the split layers on (frozen linear and convolution
// layers; anything but "0").
bool parallelGemmEnabled();

// Whether the products above would split on this thread (float32 CPU, a team of more than one
// thread, not already inside a parallel region).
bool parallelGemmAvailable(const torch::Tensor& a);

}  // namespace sdtune::nn
