// A few generic tensor ops, enough for tests, benchmarks and small utilities.
// Model math lives in nn/ and models/, not here.
#include <napi.h>

#include <random>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"

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

void initOps(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("matmul", Napi::Function::New(env, matmul));
  ns.Set("randn", Napi::Function::New(env, randn));
  ns.Set("maxAbsDiff", Napi::Function::New(env, maxAbsDiff));
  exports.Set("ops", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(ops, initOps);

}  // namespace sdtune
