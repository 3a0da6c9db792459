#include "nn/kernel_parity.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "nn/attention_cpu.h"
#include "nn/frozen_conv.h"
#include "nn/frozen_linear.h"

namespace sdtune::nn {

namespace {

using Inputs = std::vector<torch::Tensor>;
using Kernel = std::function<torch::Tensor(const Inputs&)>;

double maxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Runs `f` on fresh leaf copies of `inputs` (those flagged trainable take gradients), then
// backward with `dout`; returns the output followed by each trainable input's gradient.
Inputs outputAndGrads(const Inputs& inputs, const std::vector<bool>& trainable, const torch::Tensor& dout,
                      const Kernel& f) {
  Inputs leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    leaves.push_back(inputs[i].defined() ? inputs[i].detach().clone().requires_grad_(trainable[i]) : inputs[i]);
  }
  torch::Tensor out = f(leaves);
  out.backward(dout);
  Inputs result{out.detach()};
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (trainable[i]) result.push_back(leaves[i].grad());
  }
  return result;
}

// Milliseconds of one forward + backward, after one untimed run.
double timeMs(const Inputs& inputs, const std::vector<bool>& trainable, const torch::Tensor& dout, const Kernel& f) {
  outputAndGrads(inputs, trainable, dout, f);
  auto start = std::chrono::steady_clock::now();
  outputAndGrads(inputs, trainable, dout, f);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Max |change| of the inputs after `ours` ran on them as given (no copies), with and without
// gradient mode: a kernel must never write into its weights or bias.
double inputsChangedBy(const Inputs& inputs, const std::vector<bool>& trainable, const torch::Tensor& dout,
                       const Kernel& ours) {
  Inputs before;
  for (const auto& t : inputs) before.push_back(t.defined() ? t.clone() : t);
  Inputs leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    leaves.push_back(inputs[i].defined() ? inputs[i].detach().requires_grad_(trainable[i]) : inputs[i]);
  }
  ours(leaves).backward(dout);
  {
    torch::NoGradGuard noGrad;
    ours(inputs);
  }
  double changed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].defined()) changed = std::max(changed, maxDiff(inputs[i], before[i]));
  }
  return changed;
}

ParityReport run(const Inputs& inputs, const std::vector<bool>& trainable, const torch::Tensor& dout,
                 const Kernel& ours, const Kernel& reference) {
  const double changed = inputsChangedBy(inputs, trainable, dout, ours);
  Inputs a = outputAndGrads(inputs, trainable, dout, ours);
  Inputs b = outputAndGrads(inputs, trainable, dout, reference);
  ParityReport r;
  r.inputsChanged = changed;
  r.output = maxDiff(a[0], b[0]);
  r.magnitude = b[0].abs().max().item<double>();
  for (size_t i = 1; i < b.size(); ++i) r.grads.push_back(maxDiff(a[i], b[i]));
  r.oursMs = timeMs(inputs, trainable, dout, ours);
  r.referenceMs = timeMs(inputs, trainable, dout, reference);
  torch::NoGradGuard noGrad;
  r.inferenceOutput = maxDiff(ours(inputs), reference(inputs));
  return r;
}

}  // namespace

ParityReport attentionParity(int64_t b, int64_t h, int64_t lq, int64_t lk, int64_t d, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto heads = [&](int64_t l) { return at::randn({b, l, h, d}, gen, torch::kFloat).permute({0, 2, 1, 3}); };
  Inputs qkv{heads(lq), heads(lk), heads(lk)};
  torch::Tensor dout = at::randn({b, h, lq, d}, gen, torch::kFloat);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto ours = [scale](const Inputs& x) { return blockedAttention(x[0], x[1], x[2], scale); };
  auto reference = [scale](const Inputs& x) {
    return torch::matmul(torch::softmax(torch::matmul(x[0], x[1].transpose(-1, -2)) * scale, -1), x[2]);
  };
  ParityReport r = run(qkv, {true, true, true}, dout, ours, reference);
  r.used = blockedAttentionApplies(qkv[0], qkv[1], qkv[2], torch::Tensor());
  return r;
}

ParityReport linearParity(int64_t rows, int64_t in, int64_t out, bool bias, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  Inputs inputs{at::randn({rows, in}, gen, torch::kFloat), at::randn({out, in}, gen, torch::kFloat),
                bias ? at::randn({out}, gen, torch::kFloat) : torch::Tensor()};
  torch::Tensor dout = at::randn({rows, out}, gen, torch::kFloat);
  auto ours = [](const Inputs& x) { return frozenLinear(x[0], x[1], x[2]); };
  auto reference = [](const Inputs& x) { return torch::nn::functional::linear(x[0], x[1], x[2]); };
  ParityReport r = run(inputs, {true, false, false}, dout, ours, reference);
  r.used = frozenLinearApplies(inputs[0], inputs[1], inputs[2]);
  return r;
}

ParityReport convParity(int64_t b, int64_t in, int64_t out, int64_t side, int64_t kernel, int64_t stride,
                        uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const ConvGeometry g{kernel, stride, kernel / 2};
  Inputs inputs{at::randn({b, in, side, side}, gen, torch::kFloat),
                at::randn({out, in, kernel, kernel}, gen, torch::kFloat), at::randn({out}, gen, torch::kFloat)};
  const int64_t outSide = (side + 2 * g.padding - kernel) / stride + 1;
  torch::Tensor dout = at::randn({b, out, outSide, outSide}, gen, torch::kFloat);
  auto ours = [g](const Inputs& x) { return frozenConv2d(x[0], x[1], x[2], g); };
  auto reference = [g](const Inputs& x) {
    namespace F = torch::nn::functional;
    return F::conv2d(x[0], x[1], F::Conv2dFuncOptions().bias(x[2]).stride(g.stride).padding(g.padding));
  };
  ParityReport r = run(inputs, {true, false, false}, dout, ours, reference);
  r.used = frozenConvApplies(inputs[0], inputs[1], inputs[2], g);
  return r;
}

}  // namespace sdtune::nn
