// The ClipModel handle: a JS object that owns one loaded CLIPModel (text and
// vision towers with projections), for CLIP score and similar evaluation.
// Other bindings take the model through unwrap(), lock `mutex` in their worker,
// and call holder->model->getTextFeatures / getImageFeatures.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>

#include "bindings/model_handle.h"
#include "models/clip.h"

namespace sdtune {

struct ClipModelHolder {
  std::mutex mutex;  // held by whoever runs the model
  models::CLIPModel model{nullptr};
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  double logitScale = 0;  // the stored logit_scale (logits use exp of it)
  torch::nn::Module& base() { return *model; }
};

// wrap / unwrap (throws naming `what` unless a live ClipModel) come from ModelHandle.
class ClipModelHandle : public ModelHandle<ClipModelHandle, ClipModelHolder> {
 public:
  static constexpr const char* kName = "ClipModel";
  static constexpr bool kDisposedIsTypeError = false;
  static void init(Napi::Env env, Napi::Object exports);

  explicit ClipModelHandle(const Napi::CallbackInfo& info) : ModelHandle(info) {}

 private:
  static Napi::Value load(const Napi::CallbackInfo& info);
  Napi::Value getTextFeatures(const Napi::CallbackInfo& info);
  Napi::Value getImageFeatures(const Napi::CallbackInfo& info);
  Napi::Value logitScale(const Napi::CallbackInfo& info);
};

}  // namespace sdtune
