// The UNet handle: a JS object sharing one loaded UNet2DConditionModel. Later
// bindings (trainer, pipeline, LoRA) take a UNet from JS with UNetHandle::unwrap.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>

#include "bindings/model_handle.h"
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
  torch::nn::Module& base() { return *module; }
};

// wrap / unwrap (a TypeError naming `what` unless a live UNet) come from ModelHandle.
class UNetHandle : public ModelHandle<UNetHandle, UNetHolder> {
 public:
  static constexpr const char* kName = "UNet";
  static constexpr bool kDisposedIsTypeError = true;
  static void init(Napi::Env env, Napi::Object exports);

  explicit UNetHandle(const Napi::CallbackInfo& info) : ModelHandle(info) {}

 private:
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value forwardWithIntermediates(const Napi::CallbackInfo& info);
  Napi::Value lossAndGradients(const Napi::CallbackInfo& info);
  void setGradientCheckpointing(const Napi::CallbackInfo& info);
  Napi::Value gradientCheckpointing(const Napi::CallbackInfo& info);
  Napi::Value parameterInfo(const Napi::CallbackInfo& info);
};

}  // namespace sdtune
