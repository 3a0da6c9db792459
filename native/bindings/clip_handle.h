// The ClipModel handle: a JS object that owns one loaded CLIPModel (text and
// vision towers with projections), for CLIP score and similar evaluation.
// Other bindings take the model through unwrap(), lock `mutex` in their worker,
// and call holder->model->getTextFeatures / getImageFeatures.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>

#include "models/clip.h"

namespace sdtune {

struct ClipModelHolder {
  std::mutex mutex;  // held by whoever runs the model
  models::CLIPModel model{nullptr};
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  double logitScale = 0;  // the stored logit_scale (logits use exp of it)
};

class ClipModelHandle : public Napi::ObjectWrap<ClipModelHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<ClipModelHolder> holder);
  // The model behind a JS value; throws a TypeError naming `what` unless it is a live ClipModel.
  static std::shared_ptr<ClipModelHolder> unwrap(const Napi::Value& value, const std::string& what);

  explicit ClipModelHandle(const Napi::CallbackInfo& info);

 private:
  static Napi::Value load(const Napi::CallbackInfo& info);
  Napi::Value getTextFeatures(const Napi::CallbackInfo& info);
  Napi::Value getImageFeatures(const Napi::CallbackInfo& info);
  Napi::Value logitScale(const Napi::CallbackInfo& info);
  Napi::Value stateDict(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  void dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<ClipModelHolder> live(Napi::Env env) const;

  std::shared_ptr<ClipModelHolder> holder_;
};

}  // namespace sdtune
