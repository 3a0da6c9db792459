// Checks of sdtune's own CPU kernels against libtorch's plain ops on random inputs, for
// tests: the largest absolute differences of the output and of each input's gradient.
#pragma once

#include <cstdint>
#include <vector>

namespace sdtune::nn {

struct ParityReport {
  double output = 0;           // max |ours - reference| of the output (gradient mode)
  double inferenceOutput = 0;  // the same, computed without gradient mode
  std::vector<double> grads;   // per differentiable input
  double magnitude = 0;        // max |reference output|, for relative bounds
  bool used = false;           // whether our kernel took these inputs (else both sides are libtorch's)
  double inputsChanged = 0;    // max |change| of any input (weights, bias included) after ours ran
  double oursMs = 0;           // forward + backward, ours (one timed run after a warm-up)
  double referenceMs = 0;      // the same, libtorch's ops
};

// blockedAttention (nn/attention_cpu.h) against matmul, softmax, matmul: q [b, h, lq, d],
// k and v [b, h, lk, d] (laid out [b, l, h, d] as the models make them), scale 1 / sqrt(d).
ParityReport attentionParity(int64_t b, int64_t h, int64_t lq, int64_t lk, int64_t d, uint64_t seed);

// frozenLinear (nn/frozen_linear.h) against F::linear: x [rows, in], weight [out, in], bias [out]
// or none.
ParityReport linearParity(int64_t rows, int64_t in, int64_t out, bool bias, uint64_t seed);

// frozenConv2d (nn/frozen_conv.h) against F::conv2d: x [b, in, side, side], weight
// [out, in, kernel, kernel], bias [out], padding kernel / 2.
ParityReport convParity(int64_t b, int64_t in, int64_t out, int64_t side, int64_t kernel, int64_t stride,
                        uint64_t seed);

}  // namespace sdtune::nn
