// A few generic tensor ops, enough for tests, benchmarks and small utilities.
// Model math lives in nn/ and models/, not here.
#include <napi.h>

#include <random>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "nn/kernel_parity.h"

namespace sdtune {

namespace {

Napi::Value wrapTensor(Napi::Env env, at::Tensor& t) {
  return TensorHandle::wrap(env, t);
}

// matmul(a, b) -> Promise<Tensor>
Napi::Value matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor a = TensorHandle::unwrap(info[0], "a");
  at::Tensor b = TensorHandle::unwrap(info[1], "b");
  return PromiseWorker<at::Tensor>::run(
      env, "sdtune:ops.matmul", [a, b]() { return at::matmul(a, b); }, wrapTensor);
}

// randn(shape, {seed, dtype}) -> Tensor, from a CPU generator seeded like torch.Generator().manual_seed(seed).
Napi::Value randn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto shape = toIntVector(info[0], "shape");
    auto options = info[1].IsUndefined() ? Napi::Object::New(env) : requireObject(info[1], "options");
    auto seed = getOptionalInt(options, "seed", "options");
    auto dtype = getOptionalString(options, "dtype", "options");
    uint64_t seedValue = seed ? static_cast<uint64_t>(*seed)
                              : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    auto generator = at::detail::createCPUGenerator(seedValue);
    at::Tensor t = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
    if (dtype) t = t.to(parseDtype(*dtype));
    return TensorHandle::wrap(env, t);
  });
}

// maxAbsDiff(a, b) -> number: for parity checks without copying into JS.
Napi::Value maxAbsDiff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor a = TensorHandle::unwrap(info[0], "a");
    at::Tensor b = TensorHandle::unwrap(info[1], "b");
    if (a.sizes() != b.sizes()) {
      throw std::invalid_argument("shapes differ: " + c10::str(a.sizes()) + " vs " + c10::str(b.sizes()));
    }
    if (a.numel() == 0) return Napi::Number::New(env, 0);
    double d = (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
    return Napi::Number::New(env, d);
  });
}

// kernelParity({kernel, shape, seed}) -> Promise<report>: one of sdtune's own CPU kernels against
// libtorch's plain ops (nn/kernel_parity.h). "attention": shape [b, h, lq, lk, d];
// "linear": shape [rows, in, out], bias (default true); "conv": shape [batch, in, out, side,
// kernel, stride] (padding kernel / 2).
Napi::Value kernelParity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Napi::Object options = requireObject(info[0], "options");
    std::string kernel = getString(options, "kernel", "options");
    auto shape = toIntVector(options.Get("shape"), "options.shape");
    auto seed = static_cast<uint64_t>(getInt(options, "seed", "options"));
    const bool bias = getBool(options, "bias", true, "options");
    const size_t want = kernel == "attention" ? 5 : kernel == "linear" ? 3 : kernel == "conv" ? 6 : 0;
    if (want == 0) {
      throw std::invalid_argument("options.kernel: expected \"attention\", \"linear\" or \"conv\", got \"" + kernel +
                                  "\"");
    }
    if (shape.size() != want) throw std::invalid_argument("options.shape: expected " + std::to_string(want) + " sizes");
    for (int64_t s : shape) {
      if (s < 1 || s > 16384) throw std::invalid_argument("options.shape: sizes must be 1..16384");
    }
    return PromiseWorker<nn::ParityReport>::run(
        env, "sdtune:ops.kernelParity",
        [kernel, shape, seed, bias]() {
          const auto& s = shape;
          if (kernel == "attention") return nn::attentionParity(s[0], s[1], s[2], s[3], s[4], seed);
          if (kernel == "conv") return nn::convParity(s[0], s[1], s[2], s[3], s[4], s[5], seed);
          return nn::linearParity(s[0], s[1], s[2], bias, seed);
        },
        [](Napi::Env env, nn::ParityReport& r) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("output", r.output);
          o.Set("inferenceOutput", r.inferenceOutput);
          Napi::Array grads = Napi::Array::New(env, r.grads.size());
          for (size_t i = 0; i < r.grads.size(); ++i) grads.Set(i, r.grads[i]);
          o.Set("grads", grads);
          o.Set("magnitude", r.magnitude);
          o.Set("used", r.used);
          o.Set("inputsChanged", r.inputsChanged);
          o.Set("oursMs", r.oursMs);
          o.Set("referenceMs", r.referenceMs);
          return o;
        });
  });
}

void initOps(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("matmul", Napi::Function::New(env, matmul));
  ns.Set("randn", Napi::Function::New(env, randn));
  ns.Set("maxAbsDiff", Napi::Function::New(env, maxAbsDiff));
  ns.Set("kernelParity", Napi::Function::New(env, kernelParity));
  exports.Set("ops", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(ops, initOps);

}  // namespace sdtune
