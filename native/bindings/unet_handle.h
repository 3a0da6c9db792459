// The UNet handle: a JS object sharing one loaded UNet2DConditionModel. Later
// bindings (trainer, pipeline, LoRA) take a UNet from JS with UNetHandle::unwrap.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>

#include "models/unet.h"

namespace sdtune {

// One loaded model, shared by every handle and binding that uses it. Hold `mutex`
// for the whole of any use (forward, training step, adapter change): modules are
// not safe to use from two threads at once.
struct UNetHolder {
  models::UNet2DConditionModel module{nullptr};
  models::UNetOptions config;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  std::mutex mutex;
};

class UNetHandle : public Napi::ObjectWrap<UNetHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<UNetHolder> holder);
  // The model behind a JS UNet handle; throws a TypeError naming `what` if it is not a live one.
  static std::shared_ptr<UNetHolder> unwrap(const Napi::Value& value, const std::string& what);

  explicit UNetHandle(const Napi::CallbackInfo& info);

 private:
  std::shared_ptr<UNetHolder> live(Napi::Env env) const;
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value forwardWithIntermediates(const Napi::CallbackInfo& info);
  Napi::Value lossAndGradients(const Napi::CallbackInfo& info);
  void setGradientCheckpointing(const Napi::CallbackInfo& info);
  Napi::Value gradientCheckpointing(const Napi::CallbackInfo& info);
  Napi::Value parameterInfo(const Napi::CallbackInfo& info);
  Napi::Value stateDict(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  void dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<UNetHolder> holder_;
};

}  // namespace sdtune
