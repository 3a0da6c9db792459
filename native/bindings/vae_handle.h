// The VAE handle: a JS object sharing one loaded AutoencoderKL. Later bindings
// (pipeline, trainer) take a VAE from JS with VAEHandle::unwrap.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>

#include "bindings/model_handle.h"
#include "models/vae.h"

namespace sdtune {

// One loaded model, shared by every handle and binding that uses it; hold `mutex` while using it.
struct VAEHolder {
  models::AutoencoderKL module{nullptr};
  models::VAEOptions config;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  std::mutex mutex;
  torch::nn::Module& base() { return *module; }
};

// wrap / unwrap (a TypeError naming `what` unless a live VAE) come from ModelHandle.
class VAEHandle : public ModelHandle<VAEHandle, VAEHolder> {
 public:
  static constexpr const char* kName = "VAE";
  static constexpr bool kDisposedIsTypeError = true;
  static void init(Napi::Env env, Napi::Object exports);

  explicit VAEHandle(const Napi::CallbackInfo& info) : ModelHandle(info) {}

 private:
  Napi::Value encode(const Napi::CallbackInfo& info);
  Napi::Value sample(const Napi::CallbackInfo& info);
  Napi::Value decode(const Napi::CallbackInfo& info);
  Napi::Value scalingFactor(const Napi::CallbackInfo& info);
  Napi::Value scaleFactor(const Napi::CallbackInfo& info);
};

}  // namespace sdtune
