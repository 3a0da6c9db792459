// ClipModel from JS: load a transformers CLIPModel checkpoint, text and image
// features (Promise), the logit scale, dispose. See clip_handle.h for C++ callers.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/clip_handle.h"
#include "bindings/clip_options.h"
#include "bindings/common.h"
#include "bindings/model_common.h"
#include "bindings/tensor_handle.h"

namespace sdtune {

void ClipModelHandle::init(Napi::Env env, Napi::Object exports) {
  define(env, exports,
         {
             StaticMethod<&ClipModelHandle::load>("load"),
             InstanceMethod<&ClipModelHandle::getTextFeatures>("getTextFeatures"),
             InstanceMethod<&ClipModelHandle::getImageFeatures>("getImageFeatures"),
             InstanceAccessor<&ClipModelHandle::logitScale>("logitScale"),
         });
}

// load({config, files, dtype?, device?}) -> Promise<ClipModel>
Napi::Value ClipModelHandle::load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Napi::Object options = requireObject(info[0], "options");
    models::CLIPModelOptions config = readClipModelOptions(options.Get("config"), "options.config");
    ClipLoadRequest request = readClipLoadRequest(options, "clip");
    return PromiseWorker<std::shared_ptr<ClipModelHolder>>::run(
        env, "sdtune:ClipModel.load",
        [config, request]() {
          auto holder = std::make_shared<ClipModelHolder>();
          holder->model = models::loadCLIPModel(config, request.files, request.load);
          holder->dtype = request.load.dtype;
          holder->device = request.load.device;
          holder->logitScale = holder->model->logit_scale.to(at::kCPU, at::kDouble).item<double>();
          return holder;
        },
        [](Napi::Env env, std::shared_ptr<ClipModelHolder>& holder) { return wrap(env, holder); });
  });
}

// getTextFeatures(inputIds [n, L], attentionMask? [n, L]) -> Promise<Tensor [n, projection_dim]>
Napi::Value ClipModelHandle::getTextFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor ids = TensorHandle::unwrap(info[0], "inputIds");
    at::Tensor mask;
    if (!info[1].IsUndefined() && !info[1].IsNull()) mask = TensorHandle::unwrap(info[1], "attentionMask");
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:ClipModel.getTextFeatures",
        [holder, ids, mask]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          return holder->model->getTextFeatures(ids, mask);
        },
        [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
  });
}

// getImageFeatures(pixelValues [n, 3, S, S]) -> Promise<Tensor [n, projection_dim]>
Napi::Value ClipModelHandle::getImageFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor pixels = TensorHandle::unwrap(info[0], "pixelValues");
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:ClipModel.getImageFeatures",
        [holder, pixels]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          return holder->model->getImageFeatures(pixels);
        },
        [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
  });
}

Napi::Value ClipModelHandle::logitScale(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), live(info.Env())->logitScale);
}

SDTUNE_REGISTER_BINDING(clip_model, ClipModelHandle::init);

}  // namespace sdtune
