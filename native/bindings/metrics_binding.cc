// Evaluation math from JS (src/eval/clip_score.ts): cosine similarities of embeddings.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "eval/similarity.h"

namespace sdtune {

namespace {

Napi::Value wrapTensor(Napi::Env env, at::Tensor& t) {
  return TensorHandle::wrap(env, t);
}

// rowCosine(a [n, d], b [n, d], scale?) -> Promise<Tensor [n]>
Napi::Value rowCosine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor a = TensorHandle::unwrap(info[0], "a");
    at::Tensor b = TensorHandle::unwrap(info[1], "b");
    double scale = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 1.0;
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:metrics.rowCosine",
        [a, b, scale]() {
          torch::NoGradGuard noGrad;
          return eval::rowCosine(a, b, scale).to(at::kCPU).contiguous();
        },
        wrapTensor);
  });
}

// cosineMatrix(a [n, d], b [m, d]) -> Promise<Tensor [n, m]>
Napi::Value cosineMatrix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor a = TensorHandle::unwrap(info[0], "a");
    at::Tensor b = TensorHandle::unwrap(info[1], "b");
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:metrics.cosineMatrix",
        [a, b]() {
          torch::NoGradGuard noGrad;
          return eval::cosineMatrix(a, b).to(at::kCPU).contiguous();
        },
        wrapTensor);
  });
}

void initMetrics(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("rowCosine", Napi::Function::New(env, rowCosine));
  ns.Set("cosineMatrix", Napi::Function::New(env, cosineMatrix));
  exports.Set("metrics", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(metrics, initMetrics);

}  // namespace sdtune
